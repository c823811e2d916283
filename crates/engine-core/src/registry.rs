//! The registry that turns specs (data) into agents and shared resources (code), so
//! any engine in any process can build the same agent without code crossing a boundary.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::core_error::CoreError;
use crate::{Agent, AgentSpec, BoxError, DependencySpec, DynAgent, Error, Result};

type AgentFactory = Box<dyn Fn(&AgentSpec) -> Result<Box<dyn DynAgent>, BoxError> + Send + Sync>;
type SharedResource = Arc<dyn Any + Send + Sync>;
type ResourceFactory =
    Box<dyn Fn(&serde_json::Value) -> Result<SharedResource, BoxError> + Send + Sync>;

/// Agent types and resource kinds by name.
#[derive(Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, AgentFactory>,
    resources: BTreeMap<String, ResourceFactory>,
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .field("resources", &self.resources.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AgentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` as the builder of agent type `type_name`, replacing any
    /// earlier registration of that name.
    pub fn register<A, F>(&mut self, type_name: impl Into<String>, factory: F) -> &mut Self
    where
        A: Agent,
        F: Fn(&AgentSpec) -> Result<A, BoxError> + Send + Sync + 'static,
    {
        self.agents.insert(
            type_name.into(),
            Box::new(move |spec| Ok(Box::new(factory(spec)?) as Box<dyn DynAgent>)),
        );
        self
    }

    /// Registers `factory` as the builder of resource kind `kind`.
    pub fn register_resource<T, F>(&mut self, kind: impl Into<String>, factory: F) -> &mut Self
    where
        T: Any + Send + Sync,
        F: Fn(&serde_json::Value) -> Result<T, BoxError> + Send + Sync + 'static,
    {
        self.resources.insert(
            kind.into(),
            Box::new(move |properties| Ok(Arc::new(factory(properties)?) as SharedResource)),
        );
        self
    }

    /// Builds the agent described by `spec`.
    pub fn build(&self, spec: &AgentSpec) -> Result<Box<dyn DynAgent>> {
        let factory = self.agents.get(&spec.agent_type).ok_or_else(|| {
            Error::from(CoreError::UnknownType {
                agent: spec.id.clone(),
                agent_type: spec.agent_type.clone(),
                registered: self.agent_types().join(", "),
            })
        })?;
        factory(spec).map_err(|source| {
            CoreError::BadAgent {
                agent: spec.id.clone(),
                agent_type: spec.agent_type.clone(),
                source,
            }
            .into()
        })
    }

    /// Builds every resource of a guild.
    pub fn build_resources(
        &self,
        dependencies: &BTreeMap<String, DependencySpec>,
    ) -> Result<Resources> {
        let mut built = HashMap::new();
        for (name, dependency) in dependencies {
            let factory = self.resources.get(&dependency.kind).ok_or_else(|| {
                Error::from(CoreError::UnknownResourceKind {
                    name: name.clone(),
                    kind: dependency.kind.clone(),
                })
            })?;
            let resource = factory(&dependency.properties).map_err(|source| {
                Error::from(CoreError::ResourceFailed {
                    name: name.clone(),
                    kind: dependency.kind.clone(),
                    source,
                })
            })?;
            built.insert(name.clone(), resource);
        }
        Ok(Resources { by_name: built })
    }

    /// Whether an agent type is registered under `name`.
    pub fn has_agent_type(&self, name: &str) -> bool {
        self.agents.contains_key(name)
    }

    /// The registered agent type names, sorted.
    pub fn agent_types(&self) -> Vec<&str> {
        self.agents.keys().map(String::as_str).collect()
    }

    /// Whether a resource kind is registered under `kind`.
    pub fn has_resource_kind(&self, kind: &str) -> bool {
        self.resources.contains_key(kind)
    }
}

/// A guild's built shared resources, by name.
#[derive(Default)]
pub struct Resources {
    by_name: HashMap<String, SharedResource>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_name.keys()).finish()
    }
}

impl Resources {
    /// The resource `name`, as a `T`.
    pub fn get<T: Any + Send + Sync>(&self, name: &str) -> Result<Arc<T>> {
        let resource = self.by_name.get(name).ok_or_else(|| {
            Error::from(CoreError::NoResource {
                name: name.to_owned(),
            })
        })?;
        resource.clone().downcast::<T>().map_err(|_| {
            Error::from(CoreError::ResourceType {
                name: name.to_owned(),
                wanted: std::any::type_name::<T>(),
            })
        })
    }
}
