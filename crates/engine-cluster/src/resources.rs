//! Resources by name, as nodes offer them and agents ask for them: `cpu` (cores),
//! `memory_bytes`, and custom ones an operator names on a node (`gpu`, say), as Ray's
//! `num_cpus` and `resources`. Placement puts an agent only where what it asks for is
//! free.

use std::collections::BTreeMap;

use engine_core::{AgentSpec, Error, ErrorKind, Result};

/// Amounts by resource name.
pub type Resources = BTreeMap<String, f64>;

/// The resource of a node's cores.
pub const CPU: &str = "cpu";
/// The resource of a node's memory, in bytes.
pub const MEMORY: &str = "memory_bytes";

/// What this machine offers: its cores (as the OS lets this process use them) and its
/// memory (`MemTotal` of `/proc/meminfo`, where there is one).
pub fn machine_capacity() -> Resources {
    let mut capacity = Resources::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    capacity.insert(CPU.to_owned(), cores as f64);
    if let Some(bytes) = total_memory() {
        capacity.insert(MEMORY.to_owned(), bytes as f64);
    }
    capacity
}

fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Checks what an agent may ask of the cluster: its `resources` are positive, finite
/// amounts, and it sets none of the pool engine's settings.
pub fn check_agent(spec: &AgentSpec) -> Result<()> {
    spec.refuse_settings_of_other_engines(crate::NAME)?;
    check_amounts(&spec.resources).map_err(|why| {
        Error::new(
            ErrorKind::InvalidSpec,
            crate::NAME,
            format!("agent {:?}: `resources`: {why}", spec.id),
        )
    })
}

/// Checks that every amount is a positive, finite number and every name is one.
pub fn check_amounts(amounts: &Resources) -> std::result::Result<(), String> {
    for (name, amount) in amounts {
        if name.trim().is_empty() {
            return Err("a resource needs a name".to_owned());
        }
        if !amount.is_finite() || *amount <= 0.0 {
            return Err(format!("{name} = {amount}: give a positive number"));
        }
    }
    Ok(())
}

/// Why `need` does not fit in what `capacity` leaves free after `used`; `None` when it
/// fits.
pub(crate) fn shortfall(
    capacity: &Resources,
    used: &Resources,
    need: &Resources,
) -> Option<String> {
    let short: Vec<String> = need
        .iter()
        .filter_map(|(name, amount)| {
            let offered = capacity.get(name).copied().unwrap_or(0.0);
            let free = offered - used.get(name).copied().unwrap_or(0.0);
            (free < *amount).then(|| {
                if offered == 0.0 {
                    format!("no {name}")
                } else {
                    format!("{name} {} free of {}", show(free.max(0.0)), show(offered))
                }
            })
        })
        .collect();
    (!short.is_empty()).then(|| short.join(", "))
}

/// Adds `amounts` to `total`.
pub(crate) fn add(total: &mut Resources, amounts: &Resources) {
    for (name, amount) in amounts {
        *total.entry(name.clone()).or_insert(0.0) += amount;
    }
}

/// Amounts as `name=amount` pairs, for messages and listings.
pub(crate) fn describe(amounts: &Resources) -> String {
    amounts
        .iter()
        .map(|(name, amount)| format!("{name}={}", show(*amount)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An amount without a fraction when it has none; memory in GiB-readable bytes is left
/// to the caller.
fn show(amount: f64) -> String {
    if amount.fract() == 0.0 && amount.abs() < 1e15 {
        format!("{}", amount as i64)
    } else {
        format!("{amount:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(pairs: &[(&str, f64)]) -> Resources {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn a_need_fits_only_in_what_is_free() {
        let capacity = amounts(&[("cpu", 4.0), ("gpu", 1.0)]);
        let used = amounts(&[("cpu", 3.0)]);
        assert_eq!(shortfall(&capacity, &used, &amounts(&[("cpu", 1.0)])), None);
        assert_eq!(
            shortfall(&capacity, &used, &amounts(&[("cpu", 2.0), ("tpu", 1.0)])).unwrap(),
            "cpu 1 free of 4, no tpu"
        );
        assert_eq!(shortfall(&capacity, &used, &Resources::new()), None);
    }

    #[test]
    fn amounts_must_be_positive_and_finite() {
        assert!(check_amounts(&amounts(&[("cpu", 0.5)])).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(check_amounts(&amounts(&[("cpu", bad)])).is_err(), "{bad}");
        }
        assert!(check_amounts(&amounts(&[(" ", 1.0)])).is_err());
    }

    #[test]
    fn this_machine_offers_its_cores() {
        assert!(machine_capacity()[CPU] >= 1.0);
    }
}
