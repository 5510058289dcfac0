//! Smooth weighted round robin, as nginx balances: each pick adds every node's weight to its
//! current score, takes the highest, and subtracts the total from it. Over one cycle of
//! `sum(weights)` picks each node is chosen exactly `weight` times, interleaved rather than in
//! runs (weights 5,1,1 give a a b a c a a, not a a a a a b c).
//!
//! State is per core: cores balance independently, which keeps the pick free of shared writes.

use crate::config::Balance;
use crate::route::{parse_var, Var};

/// Parses APISIX's `type`, `hash_on` and `key` into a [`Balance`].
pub fn parse_balance(
    kind: &str,
    hash_on: Option<&str>,
    key: Option<&str>,
) -> Result<Balance, String> {
    match kind {
        "roundrobin" => Ok(Balance::RoundRobin),
        "least_conn" => Ok(Balance::LeastConn),
        "ewma" => Ok(Balance::Ewma),
        "chash" => {
            let key = key.ok_or("type \"chash\" needs a key")?;
            let var = match hash_on.unwrap_or("vars") {
                "vars" => parse_var(key)?,
                "header" => Var::Header(key.to_ascii_lowercase().replace('_', "-")),
                "cookie" => Var::Cookie(key.to_owned()),
                other => {
                    return Err(format!(
                        "hash_on: expected \"vars\", \"header\" or \"cookie\", found {other:?}"
                    ))
                }
            };
            Ok(Balance::Chash { key: var })
        }
        other => Err(format!(
            "type: expected \"roundrobin\", \"least_conn\", \"chash\" or \"ewma\", found {other:?}"
        )),
    }
}

#[derive(Debug, Clone)]
pub struct RoundRobin {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl RoundRobin {
    pub fn new(weights: impl IntoIterator<Item = u32>) -> RoundRobin {
        let weights: Vec<i64> = weights.into_iter().map(|w| i64::from(w.max(1))).collect();
        let total = weights.iter().sum();
        RoundRobin {
            current: vec![0; weights.len()],
            weights,
            total,
        }
    }

    /// The next node's index, skipping nodes for which `usable` says no. None if none is usable.
    pub fn pick(&mut self, mut usable: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut total = 0;
        for i in 0..self.weights.len() {
            if !usable(i) {
                continue;
            }
            self.current[i] += self.weights[i];
            total += self.weights[i];
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Sum of all weights (one full cycle of picks).
    pub fn total(&self) -> i64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let mut rr = RoundRobin::new([5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|_| rr.pick(|_| true).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn exact_shares_over_a_cycle_and_no_long_runs() {
        let mut rr = RoundRobin::new([1, 2]);
        let mut counts = [0; 2];
        let mut run = 0;
        let mut last = usize::MAX;
        for _ in 0..300 {
            let i = rr.pick(|_| true).unwrap();
            counts[i] += 1;
            run = if i == last { run + 1 } else { 1 };
            last = i;
            assert!(run <= 2, "node {i} picked {run} times in a row");
        }
        assert_eq!(counts, [100, 200]);
    }

    #[test]
    fn skips_unusable_nodes() {
        let mut rr = RoundRobin::new([1, 1, 1]);
        for _ in 0..10 {
            assert_ne!(rr.pick(|i| i != 1), Some(1));
        }
        assert_eq!(rr.pick(|_| false), None);
    }
}
