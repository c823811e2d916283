//! `guild graph validate` and `guild graph run` on the example schema: the diamond
//! runs, a second run takes every node from the cache, an archive is written, and bad
//! schemas, inputs and targets are refused by name.

use std::path::PathBuf;
use std::process::{Command, Output};

fn example() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/graph/text-stats.toml")
        .display()
        .to_string()
}

fn guild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guild"))
        .args(args)
        .output()
        .expect("guild runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_example_runs_and_a_second_run_comes_from_the_cache() {
    let example = example();
    let validated = guild(&["graph", "validate", &example]);
    assert!(validated.status.success(), "{}", text(&validated));
    let storage = tempfile::tempdir().unwrap();
    let dir = storage.path().join("store").display().to_string();
    let archive = storage.path().join("model.tar.gz");
    let input = "text=The cat saw the other cat. The end.";
    let args = [
        "graph",
        "run",
        &example,
        "--storage",
        &dir,
        "--input",
        input,
        "--archive",
    ];
    let first = guild(&[&args[..], &[archive.to_str().unwrap()]].concat());
    let said = text(&first);
    assert!(first.status.success(), "{said}");
    assert!(
        said.contains(
            r#"report = {"characters":35,"top":[["the",3],["cat",2],["end",1]],"words":8}"#
        ),
        "{said}"
    );
    assert!(
        said.contains("7 nodes completed (0 from the cache)"),
        "{said}"
    );
    assert!(archive.metadata().unwrap().len() > 0);
    let second = guild(&args[..args.len() - 1]);
    let said = text(&second);
    assert!(
        said.contains("7 nodes completed (7 from the cache)"),
        "{said}"
    );
    assert!(said.contains("lower (lowercase) from the cache"), "{said}");
    // Sequentially, with other targets, nothing cached without a storage.
    let sequential = guild(&[
        "graph",
        "run",
        &example,
        "--sequential",
        "--input",
        "text=a b a",
        "--target",
        "top",
    ]);
    let said = text(&sequential);
    assert!(said.contains(r#"top = [["a",2],["b",1]]"#), "{said}");
}

#[test]
fn bad_schemas_inputs_and_targets_are_refused_by_name() {
    let example = example();
    for (args, expected) in [
        (
            vec!["graph", "run", &example],
            "node \"text\": an input node the targets need",
        ),
        (
            vec![
                "graph", "run", &example, "--input", "text=x", "--target", "nope",
            ],
            "node \"nope\": a target that is not in the graph",
        ),
        (
            vec!["graph", "run", &example, "--input", "text"],
            "--input \"text\": write name=value",
        ),
        (
            vec![
                "graph", "run", &example, "--input", "text=a", "--input", "text=b",
            ],
            "--input text: given twice",
        ),
        (
            vec!["graph", "validate", "/nonexistent/schema.toml"],
            "cannot read the file",
        ),
        (
            vec!["graph", "validate", "schema.yaml"],
            "must end in .toml or .json",
        ),
    ] {
        let output = guild(&args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output).contains(expected),
            "{args:?}: {}",
            text(&output)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"nodes": [
  {"name": "a", "component": "lowercase", "needs": {"text": "b"}},
  {"name": "b", "component": "lowercase", "needs": {"text": "a"}},
  {"name": "c", "component": "top_words", "needs": {"counts": "a"}, "config": {"n": 0}}
]}"#,
    )
    .unwrap();
    let refused = guild(&["graph", "validate", broken.to_str().unwrap()]);
    let said = text(&refused);
    assert!(!refused.status.success());
    assert!(
        said.contains(":2: node \"a\": a cycle: a -> b -> a"),
        "{said}"
    );
    let refused = guild(&["graph", "run", broken.to_str().unwrap()]);
    assert!(text(&refused).contains("a cycle"), "{}", text(&refused));
}
