//! `cargo xtask`: the repository's tasks, one module per subcommand.
//!
//! - `cargo xtask ci`: everything CI checks (formatting, clippy, every test including
//!   doc tests and the repository policy tests, then the conformance matrix).
//! - `cargo xtask conformance`: the conformance suite for every engine x messaging pair,
//!   printed as a matrix; fails if any cell fails.
//! - `cargo xtask bench`: the in-process benchmarks against peer frameworks and raw
//!   channels, written into `docs/benchmarks.md`.
#![allow(
    clippy::print_stdout,
    reason = "a command-line program prints its results"
)]

mod bench;
mod ci;
mod cmd;
mod conformance;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <ci | conformance | bench [--quick] [--runs N]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("conformance") => conformance::run(),
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}
