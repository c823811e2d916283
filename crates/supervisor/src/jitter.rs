//! The randomness behind backoff jitter: a xorshift generator seeded from the process's
//! hash seed, so supervisors in different processes spread differently.

use std::hash::{BuildHasher, RandomState};

/// Numbers in `[0, 1)`, cheaply.
#[derive(Debug)]
pub(crate) struct Jitter(u64);

impl Default for Jitter {
    fn default() -> Self {
        Self(RandomState::new().hash_one(std::time::Instant::now()) | 1)
    }
}

impl Jitter {
    /// The next number in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_in_range_and_spread() {
        let mut jitter = Jitter::default();
        let draws: Vec<f64> = (0..10_000).map(|_| jitter.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let low = draws.iter().filter(|u| **u < 0.5).count();
        assert!(
            (4_000..6_000).contains(&low),
            "{low} of 10000 below one half"
        );
    }
}
