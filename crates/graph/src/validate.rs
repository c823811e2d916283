//! Checks a schema before anything runs, reporting every problem with its file, line
//! and node: names, component types, `needs`, declared inputs, and cycles.

use std::collections::{BTreeSet, HashMap};

use crate::component::{ComponentRegistry, Declared};
use crate::error::{GraphError, GraphErrors};
use crate::schema::LoadedSchema;

/// Every problem of `loaded` against the component types of `registry`.
pub fn check(loaded: &LoadedSchema, registry: &ComponentRegistry) -> Result<(), GraphErrors> {
    let schema = &loaded.schema;
    let mut errors = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for node in &schema.nodes {
        let nth = spec_file::bump(&mut seen, &node.name);
        if node.name.trim().is_empty() || node.name.contains(char::is_control) {
            errors.push(loaded.error_at(
                &node.name,
                nth,
                "a node needs a name without control characters".into(),
            ));
        }
        if nth == 1 {
            errors.push(loaded.error_at(
                &node.name,
                nth,
                "a second node of this name: names are unique in a graph".into(),
            ));
        }
    }
    for node in &schema.nodes {
        let error = |message: String| loaded.error(&node.name, message);
        if node.input {
            if node.component.is_some() || !node.needs.is_empty() {
                errors.push(error(
                    "an input node takes its value from the run: it has no component and no \
                     needs"
                        .into(),
                ));
            }
        } else {
            match node.component.as_deref() {
                None => errors.push(error(
                    "no component: give one, or mark the node `input = true`".into(),
                )),
                Some(component) => match registry.get(component) {
                    None => errors.push(error(format!(
                        "unknown component type {component:?}; known: {}",
                        registry.names().join(", ")
                    ))),
                    Some(registered) => {
                        if let Declared::Exactly(declared) = &registered.inputs {
                            errors.extend(mismatch(declared, node).map(error));
                        }
                    }
                },
            }
        }
        for (input, from) in &node.needs {
            if schema.node(from).is_none() {
                errors.push(error(format!(
                    "input {input:?} needs node {from:?}, which is not in the graph"
                )));
            }
        }
    }
    errors.extend(cycles(loaded));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(GraphErrors(errors))
    }
}

/// How a node's `needs` differ from the inputs its component declares.
fn mismatch(declared: &[String], node: &crate::NodeSpec) -> Option<String> {
    let declared: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
    let given: BTreeSet<&str> = node.needs.keys().map(String::as_str).collect();
    let missing: Vec<&str> = declared.difference(&given).copied().collect();
    let extra: Vec<&str> = given.difference(&declared).copied().collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut said = Vec::new();
    if !missing.is_empty() {
        said.push(format!("needs no node for input {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        said.push(format!(
            "needs input {}, which it does not read",
            extra.join(", ")
        ));
    }
    Some(format!(
        "component {:?} reads {}: the node {}",
        node.component.as_deref().unwrap_or_default(),
        if declared.is_empty() {
            "no inputs".to_owned()
        } else {
            declared.into_iter().collect::<Vec<_>>().join(", ")
        },
        said.join(", and ")
    ))
}

/// One error per cycle, with its path (`a -> b -> a`), on its first node in schema
/// order.
fn cycles(loaded: &LoadedSchema) -> Vec<GraphError> {
    let schema = &loaded.schema;
    let index: HashMap<&str, usize> = schema
        .nodes
        .iter()
        .enumerate()
        .rev()
        .map(|(i, node)| (node.name.as_str(), i))
        .collect();
    // Edges from a node to the nodes it needs.
    let upstream: Vec<Vec<usize>> = schema
        .nodes
        .iter()
        .map(|node| {
            node.needs
                .values()
                .filter_map(|from| index.get(from.as_str()).copied())
                .collect()
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; schema.nodes.len()];
    let mut errors = Vec::new();
    for root in 0..schema.nodes.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Depth-first, without recursion: (node, next edge to follow).
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::OnPath;
        while let Some((node, edge)) = path.last_mut() {
            let node = *node;
            let Some(&next) = upstream[node].get(*edge) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            *edge += 1;
            match marks[next] {
                Mark::New => {
                    marks[next] = Mark::OnPath;
                    path.push((next, 0));
                }
                Mark::OnPath => {
                    let start = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                    // The path runs against the data: reverse it to read as it flows.
                    let mut cycle: Vec<usize> = path[start..].iter().map(|(n, _)| *n).collect();
                    cycle.reverse();
                    // Start at its first node in schema order.
                    let first = (0..cycle.len()).min_by_key(|i| cycle[*i]).unwrap_or(0);
                    cycle.rotate_left(first);
                    let mut names: Vec<&str> = cycle
                        .iter()
                        .map(|n| schema.nodes[*n].name.as_str())
                        .collect();
                    names.push(names[0]);
                    errors.push(loaded.error(names[0], format!("a cycle: {}", names.join(" -> "))));
                }
                Mark::Done => {}
            }
        }
    }
    errors
}
