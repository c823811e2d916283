//! Starting agent processes: the command line and environment of one, and the thread
//! that spawns them all.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use engine_core::Result;

use crate::error::ProcessError;
use crate::{HOST_VARIABLE, PARENT_VARIABLE, ProcessConfig};

/// The command that starts one agent process (what it runs comes in its launch frame).
pub(crate) fn command(config: &ProcessConfig) -> Result<Command> {
    let program = match &config.program {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(ProcessError::NoProgram)?,
    };
    let mut command = Command::new(program);
    command
        .args(&config.args)
        .envs(config.env.iter().map(|(name, value)| (name, value)))
        .env(HOST_VARIABLE, "1")
        .env(PARENT_VARIABLE, std::process::id().to_string())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .process_group(0);
    Ok(command)
}

/// Starts agent processes from one long-lived thread: a parent-death signal fires
/// when the *thread* that spawned the process ends, so spawning from whichever thread
/// calls `run_agent` (a short-lived one, say) would kill agents early.
#[derive(Debug)]
pub(crate) struct Spawner {
    requests: Option<Sender<(Command, Sender<std::io::Result<Child>>)>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    pub(crate) fn start() -> Self {
        let (requests, incoming) =
            crossbeam_channel::unbounded::<(Command, Sender<std::io::Result<Child>>)>();
        let thread = std::thread::Builder::new()
            .name("agent-spawner".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .ok();
        Self {
            requests: Some(requests),
            thread,
        }
    }

    pub(crate) fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let gone = || std::io::Error::other("the spawner thread is gone");
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((command, reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
