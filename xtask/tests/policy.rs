//! Repository policy, enforced by `cargo test`: every Rust file says what it is for,
//! no debugging leftovers or ignored tests, and every crate takes its lints and
//! dependency versions from the workspace.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn files(dir: &Path, extension: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                files(&path, extension, found);
            }
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
}

fn rust_files() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in ["crates", "xtask"] {
        files(&root().join(dir), "rs", &mut found);
    }
    assert!(found.len() > 20, "the walk found the sources");
    found
}

/// Fails with every offending location if `bad` is not empty.
fn check(rule: &str, bad: Vec<String>) {
    assert!(bad.is_empty(), "{rule}:\n{}", bad.join("\n"));
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let bad = rust_files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|path| path.display().to_string())
        .collect();
    check(
        "these files do not start with a `//!` line saying what they are for",
        bad,
    );
}

#[test]
fn no_debugging_leftovers_or_ignored_tests() {
    let forbidden = [
        concat!("dbg", "!("),
        concat!("#[", "ignore"),
        concat!("todo", "!("),
    ];
    let mut bad = Vec::new();
    for path in rust_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(word) = forbidden.iter().find(|word| line.contains(*word)) {
                bad.push(format!("{}:{}: {word}", path.display(), n + 1));
            }
        }
    }
    check("remove these", bad);
}

#[test]
fn every_crate_uses_workspace_lints_and_versions() {
    let mut manifests = Vec::new();
    files(&root().join("crates"), "toml", &mut manifests);
    manifests.push(root().join("xtask/Cargo.toml"));
    let mut bad = Vec::new();
    for path in manifests.iter().filter(|p| p.ends_with("Cargo.toml")) {
        let text = std::fs::read_to_string(path).unwrap();
        if !text.contains("[lints]\nworkspace = true") {
            bad.push(format!("{}: no `[lints] workspace = true`", path.display()));
        }
        let mut in_dependencies = false;
        for line in text.lines() {
            if line.starts_with('[') {
                in_dependencies = line.contains("dependencies");
            } else if in_dependencies
                && line.contains('=')
                && !line.starts_with('#')
                && !line.contains("workspace = true")
            {
                bad.push(format!(
                    "{}: `{line}` does not take its version from the workspace",
                    path.display()
                ));
            }
        }
    }
    check("crate manifests", bad);
}
