//! How an agent process ended, in the engine contract's terms.

use std::os::unix::process::ExitStatusExt;

use engine_core::{AgentState, ExitStatus, LifecycleKind, ResourceLimits};
use nix::sys::signal::Signal;

use crate::host::exit_code;

/// What the engine learned about an agent process's end, besides its exit status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Last {
    /// The agent process reported that its agent ended on its own, and how.
    pub ending: Option<engine_core::Ending>,
    /// The engine had asked it to stop.
    pub stop_requested: bool,
    /// It wrote that an allocation failed (the text it wrote).
    pub allocation_failure: Option<String>,
}

/// The state, exit status and lifecycle event for an agent process that ended with
/// `status`.
pub(crate) fn classify(
    status: std::process::ExitStatus,
    last: &Last,
    limits: &ResourceLimits,
) -> (AgentState, ExitStatus, LifecycleKind) {
    let code = status.code();
    let signal = status.signal();
    let exit = |reason: String| ExitStatus {
        reason,
        code,
        signal,
    };
    if last.stop_requested {
        let reason = match signal {
            Some(signal) => format!("stopped (by {})", signal_name(signal)),
            None => "stopped".to_owned(),
        };
        return (AgentState::Stopped, exit(reason), LifecycleKind::Stopped);
    }
    match &last.ending {
        Some(engine_core::Ending::Crashed(reason)) => return crashed(exit(reason.clone())),
        Some(engine_core::Ending::Exited(reason)) => {
            return (
                AgentState::Exited,
                exit(reason.clone()),
                LifecycleKind::Exited,
            );
        }
        Some(engine_core::Ending::KilledByLimit(reason)) => {
            return killed_by_limit(exit(reason.clone()));
        }
        None => {}
    }
    if let (Some(cap), Some(text)) = (limits.memory_bytes, &last.allocation_failure) {
        return killed_by_limit(exit(format!(
            "reached its memory cap of {cap} bytes ({text})"
        )));
    }
    if let (Some(cap), Some(signal)) = (limits.cpu_seconds, signal)
        && signal == Signal::SIGXCPU as i32
    {
        return killed_by_limit(exit(format!(
            "reached its CPU-time cap of {cap} s ({})",
            signal_name(signal)
        )));
    }
    match (code, signal) {
        (_, Some(signal)) => crashed(exit(format!("killed by {}", signal_name(signal)))),
        (Some(exit_code::STOPPED), None) => (
            AgentState::Exited,
            exit("exited".to_owned()),
            LifecycleKind::Exited,
        ),
        (Some(exit_code::DISCONNECTED), None) => crashed(exit(
            "exited: its connection to the engine broke".to_owned(),
        )),
        (Some(code), None) => crashed(exit(format!("exited with code {code}"))),
        (None, None) => crashed(exit("ended for an unknown reason".to_owned())),
    }
}

fn crashed(exit: ExitStatus) -> (AgentState, ExitStatus, LifecycleKind) {
    let reason = exit.reason.clone();
    (AgentState::Crashed, exit, LifecycleKind::Crashed { reason })
}

fn killed_by_limit(exit: ExitStatus) -> (AgentState, ExitStatus, LifecycleKind) {
    let reason = exit.reason.clone();
    (
        AgentState::KilledByLimit,
        exit,
        LifecycleKind::KilledByLimit { reason },
    )
}

/// `signal 9 (SIGKILL)`.
pub fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(named) => format!("signal {signal} ({})", named.as_str()),
        Err(_) => format!("signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signalled(signal: Signal) -> std::process::ExitStatus {
        std::process::ExitStatus::from_raw(signal as i32)
    }

    fn exited(code: i32) -> std::process::ExitStatus {
        std::process::ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn a_kill_is_a_crash_naming_the_signal() {
        let (state, exit, kind) = classify(
            signalled(Signal::SIGKILL),
            &Last::default(),
            &ResourceLimits::default(),
        );
        assert_eq!(state, AgentState::Crashed);
        assert_eq!(exit.signal, Some(9));
        assert_eq!(exit.reason, "killed by signal 9 (SIGKILL)");
        assert!(matches!(kind, LifecycleKind::Crashed { .. }));
    }

    #[test]
    fn a_failed_allocation_under_a_memory_cap_is_the_limit() {
        let last = Last {
            allocation_failure: Some("memory allocation of 1048576 bytes failed".into()),
            ..Last::default()
        };
        let limits = ResourceLimits {
            memory_bytes: Some(64 << 20),
            ..ResourceLimits::default()
        };
        let (state, exit, _) = classify(signalled(Signal::SIGABRT), &last, &limits);
        assert_eq!(state, AgentState::KilledByLimit);
        assert!(
            exit.reason.contains("memory cap of 67108864 bytes"),
            "{}",
            exit.reason
        );
    }

    #[test]
    fn sigxcpu_under_a_cpu_cap_is_the_limit() {
        let limits = ResourceLimits {
            cpu_seconds: Some(1),
            ..ResourceLimits::default()
        };
        let (state, exit, _) = classify(signalled(Signal::SIGXCPU), &Last::default(), &limits);
        assert_eq!(state, AgentState::KilledByLimit);
        assert!(
            exit.reason.contains("CPU-time cap of 1 s"),
            "{}",
            exit.reason
        );
    }

    #[test]
    fn a_reported_crash_keeps_its_reason_and_a_stop_is_a_stop() {
        let last = Last {
            ending: Some(engine_core::Ending::Crashed("panicked: boom".into())),
            ..Last::default()
        };
        let limits = ResourceLimits::default();
        let (state, exit, _) = classify(exited(exit_code::CRASHED), &last, &limits);
        assert_eq!(
            (state, exit.reason.as_str()),
            (AgentState::Crashed, "panicked: boom")
        );

        let stopping = Last {
            stop_requested: true,
            ..Last::default()
        };
        let (state, exit, kind) = classify(signalled(Signal::SIGTERM), &stopping, &limits);
        assert_eq!(state, AgentState::Stopped);
        assert_eq!(exit.reason, "stopped (by signal 15 (SIGTERM))");
        assert_eq!(kind, LifecycleKind::Stopped);
        let (state, _, _) = classify(exited(0), &Last::default(), &limits);
        assert_eq!(state, AgentState::Exited);
    }
}
