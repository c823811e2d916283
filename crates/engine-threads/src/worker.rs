//! One agent's thread: its mailbox and the loop that hands it messages.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use engine_core::{
    AgentCell, AgentHost, AgentSpec, AgentState, Doorbell, EventHub, GuildContext, LifecycleEvent,
    LifecycleKind, Notify, Result, Step,
};

use crate::NAME;

/// What the engine tells an agent's thread.
#[derive(Debug)]
pub(crate) enum Signal {
    /// Messages may be queued.
    Wake,
    /// Stop after the current message.
    Stop,
}

/// Everything an agent's thread needs.
pub(crate) struct Worker {
    pub(crate) guild: GuildContext,
    pub(crate) spec: Arc<AgentSpec>,
    pub(crate) cell: Arc<AgentCell>,
    /// The agent's wake-up as the bus sees it; it sends [`Signal::Wake`].
    pub(crate) mailbox: Arc<Doorbell>,
    pub(crate) signals: Receiver<Signal>,
    pub(crate) events: Arc<EventHub>,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
}

impl Worker {
    /// Starts the agent, reports readiness through `ready`, then runs its mailbox loop
    /// until it is stopped or crashes.
    pub(crate) fn run(self, ready: Sender<Result<()>>) {
        let _runtime = self.runtime.as_ref().map(tokio::runtime::Handle::enter);
        let notify: Arc<dyn Notify> = self.mailbox.clone();
        let host = AgentHost::start(&self.guild, self.spec.clone(), self.cell.clone(), notify);
        let mut host = match host {
            Ok(host) => host,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        self.cell.set_state(AgentState::Running, None);
        self.emit(LifecycleKind::Started);
        let _ = ready.send(Ok(()));

        match self.mailbox_loop(&mut host) {
            None => {
                if let Err(error) = host.stop() {
                    tracing::warn!(agent = %self.spec.id, %error, "stopping the agent");
                }
                // The engine marks the agent stopped and reports it once the thread is joined.
            }
            Some(reason) => {
                host.crash(&reason);
                self.emit(LifecycleKind::Crashed { reason });
            }
        }
    }

    /// Handles messages until told to stop (`None`) or the agent crashes (`Some(reason)`).
    fn mailbox_loop(&self, host: &mut AgentHost) -> Option<String> {
        loop {
            loop {
                match self.signals.try_recv() {
                    Ok(Signal::Stop) => return None,
                    Ok(Signal::Wake) => self.mailbox.answered(),
                    Err(_) => {}
                }
                match host.step() {
                    Ok(Step::Handled) => {}
                    Ok(Step::Idle) => break,
                    Ok(Step::Crashed(reason)) => return Some(reason),
                    Err(error) => return Some(format!("delivery failed: {error}")),
                }
            }
            match self.signals.recv() {
                Ok(Signal::Wake) => self.mailbox.answered(),
                Ok(Signal::Stop) | Err(_) => return None,
            }
        }
    }

    fn emit(&self, kind: LifecycleKind) {
        self.events.emit(LifecycleEvent {
            guild: self.guild.namespace.to_string(),
            agent_id: self.spec.id.clone(),
            engine: NAME.to_owned(),
            kind,
        });
    }
}
