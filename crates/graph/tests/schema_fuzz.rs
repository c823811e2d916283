//! The schema loader, the checks and the runner, fuzzed: the example schema, mutated at
//! random (lines replaced by hostile ones, deleted or doubled, bytes inserted), never
//! makes loading, checking or running panic; a mutated schema that passes the checks
//! runs (with the example's input) to a result or a refusal that names the problem.

use std::collections::BTreeMap;

use graph::{ExecutionContext, GraphRunner, LoadedSchema};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../../examples/graph/text-stats.toml");

/// Lines a hostile user might write.
const HOSTILE_LINES: &[&str] = &[
    "name = \"\"",
    "name = \"\\u0000\"",
    "name = \"text\"",
    "name = \"report\"",
    "component = \"nope\"",
    "component = \"merge\"",
    "component = \"top_words\"",
    "needs = { text = \"report\" }",
    "needs = { text = \"nowhere\" }",
    "needs = { counts = \"counts\" }",
    "needs = {}",
    "config = { n = 0 }",
    "config = { n = 18446744073709551615 }",
    "config = { n = -1, m = 2 }",
    "config = \"x\"",
    "input = true",
    "input = false",
    "target = true",
    "cache = false",
    "[[nodes]]",
    "[nodes]",
    "nodes = []",
    "unknown = 1",
    "\u{feff}",
];

fn mutate(lines: &mut Vec<String>, choices: &[(u8, usize, usize)]) {
    for &(kind, at, pick) in choices {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let at = at % lines.len();
        match kind % 4 {
            0 => lines[at] = HOSTILE_LINES[pick % HOSTILE_LINES.len()].to_owned(),
            1 => {
                lines.remove(at);
            }
            2 => {
                let copy = lines[at].clone();
                lines.insert(at, copy);
            }
            _ => {
                let line = &mut lines[at];
                let byte = (pick % 96 + 32) as u8 as char;
                let cut = line
                    .char_indices()
                    .nth(pick % (line.len() + 1))
                    .map_or(line.len(), |(i, _)| i);
                line.insert(cut, byte);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn mutated_schemas_never_panic(
        choices in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..6),
        sequential in any::<bool>(),
    ) {
        let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
        mutate(&mut lines, &choices);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mutated.toml");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let Ok(loaded) = LoadedSchema::from_file(&path) else {
            return Ok(());
        };
        let registry = graph::builtin_registry();
        if graph::check(&loaded, &registry).is_err() {
            return Ok(());
        }
        let context = if sequential {
            ExecutionContext::sequential()
        } else {
            ExecutionContext::parallel(workers())
        };
        let Ok(runner) = GraphRunner::create(loaded, &registry, None, context, Vec::new()) else {
            return Ok(());
        };
        let inputs = BTreeMap::from([("text".to_owned(), serde_json::json!("A b a."))]);
        match runner.run(inputs, &[]) {
            Ok(result) => prop_assert!(result.completed.len() + result.failed.len() + result.skipped.len() <= 64),
            Err(refused) => prop_assert!(!refused.0.is_empty()),
        }
    }
}

fn workers() -> tokio::runtime::Handle {
    static WORKERS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    WORKERS
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap()
        })
        .handle()
        .clone()
}
