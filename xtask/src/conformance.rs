//! `cargo xtask conformance`: runs the conformance suite for every engine x messaging
//! pair and prints the matrix.

use anyhow::bail;

use crate::cmd;

/// One cell of the matrix: a row (an engine, or the delivery contract itself), a
/// column (a messaging backend), and where its tests live.
struct Cell {
    row: &'static str,
    column: &'static str,
    package: &'static str,
    /// The test-name filter selecting the cell's tests in the package's `conformance` test.
    filter: &'static str,
}

/// What the engine-contract cells leave to the supervision cells, whose test names
/// hold their own too.
const SUPERVISION: &str = "supervision::";

const CELLS: &[Cell] = &[
    Cell {
        row: "delivery contract",
        column: "memory",
        package: "messaging-memory",
        filter: "",
    },
    Cell {
        row: "delivery contract",
        column: "redis",
        package: "messaging-redis",
        filter: "",
    },
    Cell {
        row: "engine sync",
        column: "memory",
        package: "engine-sync",
        filter: "memory::",
    },
    Cell {
        row: "engine sync",
        column: "redis",
        package: "engine-sync",
        filter: "redis::",
    },
    Cell {
        row: "engine sync",
        column: "supervision/memory",
        package: "engine-sync",
        filter: "supervision::memory::",
    },
    Cell {
        row: "engine sync",
        column: "supervision/redis",
        package: "engine-sync",
        filter: "supervision::redis::",
    },
    Cell {
        row: "engine threads",
        column: "memory",
        package: "engine-threads",
        filter: "memory::",
    },
    Cell {
        row: "engine threads",
        column: "redis",
        package: "engine-threads",
        filter: "redis::",
    },
    Cell {
        row: "engine threads",
        column: "supervision/memory",
        package: "engine-threads",
        filter: "supervision::memory::",
    },
    Cell {
        row: "engine threads",
        column: "supervision/redis",
        package: "engine-threads",
        filter: "supervision::redis::",
    },
    Cell {
        row: "engine pool",
        column: "memory",
        package: "engine-pool",
        filter: "memory::",
    },
    Cell {
        row: "engine pool",
        column: "redis",
        package: "engine-pool",
        filter: "redis::",
    },
    Cell {
        row: "engine pool",
        column: "supervision/memory",
        package: "engine-pool",
        filter: "supervision::memory::",
    },
    Cell {
        row: "engine pool",
        column: "supervision/redis",
        package: "engine-pool",
        filter: "supervision::redis::",
    },
    Cell {
        row: "engine process",
        column: "memory",
        package: "engine-process",
        filter: "memory::",
    },
    Cell {
        row: "engine process",
        column: "redis",
        package: "engine-process",
        filter: "redis::",
    },
    Cell {
        row: "engine process",
        column: "supervision/memory",
        package: "engine-process",
        filter: "supervision::memory::",
    },
    Cell {
        row: "engine process",
        column: "supervision/redis",
        package: "engine-process",
        filter: "supervision::redis::",
    },
    // The cluster engine carries messages between machines through Redis only.
    Cell {
        row: "engine cluster",
        column: "redis",
        package: "engine-cluster",
        filter: "redis::",
    },
    Cell {
        row: "engine cluster",
        column: "supervision/redis",
        package: "engine-cluster",
        filter: "supervision::redis::",
    },
];

/// What running one cell found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    passed: u32,
    failed: u32,
}

pub(crate) fn run() -> anyhow::Result<()> {
    let mut results = Vec::new();
    for cell in CELLS {
        let mut args = vec![
            "test",
            "--quiet",
            "--package",
            cell.package,
            "--test",
            "conformance",
            "--",
            cell.filter,
        ];
        if cell.row.starts_with("engine") && !cell.filter.starts_with(SUPERVISION) {
            args.extend(["--skip", SUPERVISION]);
        }
        println!("$ cargo {}", args.join(" "));
        let output = cmd::capture(&args)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let counts = parse_counts(&stdout);
        if !output.status.success() {
            print!("{stdout}");
        }
        results.push(counts.filter(|c| c.passed > 0 || c.failed > 0));
    }
    print_matrix(&results);
    let failing = results
        .iter()
        .filter(|r| !matches!(r, Some(Counts { failed: 0, .. })))
        .count();
    if failing > 0 {
        bail!("{failing} conformance cell(s) failed or ran no test");
    }
    Ok(())
}

/// Reads the counts from cargo test's `test result:` line.
fn parse_counts(stdout: &str) -> Option<Counts> {
    let line = stdout.lines().find(|l| l.starts_with("test result:"))?;
    let number_before = |word: &str| -> Option<u32> {
        let end = line.find(word)?;
        line[..end].split_whitespace().last()?.parse().ok()
    };
    Some(Counts {
        passed: number_before(" passed")?,
        failed: number_before(" failed")?,
    })
}

fn print_matrix(results: &[Option<Counts>]) {
    let mut columns: Vec<&str> = Vec::new();
    let mut rows: Vec<&str> = Vec::new();
    for cell in CELLS {
        if !columns.contains(&cell.column) {
            columns.push(cell.column);
        }
        if !rows.contains(&cell.row) {
            rows.push(cell.row);
        }
    }
    println!();
    print!("{:<20}", "conformance");
    for column in &columns {
        print!("  {column:<18}");
    }
    println!();
    for row in rows {
        print!("{row:<20}");
        for column in &columns {
            let found = CELLS
                .iter()
                .zip(results)
                .find(|(cell, _)| cell.row == row && cell.column == *column);
            let text = match found {
                None => "-".to_owned(),
                Some((_, None)) => "ran no test".to_owned(),
                Some((_, Some(c))) if c.failed == 0 => format!("pass {}/{}", c.passed, c.passed),
                Some((_, Some(c))) => format!("FAIL {}/{}", c.passed, c.passed + c.failed),
            };
            print!("  {text:<18}");
        }
        println!();
    }
    let (passed, failed) = results
        .iter()
        .flatten()
        .fold((0, 0), |(p, f), c| (p + c.passed, f + c.failed));
    println!("{passed} passed, {failed} failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counts_of_a_test_run() {
        let out = "running 3 tests\n...\ntest result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 0.1s\n";
        assert_eq!(
            parse_counts(out),
            Some(Counts {
                passed: 2,
                failed: 1
            })
        );
        assert_eq!(parse_counts("error: could not compile"), None);
    }
}
