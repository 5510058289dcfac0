//! Node choice for one upstream, per core: smooth weighted round robin, weighted least
//! connections, consistent hashing and lowest latency (EWMA), plus the per-node passive health
//! state the core keeps.
//!
//! Everything here is sans-io and owned by one core: cores balance independently, which keeps
//! the pick free of shared writes, and time comes in as `now` (milliseconds). What a pick needs
//! to know of a node beyond the upstream's own configuration (requests in flight, recent latency,
//! whether it may be used) the core passes in by node index, so the per-node state survives
//! reloads in the core's tables by pool id while a `Balancer` is rebuilt with each generation.
//!
//! Invariants:
//! - A pick never allocates. Rings are built once, when the generation is.
//! - Every pick takes a `usable(i)` predicate and returns None only when no node is usable;
//!   [`Balancer::choose`] then widens the choice (untried nodes of any health, then every node),
//!   because neither APISIX nor nginx fails a request only because every node is marked down.
//! - Smooth WRR: over one cycle of `sum(weights)` picks each node is chosen exactly `weight`
//!   times, interleaved rather than in runs (weights 5,1,1 give a a b a c a a).
//! - The hash ring places a node's points by hashing its address as written, never its index,
//!   so adding or removing a node moves only the keys of the arcs it gains or loses (about 1/n).
//!
//! The kind of choice an upstream asks for, [`Balance`], is defined here and parsed by
//! [`parse_balance`]; `config` validates with it and re-exports the type as `config::Balance`.

use crate::route::{parse_var, Var};

/// Node choice, per core.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round robin, as nginx.
    #[default]
    RoundRobin,
    /// Fewest active requests relative to weight, per core.
    LeastConn,
    /// Consistent hashing of the value of `key`.
    Chash { key: Var },
    /// Lowest recent latency (exponentially weighted moving average).
    Ewma,
}

/// Why `type`, `hash_on` and `key` make no [`Balance`]: which of the three is wrong, and how.
/// The message does not repeat the field, which callers name their own way (a config key path,
/// an APISIX field path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceError {
    /// `type`, `hash_on` or `key`.
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for BalanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Parses APISIX's `type`, `hash_on` and `key` into a [`Balance`].
pub fn parse_balance(
    kind: &str,
    hash_on: Option<&str>,
    key: Option<&str>,
) -> Result<Balance, BalanceError> {
    let error = |field, message: String| BalanceError { field, message };
    match kind {
        "roundrobin" => Ok(Balance::RoundRobin),
        "least_conn" => Ok(Balance::LeastConn),
        "ewma" => Ok(Balance::Ewma),
        "chash" => {
            let key = key.ok_or_else(|| error("key", "type \"chash\" needs a key".into()))?;
            let var = match hash_on.unwrap_or("vars") {
                "vars" => parse_var(key).map_err(|e| error("key", e))?,
                "header" => Var::Header(key.to_ascii_lowercase().replace('_', "-")),
                "cookie" => Var::Cookie(key.to_owned()),
                other => {
                    return Err(error(
                        "hash_on",
                        format!("expected \"vars\", \"header\" or \"cookie\", found {other:?}"),
                    ))
                }
            };
            Ok(Balance::Chash { key: var })
        }
        other => Err(error(
            "type",
            format!(
                "expected \"roundrobin\", \"least_conn\", \"chash\" or \"ewma\", found {other:?}"
            ),
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

/// Virtual points per unit of weight on a hash ring. A node with n points holds a share of the
/// keys about 1/sqrt(n) off its weight: nginx's `hash ... consistent` uses 160 per weight (some
/// 8% off); 2,048 keeps shares within about 2%. The count must not depend on how many nodes
/// there are, or adding one would move keys between the others. 16 KiB per unit of weight per
/// chash upstream per core, built once per generation.
const POINTS_PER_UNIT: usize = 2048;
/// Most points one ring holds, so a large weight cannot build a large ring; weights are scaled
/// down to fit, every node keeping at least one point.
const MAX_POINTS: usize = 1 << 16;
/// Time constant of the latency average: a sample's weight in it falls to 1/e after 10 s, and an
/// unused node's score decays towards zero at the same pace, so it is tried again in time.
const DECAY_MS: f64 = 10_000.0;

/// What a pick may read of a node besides its weight, by index in the upstream's node list.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Requests in flight to the node on this core (connections attached or connecting, and
    /// requests queued for one).
    pub active: u32,
    /// The node's latency score ([`Latency::score`]); None before its first sample.
    pub latency_ms: Option<f64>,
}

/// Nodes already tried by one request, as a bitmask over the node index. Upstreams with more
/// than 64 nodes wrap around (node i shares bit i % 64), which only makes a retry skip a few
/// untried nodes, never try one twice while others remain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    pub fn has(self, i: usize) -> bool {
        self.0 & (1 << (i % 64)) != 0
    }

    pub fn add(&mut self, i: usize) {
        self.0 |= 1 << (i % 64);
    }

    /// Every one of `n` nodes has been tried.
    pub fn covers(self, n: usize) -> bool {
        if n >= 64 {
            self.0 == u64::MAX
        } else {
            let all = (1u64 << n) - 1;
            self.0 & all == all
        }
    }
}

/// The balancer of one upstream on one core, rebuilt with each configuration generation.
#[derive(Debug, Clone)]
pub struct Balancer {
    weights: Vec<u32>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    RoundRobin(RoundRobin),
    /// The round robin orders nodes that tie on load.
    LeastConn(RoundRobin),
    Chash(Ring),
    Ewma {
        /// Where the search starts, so untried nodes and ties are taken in turn.
        cursor: usize,
    },
}

impl Default for Balancer {
    /// An empty balancer: holds no heap memory, so the core can take one out of its table for
    /// the length of a pick and put it back.
    fn default() -> Balancer {
        Balancer {
            weights: Vec::new(),
            kind: Kind::RoundRobin(RoundRobin::new([])),
        }
    }
}

impl Balancer {
    /// `nodes`: each node's address as written (the ring hashes it) and weight, in config order.
    pub fn new<'a>(balance: &Balance, nodes: impl IntoIterator<Item = (&'a str, u32)>) -> Balancer {
        let nodes: Vec<(&str, u32)> = nodes.into_iter().collect();
        let weights: Vec<u32> = nodes.iter().map(|&(_, w)| w.max(1)).collect();
        let kind = match balance {
            Balance::RoundRobin => Kind::RoundRobin(RoundRobin::new(weights.iter().copied())),
            Balance::LeastConn => Kind::LeastConn(RoundRobin::new(weights.iter().copied())),
            Balance::Chash { .. } => Kind::Chash(Ring::new(&nodes)),
            Balance::Ewma => Kind::Ewma { cursor: 0 },
        };
        Balancer { weights, kind }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// One pick among the nodes `usable` allows. `hash` is the request's key for consistent
    /// hashing (ignored by the others); `load` describes node i. None when no node is usable.
    pub fn pick(
        &mut self,
        hash: u64,
        load: impl Fn(usize) -> Load,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match &mut self.kind {
            Kind::RoundRobin(rr) => rr.pick(usable),
            Kind::LeastConn(rr) => {
                // Fewest active per unit of weight: a/w < b/v compared as a*v < b*w, exactly.
                let mut best: Option<(u64, u64)> = None;
                for (i, &w) in self.weights.iter().enumerate() {
                    if !usable(i) {
                        continue;
                    }
                    let (a, w) = (u64::from(load(i).active), u64::from(w));
                    if best.is_none_or(|(ba, bw)| a * bw < ba * w) {
                        best = Some((a, w));
                    }
                }
                let (ba, bw) = best?;
                let weights = &self.weights;
                rr.pick(|i| {
                    usable(i) && u64::from(load(i).active) * bw == ba * u64::from(weights[i])
                })
            }
            Kind::Chash(ring) => ring.pick(hash, usable),
            Kind::Ewma { cursor } => ewma_pick(self.weights.len(), cursor, load, usable),
        }
    }

    /// What `choose` answers for an upstream of one node, whatever the type (a pick falls back
    /// to an unusable node when no node is usable), without needing the node's load or health;
    /// None when there are more. Callers that must gather those for `choose` ask here first.
    pub fn sole(&self, tried: &mut Tried) -> Option<usize> {
        if self.len() != 1 {
            return None;
        }
        if tried.covers(1) {
            *tried = Tried::default();
        }
        tried.add(0);
        Some(0)
    }

    /// The node for a request's next try: an untried usable node, else an untried one whatever
    /// its health, and once every node has been tried, any node again (a new round). Marks the
    /// choice in `tried`. None only for an upstream without nodes.
    pub fn choose(
        &mut self,
        hash: u64,
        load: impl Fn(usize) -> Load,
        tried: &mut Tried,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if let Some(i) = self.sole(tried) {
            return Some(i);
        }
        if tried.covers(self.len()) {
            *tried = Tried::default();
        }
        let t = *tried;
        let i = match self.pick(hash, &load, |i| !t.has(i) && usable(i)) {
            Some(i) => i,
            None => self.pick(hash, &load, |i| !t.has(i))?,
        };
        tried.add(i);
        Some(i)
    }
}

/// Lowest latency: untried nodes first (fewest in flight, taken in turn), then the lowest
/// `(latency + 1 ms) * (active + 1)`, so a fast node does not draw every request once it is also
/// the busiest. Upstreams are small enough to look at every node, where the power of two choices
/// would send a third of the requests to the middle of three nodes. Ties go in turn from a
/// rotating start. Weights are not used, as in APISIX.
fn ewma_pick(
    n: usize,
    cursor: &mut usize,
    load: impl Fn(usize) -> Load,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut untried: Option<(usize, u32)> = None;
    let mut best: Option<(usize, f64)> = None;
    for k in 0..n {
        let i = (*cursor + k) % n;
        if !usable(i) {
            continue;
        }
        let l = load(i);
        match l.latency_ms {
            None => {
                if untried.is_none_or(|(_, a)| l.active < a) {
                    untried = Some((i, l.active));
                }
            }
            Some(ms) => {
                let cost = (ms + 1.0) * f64::from(l.active.saturating_add(1));
                if best.is_none_or(|(_, c)| cost < c) {
                    best = Some((i, cost));
                }
            }
        }
    }
    let i = untried.map(|(i, _)| i).or(best.map(|(i, _)| i))?;
    *cursor = (i + 1) % n;
    Some(i)
}

/// A consistent-hash ring: points sorted by hash, each naming its node.
#[derive(Debug, Clone, Default)]
struct Ring {
    /// (high 32 bits of the point's hash, node index): 8 bytes a point.
    points: Vec<(u32, u32)>,
}

impl Ring {
    fn new(nodes: &[(&str, u32)]) -> Ring {
        let g = nodes.iter().fold(0, |g, &(_, w)| gcd(g, w.max(1)));
        let units: Vec<usize> = nodes
            .iter()
            .map(|&(_, w)| (w.max(1) / g.max(1)) as usize)
            .collect();
        let total: usize = units.iter().sum();
        let per_unit = (MAX_POINTS / total.max(1)).clamp(1, POINTS_PER_UNIT);
        let mut points = Vec::new();
        for (i, (&(name, _), &u)) in nodes.iter().zip(units.iter()).enumerate() {
            let count = if total * per_unit > MAX_POINTS {
                (u * MAX_POINTS / total).max(1)
            } else {
                u * per_unit
            };
            for j in 0..count {
                let h = fnv1a(
                    fnv1a(FNV_OFFSET, name.as_bytes()),
                    &(j as u32).to_le_bytes(),
                );
                points.push(((mix(h) >> 32) as u32, i as u32));
            }
        }
        // Equal hashes (two nodes' points colliding) are ordered by node index, so the ring does
        // not depend on the order the points were pushed in.
        points.sort_unstable();
        Ring { points }
    }

    /// The node of the first point at or after `hash` whose node is usable, going round once.
    fn pick(&self, hash: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        let hash = (hash >> 32) as u32;
        let start = self.points.partition_point(|p| p.0 < hash);
        let mut last = u32::MAX;
        for k in 0..n {
            let node = self.points[(start + k) % n].1;
            // Runs of one node's points are common; ask about it once per run.
            if node == last {
                continue;
            }
            if usable(node as usize) {
                return Some(node as usize);
            }
            last = node;
        }
        None
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finaliser: FNV-1a alone leaves similar keys (`user1`, `user2`) close
/// together, which would put them on the same arc of the ring.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring position of a request's key. An empty key (a missing variable) is a value like any
/// other: every request without it lands on the same node.
pub fn hash_key(key: &[u8]) -> u64 {
    mix(fnv1a(FNV_OFFSET, key))
}

/// A node's recent response time: an exponentially weighted moving average whose memory is
/// measured in time, not samples (a sample `dt` after the last weighs `1 - e^(-dt/10s)`), as
/// APISIX's `ewma` balancer keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    ewma_ms: f64,
    at: u64,
    sampled: bool,
}

impl Latency {
    pub fn observe(&mut self, now: u64, ms: u64) {
        let sample = ms as f64;
        if self.sampled {
            let w = decay(now.saturating_sub(self.at));
            self.ewma_ms = self.ewma_ms * w + sample * (1.0 - w);
        } else {
            self.ewma_ms = sample;
            self.sampled = true;
        }
        self.at = now;
    }

    /// The average decayed towards zero by the time since the last sample, so a node left
    /// alone because it was slow is tried again once its score falls under the others'. None
    /// before the first sample.
    pub fn score(&self, now: u64) -> Option<f64> {
        self.sampled
            .then(|| self.ewma_ms * decay(now.saturating_sub(self.at)))
    }
}

fn decay(dt_ms: u64) -> f64 {
    (-(dt_ms as f64) / DECAY_MS).exp()
}

/// Passive health of one node on one core (nginx's `max_fails` and `fail_timeout`): failures
/// are counted in a window of `fail_timeout` from the first; `max_fails` of them take the node
/// out for `fail_timeout`. A success clears the count and brings the node back at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passive {
    fails: u32,
    window_start: u64,
    down_until: u64,
}

impl Passive {
    pub fn usable(&self, now: u64) -> bool {
        now >= self.down_until
    }

    /// Counts a failure; true when it takes the node out. `max_fails` or `fail_timeout_ms` of 0
    /// turns passive health off. A failure while out (a try made because nothing else was left)
    /// extends the time out without counting as a new event.
    pub fn fail(&mut self, now: u64, max_fails: u32, fail_timeout_ms: u64) -> bool {
        if max_fails == 0 || fail_timeout_ms == 0 {
            return false;
        }
        if !self.usable(now) {
            self.down_until = now + fail_timeout_ms;
            return false;
        }
        if self.fails == 0 || now >= self.window_start + fail_timeout_ms {
            self.fails = 0;
            self.window_start = now;
        }
        self.fails += 1;
        if self.fails >= max_fails {
            self.fails = 0;
            self.down_until = now + fail_timeout_ms;
            return true;
        }
        false
    }

    pub fn ok(&mut self) {
        self.fails = 0;
        self.down_until = 0;
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

    fn rr_seq(b: &mut Balancer, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| b.pick(0, |_| Load::default(), |_| true).unwrap())
            .collect()
    }

    #[test]
    fn round_robin_balancer_keeps_the_nginx_sequence() {
        let mut b = Balancer::new(&Balance::RoundRobin, [("a:1", 5), ("b:1", 1), ("c:1", 1)]);
        assert_eq!(rr_seq(&mut b, 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_conn_takes_fewest_active_per_weight_and_breaks_ties_by_wrr() {
        let table: &[(&[u32], &[u32], usize)] = &[
            // weights, active, expected
            (&[1, 1, 1], &[2, 0, 1], 1),
            (&[3, 1], &[2, 1], 0), // 2/3 < 1/1
            (&[3, 1], &[4, 1], 1), // 4/3 > 1/1
            (&[1, 1, 1], &[0, 5, 5], 0),
        ];
        for &(weights, active, want) in table {
            let nodes: Vec<(&str, u32)> = weights.iter().map(|&w| ("n:1", w)).collect();
            let mut b = Balancer::new(&Balance::LeastConn, nodes);
            let got = b.pick(
                0,
                |i| Load {
                    active: active[i],
                    latency_ms: None,
                },
                |_| true,
            );
            assert_eq!(got, Some(want), "weights {weights:?} active {active:?}");
        }
        // All idle: ties all round, so the smooth WRR order decides.
        let mut b = Balancer::new(&Balance::LeastConn, [("a:1", 5), ("b:1", 1), ("c:1", 1)]);
        assert_eq!(rr_seq(&mut b, 7), vec![0, 0, 1, 0, 2, 0, 0]);
        // An unusable node is skipped even when it is the least loaded.
        let got = b.pick(
            0,
            |i| Load {
                active: [0, 3, 3][i],
                latency_ms: None,
            },
            |i| i != 0,
        );
        assert!(matches!(got, Some(1 | 2)));
    }

    fn ring_nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn chash(names: &[String], weights: &[u32]) -> Balancer {
        let key = Var::Header("x-user".into());
        Balancer::new(
            &Balance::Chash { key },
            names
                .iter()
                .map(String::as_str)
                .zip(weights.iter().copied()),
        )
    }

    fn map_keys(b: &mut Balancer, names: &[String], keys: usize) -> Vec<String> {
        (0..keys)
            .map(|k| {
                let h = hash_key(format!("user-{k}").as_bytes());
                names[b.pick(h, |_| Load::default(), |_| true).unwrap()].clone()
            })
            .collect()
    }

    #[test]
    fn chash_spreads_keys_and_moves_about_one_nth_when_a_node_is_added_or_removed() {
        const KEYS: usize = 10_000;
        let four = ring_nodes(4);
        let before = map_keys(&mut chash(&four, &[1; 4]), &four, KEYS);
        for n in &four {
            let share = before.iter().filter(|m| *m == n).count() as f64 / KEYS as f64;
            // Within 5% of the weight's share (0.25).
            assert!(
                (0.2375..=0.2625).contains(&share),
                "{n} holds {share} of the keys"
            );
        }
        // Add a fifth node: about 1/5 of the keys move, and all of them to the new node.
        let five = ring_nodes(5);
        let after = map_keys(&mut chash(&five, &[1; 5]), &five, KEYS);
        let moved: Vec<usize> = (0..KEYS).filter(|&k| before[k] != after[k]).collect();
        let frac = moved.len() as f64 / KEYS as f64;
        assert!(
            (0.15..0.25).contains(&frac),
            "adding a node moved {frac} of the keys"
        );
        assert!(moved.iter().all(|&k| after[k] == five[4]));
        // Remove a node: only its keys move (about 1/4), spread over the others.
        let three: Vec<String> = four[1..].to_vec();
        let after = map_keys(&mut chash(&three, &[1; 3]), &three, KEYS);
        let moved: Vec<usize> = (0..KEYS).filter(|&k| before[k] != after[k]).collect();
        let frac = moved.len() as f64 / KEYS as f64;
        assert!((0.20..0.30).contains(&frac), "removing a node moved {frac}");
        assert!(moved.iter().all(|&k| before[k] == four[0]));
    }

    #[test]
    fn chash_honours_weights_and_sends_a_down_nodes_keys_to_the_next_point() {
        let names = ring_nodes(2);
        let mut b = chash(&names, &[1, 3]);
        let map = map_keys(&mut b, &names, 10_000);
        let share = map.iter().filter(|m| **m == names[1]).count() as f64 / 10_000.0;
        assert!(
            (0.7125..=0.7875).contains(&share),
            "weight 3 of 4 got {share}"
        );
        // Weights 5:3:2 over 10,000 keys: every share within 5% of its weight.
        let names = ring_nodes(3);
        let map = map_keys(&mut chash(&names, &[5, 3, 2]), &names, 10_000);
        for (n, w) in names.iter().zip([0.5, 0.3, 0.2]) {
            let share = map.iter().filter(|m| *m == n).count() as f64 / 10_000.0;
            assert!(
                (share - w).abs() <= w * 0.05,
                "{n}: weight share {w}, key share {share}"
            );
        }

        let names = ring_nodes(3);
        let mut b = chash(&names, &[1; 3]);
        for k in 0..1_000 {
            let h = hash_key(format!("k{k}").as_bytes());
            let home = b.pick(h, |_| Load::default(), |_| true).unwrap();
            let away = b.pick(h, |_| Load::default(), |i| i != home).unwrap();
            assert_ne!(home, away);
            // The key's fallback is stable too, and it comes home when its node does.
            assert_eq!(b.pick(h, |_| Load::default(), |i| i != home), Some(away));
            assert_eq!(b.pick(h, |_| Load::default(), |_| true), Some(home));
        }
        assert_eq!(b.pick(1, |_| Load::default(), |_| false), None);
    }

    #[test]
    fn chash_rings_stay_bounded_for_large_weights() {
        let names = ring_nodes(3);
        let b = chash(&names, &[1_000_000, 1, 7]);
        let Kind::Chash(ring) = &b.kind else {
            panic!("a chash balancer")
        };
        assert!(ring.points.len() <= MAX_POINTS + 3);
        for i in 0..3u32 {
            assert!(
                ring.points.iter().any(|p| p.1 == i),
                "node {i} has no point"
            );
        }
        assert_eq!(
            hash_key(b""),
            hash_key(b""),
            "an empty key hashes like any value"
        );
    }

    #[test]
    fn ewma_tries_untried_nodes_first_then_prefers_the_fast_one() {
        let mut b = Balancer::new(&Balance::Ewma, [("a:1", 1), ("b:1", 1), ("c:1", 1)]);
        let mut lat = [Latency::default(); 3];
        let rtt = [50, 2, 20];
        let mut counts = [0; 3];
        let mut slow_again = 0;
        let mut now = 0;
        // One request every 5 ms for 60 s of virtual time.
        for step in 0..12_000 {
            now += 5;
            let i = b
                .pick(
                    0,
                    |i| Load {
                        active: 0,
                        latency_ms: lat[i].score(now),
                    },
                    |_| true,
                )
                .unwrap();
            if step < 3 {
                assert_eq!(lat[i].score(now), None, "an untried node goes first");
            }
            if step > 3 && i == 0 {
                slow_again = now;
            }
            lat[i].observe(now, rtt[i]);
            counts[i] += 1;
        }
        assert!(counts[1] > 11_900, "fast node got {counts:?}");
        // Left alone, the slow nodes' scores decay until they are tried again (after some 30 s).
        assert!(
            counts[2] > 1 && slow_again > 20_000,
            "{counts:?}, slow again at {slow_again}"
        );
    }

    #[test]
    fn ewma_spreads_load_when_the_fast_node_is_busy() {
        let mut b = Balancer::new(&Balance::Ewma, [("a:1", 1), ("b:1", 1)]);
        let load = |i: usize| Load {
            active: [20, 0][i],
            latency_ms: Some([1.0, 5.0][i]),
        };
        assert_eq!(b.pick(0, load, |_| true), Some(1));
        assert_eq!(b.pick(0, load, |i| i == 0), Some(0));
    }

    #[test]
    fn choose_tries_every_node_once_preferring_usable_ones_then_starts_over() {
        let mut b = Balancer::new(&Balance::RoundRobin, [("a:1", 1), ("b:1", 1), ("c:1", 1)]);
        let mut tried = Tried::default();
        let down = |i: usize| i != 1;
        let mut seq = Vec::new();
        for _ in 0..4 {
            seq.push(b.choose(0, |_| Load::default(), &mut tried, down).unwrap());
        }
        let mut first = seq[..3].to_vec();
        assert_eq!(first[2], 1, "the down node is tried last: {seq:?}");
        first.sort_unstable();
        assert_eq!(first, vec![0, 1, 2], "each node once: {seq:?}");
        assert_ne!(seq[3], 1, "a new round prefers usable nodes again");

        let mut t = Tried::default();
        for i in 0..64 {
            assert!(!t.covers(70));
            t.add(i);
        }
        assert!(t.covers(70) && t.has(64 + 3), "node i shares bit i % 64");
    }

    #[test]
    fn passive_health_counts_failures_in_a_window() {
        let mut p = Passive::default();
        // Two failures 5 s apart with max_fails 2 and fail_timeout 10 s: out for 10 s.
        assert!(!p.fail(1_000, 2, 10_000));
        assert!(p.fail(6_000, 2, 10_000));
        assert!(!p.usable(15_999) || !p.usable(6_000));
        assert!(p.usable(16_000));
        // Failures further apart than the window do not add up.
        assert!(!p.fail(20_000, 2, 10_000));
        assert!(!p.fail(31_000, 2, 10_000));
        // A success clears the count.
        p.ok();
        assert!(!p.fail(32_000, 2, 10_000));
        // Off when max_fails is 0.
        let mut off = Passive::default();
        for t in 0..10 {
            assert!(!off.fail(t, 0, 10_000));
        }
        assert!(off.usable(0));
        // A failure while out extends it, without a new event.
        let mut p = Passive::default();
        assert!(p.fail(0, 1, 1_000));
        assert!(!p.fail(500, 1, 1_000));
        assert!(!p.usable(1_499));
        assert!(p.usable(1_500));
        p.fail(2_000, 1, 1_000);
        p.ok();
        assert!(p.usable(2_001), "a success brings the node back");
    }

    #[test]
    fn hash_keys_read_what_apisix_reads() {
        let raw = b"GET http://Example.COM:8080/a/b?x=1&id=42&e=&flag HTTP/1.1\r\n\
                    Host: ignored\r\nX_User-Id: u-7\r\nCookie: a=1; sid=abc \r\n\
                    Cookie: other=2\r\n\r\n";
        let mut headers = Vec::new();
        let h = crate::http::head::parse_request(raw, &Default::default(), &mut headers)
            .unwrap()
            .unwrap();
        let req = crate::route::Request {
            method: h.method_span.of(raw),
            target: h.target.of(raw),
            host: h.host.map(|s| s.of(raw)),
            remote: "192.0.2.7".parse().unwrap(),
            headers: &headers,
            src: raw,
        };
        let table: &[(&str, &str)] = &[
            ("uri", "/a/b"),
            ("host", "example.com"),
            ("request_method", "GET"),
            ("remote_addr", "192.0.2.7"),
            ("arg_id", "42"),
            ("arg_e", ""),
            ("arg_flag", ""),
            ("arg_missing", ""),
            ("cookie_sid", "abc"),
            ("cookie_other", "2"),
            ("cookie_none", ""),
            ("http_x-user-id", "u-7"),
            ("http_X_USER_ID", "u-7"),
            ("http_absent", ""),
        ];
        for &(name, want) in table {
            let var = parse_var(name).unwrap();
            let mut vars = crate::route::Vars::new(&req);
            let got = vars.get(&var);
            assert_eq!(std::str::from_utf8(got).unwrap(), want, "{name}");
        }
    }
}
