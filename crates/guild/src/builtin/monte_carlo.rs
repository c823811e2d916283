//! `monte_carlo`: CPU-bound sampling that estimates pi.

use engine_core::{Agent, AgentContext, AgentResult, AgentSpec, Message, Payload};
use serde::Deserialize;
use serde_json::{Value, json};

/// Properties of a `monte_carlo` worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonteCarloConfig {
    /// Points sampled per task, unless the task message says `{"samples": n}`.
    pub samples: u64,
    /// The topic results are published to.
    pub to: String,
    /// The random seed; derived from the agent id when absent, so every worker of a
    /// guild samples different points and a run is reproducible.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// For every task message, samples points in the unit square and publishes
/// `{"inside": k, "samples": n}` to `to`, where `k` of the `n` points fell inside the
/// quarter circle: `4k/n` estimates pi.
#[derive(Debug)]
pub struct MonteCarlo {
    config: MonteCarloConfig,
    rng: SplitMix64,
}

impl MonteCarlo {
    /// A worker for the agent described by `spec`.
    pub fn new(spec: &AgentSpec, config: MonteCarloConfig) -> Self {
        let seed = config.seed.unwrap_or_else(|| fnv1a(spec.id.as_bytes()));
        Self {
            config,
            rng: SplitMix64(seed),
        }
    }

    /// Samples `n` points; returns how many fell inside the quarter circle.
    pub fn sample(&mut self, n: u64) -> u64 {
        let mut inside = 0;
        for _ in 0..n {
            let x = self.rng.unit();
            let y = self.rng.unit();
            inside += u64::from(x * x + y * y <= 1.0);
        }
        inside
    }
}

impl Agent for MonteCarlo {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        let task: Value = message.decode_json()?;
        let samples = task
            .get("samples")
            .and_then(Value::as_u64)
            .unwrap_or(self.config.samples);
        let inside = self.sample(samples);
        let result = json!({ "inside": inside, "samples": samples });
        ctx.send(self.config.to.clone(), Payload::from(result))?;
        Ok(())
    }
}

/// A small, fast, well-distributed generator (Steele, Lea and Flood's SplitMix64).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, 1) with 53 bits of precision.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_samples_land_near_pi() {
        let spec = AgentSpec::new("w", "monte_carlo");
        let config = MonteCarloConfig {
            samples: 1,
            to: "out".into(),
            seed: Some(7),
        };
        let n = 1_000_000;
        let estimate = 4.0 * MonteCarlo::new(&spec, config).sample(n) as f64 / n as f64;
        assert!((estimate - std::f64::consts::PI).abs() < 0.01, "{estimate}");
    }

    #[test]
    fn workers_with_different_ids_draw_different_points() {
        let config = MonteCarloConfig {
            samples: 1,
            to: "out".into(),
            seed: None,
        };
        let mut draws: Vec<Vec<u64>> = ["worker-1", "worker-2", "worker-3"]
            .iter()
            .map(|id| {
                let mut worker =
                    MonteCarlo::new(&AgentSpec::new(*id, "monte_carlo"), config.clone());
                (0..4).map(|_| worker.rng.next()).collect()
            })
            .collect();
        draws.dedup();
        assert_eq!(draws.len(), 3);
    }
}
