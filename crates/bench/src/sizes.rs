//! How big each workload is, and how a cell's samples become its JSON report.

use serde_json::{Value, json};

use crate::{Sample, median};

/// Workload sizes; `--quick` divides the message counts by ten.
pub(crate) struct Sizes {
    pub tell: u64,
    pub ask: u64,
    pub fanout_agents: usize,
    pub fanout: u64,
    pub ring_agents: usize,
    pub ring_hops: u64,
    pub start: usize,
    pub scale: usize,
    pub rtt: u64,
    pub oneway: u64,
    pub redis_throughput: u64,
    pub redis_latency: u64,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Self {
        let scale = if quick { 10 } else { 1 };
        Self {
            tell: 2_000_000 / scale,
            ask: 200_000 / scale,
            fanout_agents: 64,
            fanout: 100_000 / scale,
            ring_agents: 1_000,
            ring_hops: 1_000_000 / scale,
            start: 10_000,
            scale: 1_000_000 / scale as usize,
            rtt: 20_000 / scale,
            oneway: 1_000_000 / scale,
            redis_throughput: 100_000 / scale,
            redis_latency: 5_000 / scale,
        }
    }

    /// The JSON line for one cell: the median rate over the repetitions, and for `ask`
    /// the median p50 and p99 latencies, for `start` and `scale` bytes per agent (and the
    /// seconds it took to stop them, where measured).
    pub(crate) fn report(&self, system: &str, workload: &str, samples: &[Sample]) -> Value {
        let work = match workload {
            "tell" => self.tell as f64,
            "ask" => self.ask as f64,
            "fanout" => (self.fanout * self.fanout_agents as u64) as f64,
            "ring" => self.ring_hops as f64,
            "spawn" => crate::process::SPAWNS as f64,
            "detect" | "restart" => crate::supervision::KILLS as f64,
            "rtt" => self.rtt as f64,
            "oneway" => self.oneway as f64,
            "throughput" => self.redis_throughput as f64,
            "latency" => self.redis_latency as f64,
            "scale" => self.scale as f64,
            "nodes" => crate::graph_cost::NODES as f64,
            "wide" => crate::graph_cost::WIDE as f64,
            _ => self.start as f64,
        };
        let mut rates = Vec::new();
        let mut p50s = Vec::new();
        let mut p90s = Vec::new();
        let mut p99s = Vec::new();
        let mut bytes = Vec::new();
        let mut stops = Vec::new();
        for sample in samples {
            let elapsed = match sample {
                Sample::Elapsed(elapsed) => *elapsed,
                Sample::Latencies(latencies, elapsed) => {
                    let mut micros: Vec<f64> =
                        latencies.iter().map(|d| d.as_secs_f64() * 1e6).collect();
                    micros.sort_by(f64::total_cmp);
                    p50s.push(micros[micros.len() / 2]);
                    p90s.push(micros[micros.len() * 9 / 10]);
                    p99s.push(micros[micros.len() * 99 / 100]);
                    // One latency per unit of work, whatever the workload.
                    rates.push(latencies.len() as f64 / elapsed.as_secs_f64());
                    continue;
                }
                Sample::Started(elapsed, resident) => {
                    bytes.push(*resident as f64 / work);
                    *elapsed
                }
                Sample::StartedAndStopped(elapsed, resident, stop) => {
                    bytes.push(*resident as f64 / work);
                    stops.push(stop.as_secs_f64());
                    *elapsed
                }
            };
            rates.push(work / elapsed.as_secs_f64());
        }
        let mut report =
            json!({ "system": system, "workload": workload, "rate": median(&mut rates) });
        if !p50s.is_empty() {
            report["p50_us"] = json!(median(&mut p50s));
            report["p90_us"] = json!(median(&mut p90s));
            report["p99_us"] = json!(median(&mut p99s));
        }
        if !bytes.is_empty() {
            report["bytes_per_agent"] = json!(median(&mut bytes));
        }
        if !stops.is_empty() {
            report["stop_s"] = json!(median(&mut stops));
        }
        report
    }
}
