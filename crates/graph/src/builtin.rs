//! Text components for trying graphs out (`examples/text-stats.toml`): lowercase a
//! text, split it into words, count them, keep the most frequent, count items, and
//! merge inputs into one object.

use serde_json::{Map, Value, json};

use crate::component::{Component, ComponentRegistry, Declared, Inputs, NodeContext, exactly};
use crate::error::BoxError;

/// A registry of the built-in components.
pub fn builtin_registry() -> ComponentRegistry {
    let mut registry = ComponentRegistry::new();
    registry
        .register("lowercase", exactly(&["text"]), |config| {
            no_settings("lowercase", config).map(|()| Lowercase)
        })
        .register("split_words", exactly(&["text"]), |config| {
            no_settings("split_words", config).map(|()| SplitWords)
        })
        .register("word_counts", exactly(&["words"]), |config| {
            no_settings("word_counts", config).map(|()| WordCounts)
        })
        .register("top_words", exactly(&["counts"]), |config| {
            let n = match config.get("n") {
                None => 5,
                Some(n) => n
                    .as_u64()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or("top_words: `n` is a whole number from 1 to 10000")?,
            };
            if let Some(other) = config
                .as_object()
                .and_then(|map| map.keys().find(|key| *key != "n"))
            {
                return Err(format!("top_words: unknown setting {other:?}; known: n").into());
            }
            Ok(TopWords { n: n as usize })
        })
        .register("count", exactly(&["items"]), |config| {
            no_settings("count", config).map(|()| Count)
        })
        .register("merge", Declared::Any, |config| {
            no_settings("merge", config).map(|()| Merge)
        });
    registry
}

fn no_settings(component: &str, config: &Value) -> Result<(), BoxError> {
    match config.as_object() {
        Some(map) if map.is_empty() => Ok(()),
        _ => Err(format!("{component} takes no settings").into()),
    }
}

struct Lowercase;

impl Component for Lowercase {
    async fn run(&self, inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        Ok(Value::String(inputs.get::<String>("text")?.to_lowercase()))
    }
}

struct SplitWords;

impl Component for SplitWords {
    async fn run(&self, inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        let text: String = inputs.get("text")?;
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|word| !word.is_empty())
            .collect();
        Ok(json!(words))
    }
}

struct WordCounts;

impl Component for WordCounts {
    async fn run(&self, inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        let words: Vec<String> = inputs.get("words")?;
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for word in words {
            *counts.entry(word).or_default() += 1;
        }
        Ok(json!(counts))
    }
}

struct TopWords {
    n: usize,
}

impl Component for TopWords {
    async fn run(&self, inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        let counts: std::collections::BTreeMap<String, u64> = inputs.get("counts")?;
        let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
        // Most frequent first; alphabetical among equals, so runs agree.
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(self.n);
        Ok(json!(ranked))
    }
}

struct Count;

impl Component for Count {
    async fn run(&self, inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        let n = match inputs.value("items")? {
            Value::Array(items) => items.len(),
            Value::String(text) => text.chars().count(),
            Value::Object(map) => map.len(),
            other => return Err(format!("count: cannot count {other}").into()),
        };
        Ok(json!(n))
    }
}

struct Merge;

impl Component for Merge {
    async fn run(&self, inputs: Inputs, _ctx: &NodeContext) -> Result<Value, BoxError> {
        let merged: Map<String, Value> = inputs
            .iter()
            .map(|(name, value)| (name.to_owned(), value.clone()))
            .collect();
        Ok(Value::Object(merged))
    }
}
