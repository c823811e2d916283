//! `cargo xtask ci`: what CI runs, in the order that fails fastest.

use crate::{cmd, conformance};

/// Formatting, lints, the dependency policy of `deny.toml`, the documentation, every
/// test (unit, integration, doc and policy tests), then the conformance matrix.
pub(crate) fn run() -> anyhow::Result<()> {
    cmd::run(&["fmt", "--all", "--", "--check"])?;
    cmd::run(&[
        "clippy",
        "--workspace",
        "--exclude",
        "bench",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // cargo-deny comes from crates.io the first time, so the command works on a fresh
    // machine with nothing but Rust.
    let deny_present = cmd::cargo(&["deny", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !deny_present {
        cmd::run(&["install", "cargo-deny", "--locked"])?;
    }
    // Advisories need the advisory database, which lives outside the package registries;
    // licenses, bans and sources are checked from the lock file alone.
    cmd::run(&[
        "deny",
        "--log-level",
        "error",
        "check",
        "licenses",
        "bans",
        "sources",
    ])?;
    // Documentation builds with no broken links or other rustdoc warnings.
    cmd::run_with_env(
        &[
            "doc",
            "--no-deps",
            "--workspace",
            "--exclude",
            "bench",
            "--quiet",
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // The bench crate (three peer frameworks) is built by `cargo xtask bench`, not here.
    cmd::run(&[
        "test",
        "--workspace",
        "--exclude",
        "bench",
        "--no-fail-fast",
    ])?;
    conformance::run()
}
