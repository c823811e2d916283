//! A graph schema: named nodes, each an input or a component with its config and the
//! upstream node each of its inputs comes from; read from TOML or JSON, or built in
//! code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{GraphError, GraphErrors};

/// A graph: its nodes, in the order they were written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSchema {
    /// What the graph is called.
    #[serde(default)]
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Its nodes.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
}

/// One node: an input the caller gives, or a component run on its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique in the graph.
    pub name: String,
    /// The registered component type that computes it; none for an input node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The component's settings.
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub config: serde_json::Value,
    /// Each of the component's inputs, by name, and the node it comes from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub needs: BTreeMap<String, String>,
    /// An input node: its value is given to `run`, by the node's name.
    #[serde(default, skip_serializing_if = "is_false")]
    pub input: bool,
    /// A default target: computed when `run` names no targets.
    #[serde(default, skip_serializing_if = "is_false")]
    pub target: bool,
    /// Whether a rerun may reuse its stored output when its fingerprint is unchanged
    /// (turn off for a component whose output is not a function of its inputs and
    /// config).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub cache: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn is_empty_object(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(serde_json::Map::is_empty)
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl NodeSpec {
    /// An input node called `name`.
    pub fn input(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            component: None,
            config: empty_object(),
            needs: BTreeMap::new(),
            input: true,
            target: false,
            cache: true,
        }
    }

    /// A node called `name` computed by a `component`.
    pub fn component(name: impl Into<String>, component: impl Into<String>) -> Self {
        Self {
            component: Some(component.into()),
            input: false,
            ..Self::input(name)
        }
    }

    /// Takes input `input` from node `from`.
    #[must_use]
    pub fn needs(mut self, input: impl Into<String>, from: impl Into<String>) -> Self {
        self.needs.insert(input.into(), from.into());
        self
    }

    /// Sets the component's config.
    #[must_use]
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }

    /// Makes it a default target.
    #[must_use]
    pub fn target(mut self) -> Self {
        self.target = true;
        self
    }
}

impl GraphSchema {
    /// A graph of `nodes`.
    pub fn new(nodes: Vec<NodeSpec>) -> Self {
        Self {
            nodes,
            ..Self::default()
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The default targets, in schema order.
    pub fn default_targets(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|node| node.target)
            .map(|node| node.name.clone())
            .collect()
    }
}

/// A schema with the text it was read from, so checks can point at lines.
#[derive(Debug, Clone)]
pub struct LoadedSchema {
    /// Where it came from (or the name given to a schema built in code).
    pub file: PathBuf,
    /// The text; empty for a schema built in code.
    pub source: String,
    /// The schema.
    pub schema: GraphSchema,
}

impl LoadedSchema {
    /// Reads the schema file at `path` (`.toml` or `.json`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, GraphErrors> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let problem = |problem: spec_file::Problem| {
            let (line, _) = problem.position.unzip();
            GraphErrors(vec![GraphError {
                file: file.clone(),
                line,
                node: String::new(),
                message: if problem.field.is_empty() {
                    problem.message
                } else {
                    format!("{}: {}", problem.field, problem.message)
                },
            }])
        };
        let (source, format) = spec_file::read(path).map_err(problem)?;
        let schema = spec_file::parse(&source, format).map_err(problem)?;
        Ok(Self {
            file: path.to_owned(),
            source,
            schema,
        })
    }

    /// A schema built in code, called `name` in errors.
    pub fn built(name: impl Into<PathBuf>, schema: GraphSchema) -> Self {
        Self {
            file: name.into(),
            source: String::new(),
            schema,
        }
    }

    /// The line on which node `name` is declared, if the schema was read from a file.
    /// (The `nth` declaration, 0-based, for a name given twice.)
    pub(crate) fn line_of(&self, name: &str, nth: usize) -> Option<usize> {
        spec_file::locate(&self.source, "name", name, nth).map(|(line, _)| line)
    }

    /// An error about node `node`, at its line.
    pub(crate) fn error(&self, node: &str, message: String) -> GraphError {
        self.error_at(node, 0, message)
    }

    /// An error about the `nth` declaration of node `node`, at its line.
    pub(crate) fn error_at(&self, node: &str, nth: usize, message: String) -> GraphError {
        GraphError {
            file: self.file.display().to_string(),
            line: self.line_of(node, nth),
            node: node.to_owned(),
            message,
        }
    }
}
