//! Agent types that come with guild, so real guilds can be written as spec files alone.
//!
//! | type | what it does |
//! |------|--------------|
//! | `responder` | replies to every message |
//! | `relay` | forwards every message to other topics, optionally reshaped |
//! | `aggregator` | collects a number of messages and publishes one summary |
//! | `monte_carlo` | samples random points to estimate pi (CPU-bound work) |
//! | `flaky` | forwards messages, and crashes on purpose every so often (to try supervision) |
//! | `exec` | a program in any language, over a line protocol on its stdin and stdout |

mod aggregator;
mod exec;
mod flaky;
mod monte_carlo;
mod relay;
mod responder;

use engine_core::{AgentRegistry, AgentSpec, BoxError};
use serde::de::DeserializeOwned;

pub use aggregator::{Aggregator, AggregatorConfig, Ratio};
pub use exec::{EXEC_PROTOCOL, Exec, ExecConfig};
pub use flaky::{Flaky, FlakyConfig};
pub use monte_carlo::{MonteCarlo, MonteCarloConfig};
pub use relay::{Relay, RelayConfig};
pub use responder::{Responder, ResponderConfig};

/// Registers every built-in agent type in `registry`.
pub fn register_builtins(registry: &mut AgentRegistry) -> &mut AgentRegistry {
    registry
        .register("responder", |spec| Ok(Responder::new(properties(spec)?)))
        .register("relay", |spec| Ok(Relay::new(properties(spec)?)))
        .register("aggregator", |spec| Ok(Aggregator::new(properties(spec)?)))
        .register("flaky", |spec| Ok(Flaky::new(properties(spec)?)?))
        .register("exec", |spec| Exec::new(properties(spec)?))
        .register("monte_carlo", |spec| {
            Ok(MonteCarlo::new(spec, properties(spec)?))
        })
}

/// A registry holding the built-in agent types.
pub fn builtin_registry() -> AgentRegistry {
    let mut registry = AgentRegistry::new();
    register_builtins(&mut registry);
    registry
}

fn properties<T: DeserializeOwned>(spec: &AgentSpec) -> Result<T, BoxError> {
    Ok(spec.properties_as()?)
}
