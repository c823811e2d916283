//! Components: the Rust types a graph's nodes run, registered by name with the inputs
//! they read, and built from a node's config.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::BoxError;

/// What a component computes from its inputs.
pub trait Component: Send + Sync + 'static {
    /// Computes the node's output from its inputs (by the names the component was
    /// registered with). It may read and write files in [`NodeContext::artifacts`].
    fn run(
        &self,
        inputs: Inputs,
        ctx: &NodeContext,
    ) -> impl Future<Output = Result<Value, BoxError>> + Send;
}

/// A node's inputs, by name: the outputs of the nodes its `needs` name.
#[derive(Debug, Clone, Default)]
pub struct Inputs(pub(crate) BTreeMap<String, Arc<Value>>);

impl Inputs {
    /// Input `name` as it came.
    pub fn value(&self, name: &str) -> Result<&Value, BoxError> {
        self.0
            .get(name)
            .map(|value| &**value)
            .ok_or_else(|| format!("no input {name:?}").into())
    }

    /// Input `name`, decoded as a `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T, BoxError> {
        T::deserialize(self.value(name)?)
            .map_err(|e| format!("input {name:?} is not what the component reads: {e}").into())
    }

    /// Every input, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(name, value)| (name.as_str(), &**value))
    }

    /// How many inputs there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a node knows of where it runs.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The node's name.
    pub node: String,
    /// The component type it runs.
    pub component: String,
    /// The run's model id ([`ExecutionContext`](crate::ExecutionContext)).
    pub model_id: String,
    pub(crate) artifacts: Option<PathBuf>,
}

impl NodeContext {
    /// The node's own directory in the model storage, made on first use; an error when
    /// the runner has no storage.
    pub fn artifacts(&self) -> Result<PathBuf, BoxError> {
        let dir = self.artifacts.clone().ok_or_else(|| -> BoxError {
            format!("node {:?}: the runner has no model storage", self.node).into()
        })?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        Ok(dir)
    }
}

/// The inputs a component type reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    /// Exactly these, each from one upstream node.
    Exactly(Vec<String>),
    /// Whatever its node's `needs` name (a component that merges its inputs).
    Any,
}

/// A future a component returns, boxed.
pub(crate) type BoxFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, BoxError>> + Send + 'a>>;

/// A component with its future boxed, so components of any type sit in one graph.
pub(crate) trait DynComponent: Send + Sync {
    fn run_boxed<'a>(&'a self, inputs: Inputs, ctx: &'a NodeContext) -> BoxFuture<'a>;
}

impl<C: Component> DynComponent for C {
    fn run_boxed<'a>(&'a self, inputs: Inputs, ctx: &'a NodeContext) -> BoxFuture<'a> {
        Box::pin(self.run(inputs, ctx))
    }
}

type Factory = Arc<dyn Fn(&Value) -> Result<Arc<dyn DynComponent>, BoxError> + Send + Sync>;

/// A registered component type.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) inputs: Declared,
    pub(crate) build: Factory,
}

/// Component types by name.
#[derive(Clone, Default)]
pub struct ComponentRegistry {
    types: HashMap<String, Registered>,
}

impl std::fmt::Debug for ComponentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentRegistry")
            .field("types", &self.names())
            .finish()
    }
}

impl ComponentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers component type `name`, reading `inputs`, built from a node's config by
    /// `build`.
    pub fn register<C: Component>(
        &mut self,
        name: &str,
        inputs: Declared,
        build: impl Fn(&Value) -> Result<C, BoxError> + Send + Sync + 'static,
    ) -> &mut Self {
        let build: Factory =
            Arc::new(move |config| Ok(Arc::new(build(config)?) as Arc<dyn DynComponent>));
        self.types
            .insert(name.to_owned(), Registered { inputs, build });
        self
    }

    /// The registered type names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.types.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Registered> {
        self.types.get(name)
    }
}

/// The inputs `names` read, for [`ComponentRegistry::register`].
pub fn exactly(names: &[&str]) -> Declared {
    Declared::Exactly(names.iter().map(|name| (*name).to_owned()).collect())
}
