//! What `/proc` says about an agent process: resident memory and CPU time.

use std::time::Duration;

use nix::unistd::{SysconfVar, sysconf};

/// Resident memory and CPU time (user and system) of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident memory in bytes.
    pub resident_bytes: u64,
    /// CPU time used.
    pub cpu_time: Duration,
}

/// The usage of process `pid`, or `None` if it is gone or `/proc` cannot tell.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after its last `)`
    // start with the state, field 3 of proc(5).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    let pages = field(24)?;
    let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten()?.max(1) as u64;
    let page = sysconf(SysconfVar::PAGE_SIZE).ok().flatten()?.max(1) as u64;
    Some(Usage {
        resident_bytes: pages * page,
        cpu_time: Duration::from_millis(ticks * 1000 / hz),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_resident_memory() {
        let usage = usage(std::process::id()).expect("our own /proc entry");
        assert!(usage.resident_bytes > 0);
    }

    #[test]
    fn a_missing_process_has_no_usage() {
        assert_eq!(usage(u32::MAX), None);
    }
}
