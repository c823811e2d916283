//! What can go wrong before a graph runs (a problem in the schema, the inputs or the
//! targets), each naming the file, the line and the node.

use std::fmt;

/// One problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// The schema file (or the name of a schema built in code).
    pub file: String,
    /// The 1-based line of the node, when the schema was read from a file.
    pub line: Option<usize>,
    /// The node; empty for a problem of the whole graph or run.
    pub node: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = if self.node.is_empty() {
            String::new()
        } else {
            format!("node {:?}", self.node)
        };
        spec_file::write_located(f, &self.file, (self.line, None), &node, &self.message)
    }
}

/// Every problem found, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphErrors(pub Vec<GraphError>);

impl fmt::Display for GraphErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        spec_file::write_lines(f, &self.0)
    }
}

impl std::error::Error for GraphErrors {}

/// A component's failure, as components report it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
