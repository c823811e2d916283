//! Running cargo from the repository root, echoing what runs.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

/// The repository root (the parent of this crate). `cargo xtask` (`cargo run`) tells
/// this process the manifest directory of the checkout it was called in; the one
/// compiled in is only the fallback, because a target directory shared between
/// checkouts (as `.ci/run` sets up) may hold another checkout's build of this binary,
/// which would otherwise test that other checkout.
pub(crate) fn root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A `cargo` command run from the repository root.
pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args).current_dir(root());
    command
}

/// Runs `cargo args`, streaming its output; fails if it fails.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    run_with_env(args, &[])
}

/// Runs `cargo args` with extra environment variables, streaming its output; fails if it
/// fails.
pub(crate) fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let shown_env: String = env.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
    println!("$ {shown_env}cargo {}", args.join(" "));
    let status = cargo(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot start cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo args` and captures its output (stderr still streams), whatever the outcome.
pub(crate) fn capture(args: &[&str]) -> anyhow::Result<Output> {
    cargo(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start cargo {}", args.join(" ")))
}
