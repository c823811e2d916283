//! `aggregator`: collects messages and publishes one summary per batch.

use std::collections::BTreeMap;

use engine_core::{Agent, AgentContext, AgentResult, Message, Payload};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Properties of an `aggregator`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// How many messages make a batch.
    pub expect: u64,
    /// The topic the summary is published to.
    pub to: String,
    /// Keep every payload of the batch in the summary under `items`.
    #[serde(default)]
    pub collect: bool,
    /// A ratio of two summed fields to add to the summary.
    #[serde(default)]
    pub ratio: Option<Ratio>,
}

/// `scale * sum(numerator) / sum(denominator)`, published under `field`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ratio {
    /// The summed field on top.
    pub numerator: String,
    /// The summed field below.
    pub denominator: String,
    /// What to multiply by.
    #[serde(default = "one")]
    pub scale: f64,
    /// The name of the result in the summary.
    pub field: String,
}

fn one() -> f64 {
    1.0
}

/// Collects `expect` messages, then publishes to `to` a summary object: `count`, `sum`
/// (the totals of every numeric field of object payloads), `items` (every payload, when
/// `collect` is set) and the `ratio` field when configured; then starts a new batch.
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    count: u64,
    sums: BTreeMap<String, f64>,
    items: Vec<Value>,
}

impl Aggregator {
    /// An aggregator with the given properties.
    pub fn new(config: AggregatorConfig) -> Self {
        Self {
            config,
            count: 0,
            sums: BTreeMap::new(),
            items: Vec::new(),
        }
    }

    /// Adds one payload to the batch; returns the summary when the batch is complete.
    pub fn add(&mut self, payload: Value) -> Option<Value> {
        self.count += 1;
        if let Value::Object(fields) = &payload {
            for (name, value) in fields {
                if let Some(number) = value.as_f64() {
                    *self.sums.entry(name.clone()).or_default() += number;
                }
            }
        }
        if self.config.collect {
            self.items.push(payload);
        }
        (self.count >= self.config.expect).then(|| self.summary())
    }

    fn summary(&mut self) -> Value {
        let sums = std::mem::take(&mut self.sums);
        let mut summary = Map::new();
        summary.insert("count".into(), json!(std::mem::take(&mut self.count)));
        if let Some(ratio) = &self.config.ratio {
            let top = sums.get(&ratio.numerator).copied().unwrap_or(0.0);
            let bottom = sums.get(&ratio.denominator).copied().unwrap_or(0.0);
            let value = if bottom == 0.0 {
                Value::Null
            } else {
                json!(ratio.scale * top / bottom)
            };
            summary.insert(ratio.field.clone(), value);
        }
        summary.insert("sum".into(), json!(sums));
        if self.config.collect {
            summary.insert(
                "items".into(),
                Value::Array(std::mem::take(&mut self.items)),
            );
        }
        Value::Object(summary)
    }
}

impl Agent for Aggregator {
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        if let Some(summary) = self.add(message.decode_json()?) {
            ctx.send(self.config.to.clone(), Payload::from(summary))?;
        }
        Ok(())
    }
}
