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
    /// Handle nothing more until [`Signal::Resume`]; answer on the channel once
    /// between messages.
    Pause(Sender<()>),
    /// Carry on after a pause.
    Resume,
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
            Some(ending) => {
                host.end(&ending);
                self.emit(ending.lifecycle());
            }
        }
    }

    /// Handles messages until told to stop (`None`) or the agent ends on its own
    /// (`Some(ending)`).
    fn mailbox_loop(&self, host: &mut AgentHost) -> Option<engine_core::Ending> {
        loop {
            loop {
                match self.signals.try_recv() {
                    Ok(Signal::Stop) => return None,
                    Ok(Signal::Wake) => self.mailbox.answered(),
                    Ok(Signal::Pause(paused)) => {
                        if !self.paused(&paused) {
                            return None;
                        }
                    }
                    Ok(Signal::Resume) | Err(_) => {}
                }
                match host.step() {
                    Ok(Step::Handled) => {}
                    Ok(Step::Idle) => break,
                    Ok(Step::Ended(ending)) => return Some(ending),
                    Err(error) => return Some(format!("delivery failed: {error}").into()),
                }
            }
            match self.signals.recv() {
                Ok(Signal::Wake) => self.mailbox.answered(),
                Ok(Signal::Pause(paused)) => {
                    if !self.paused(&paused) {
                        return None;
                    }
                }
                Ok(Signal::Resume) => {}
                Ok(Signal::Stop) | Err(_) => return None,
            }
        }
    }

    /// Between messages: records the pause, tells whoever asked, and waits for the
    /// resume (whatever arrives meanwhile waits in the queue). False when told to stop
    /// instead.
    fn paused(&self, answer: &Sender<()>) -> bool {
        self.cell.set_state(AgentState::Paused, None);
        let _ = answer.send(());
        loop {
            match self.signals.recv() {
                // The mailbox is looked at once resumed; answering keeps wake-ups cheap.
                Ok(Signal::Wake) => self.mailbox.answered(),
                Ok(Signal::Pause(again)) => {
                    let _ = again.send(());
                }
                Ok(Signal::Resume) => {
                    self.cell.set_state(AgentState::Running, None);
                    return true;
                }
                Ok(Signal::Stop) | Err(_) => return false,
            }
        }
    }

    fn emit(&self, kind: LifecycleKind) {
        self.events.emit(LifecycleEvent::new(
            &self.guild.namespace,
            &self.spec.id,
            NAME,
            kind,
        ));
    }
}
