//! Advice: what is wrong with a node's pool, said plainly, from counters hearth keeps anyway.
//!
//! Every few seconds the advisor is shown each node's counters (summed over cores, as on
//! `/metrics`) and settings. It keeps the counters it was shown over the last [`WINDOW_MS`] and
//! judges what happened in that window against six rules, each naming the setting to change and
//! the figure that shows it: the pool is too small, the upstream closes idle connections first,
//! a cap stalls requests, requests meet connections the upstream closed, connects pile up
//! behind `max_connecting`, TLS sessions are not resumed. An advice appears when its rule holds
//! over the window and clears when it no longer does, so one burst keeps its advice up for a
//! minute and no longer. Nothing here reads a clock or does I/O: `observe` takes `now`, and the
//! caller logs the changes and serves the list.

use std::collections::VecDeque;

use crate::config::PoolSettings;
use crate::metrics::{NodeCounters, BUCKETS_MS};

use super::pool::{learned_idle_limit, CloseReason};

/// How far back the rules look.
pub const WINDOW_MS: u64 = 60_000;

/// A wait for a connection longer than this is a stall.
const SLOW_WAIT_MS: u64 = 1_000;

/// Handshakes in a window below which the resumption rate says nothing.
const MIN_HANDSHAKES: u64 = 10;

/// What an advice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PoolTooSmall,
    UpstreamClosesFirst,
    CapStalls,
    StaleReuse,
    ConnectStorm,
    TlsResumption,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::PoolTooSmall,
        Kind::UpstreamClosesFirst,
        Kind::CapStalls,
        Kind::StaleReuse,
        Kind::ConnectStorm,
        Kind::TlsResumption,
    ];

    /// The `kind` label on `/metrics` and the key in `/status.json`.
    pub fn token(self) -> &'static str {
        match self {
            Kind::PoolTooSmall => "pool_too_small",
            Kind::UpstreamClosesFirst => "upstream_closes_first",
            Kind::CapStalls => "cap_stalls",
            Kind::StaleReuse => "stale_reuse",
            Kind::ConnectStorm => "connect_storm",
            Kind::TlsResumption => "tls_resumption",
        }
    }
}

/// The settings of a node that the rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub pool: PoolSettings,
    pub max_connections: u32,
    pub max_connecting: u32,
}

/// One node as the advisor is shown it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Counters summed over cores since start.
    pub counters: NodeCounters,
    /// None when no upstream of the current configuration lists the node: it gets no advice.
    pub limits: Option<Limits>,
    /// The idle age at which the upstream was seen to close connections, if learned.
    pub learned_idle_ms: Option<u64>,
}

/// An advice in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    /// The node, by pool id.
    pub node: usize,
    pub kind: Kind,
    /// What is wrong and what to change, with the figure that shows it.
    pub text: String,
}

/// An advice that appeared (with its text) or cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub node: usize,
    pub kind: Kind,
    /// Some(text) when it appeared or its figures changed, None when it cleared.
    pub text: Option<String>,
}

/// The counters shown at one observation.
#[derive(Debug, Clone)]
struct Seen {
    at: u64,
    nodes: Vec<NodeCounters>,
}

#[derive(Debug, Default)]
pub struct Advisor {
    history: VecDeque<Seen>,
    /// In force, by node then kind.
    active: Vec<Vec<Advice>>,
}

impl Advisor {
    /// Shows the advisor every node's counters at `now` (ms); returns what appeared and cleared.
    /// An advice whose figures moved is not reported again: its line would repeat every pass.
    pub fn observe(&mut self, now: u64, nodes: &[Observed]) -> Vec<Change> {
        if self.history.is_empty() {
            // The first reading: counters count from start, so zeros are the baseline.
            self.history.push_back(Seen {
                at: now,
                nodes: Vec::new(),
            });
        }
        while self
            .history
            .front()
            .is_some_and(|s| s.at.saturating_add(WINDOW_MS) < now)
        {
            self.history.pop_front();
        }
        self.history.push_back(Seen {
            at: now,
            nodes: nodes.iter().map(|o| o.counters.clone()).collect(),
        });
        let base = &self.history[0];
        let mut changes = Vec::new();
        self.active
            .resize_with(nodes.len().max(self.active.len()), Vec::new);
        for (i, o) in nodes.iter().enumerate() {
            let zero = NodeCounters::default();
            let start = base.nodes.get(i).unwrap_or(&zero);
            // The largest need a purge cut short in the window.
            let need = self
                .history
                .iter()
                .filter_map(|s| s.nodes.get(i))
                .map(|c| c.size_short_of)
                .max()
                .unwrap_or(0);
            let now_on: Vec<(Kind, String)> = match o.limits {
                Some(l) => judge(&Window::between(start, &o.counters), need, &l, o),
                None => Vec::new(),
            };
            let was = &mut self.active[i];
            for (kind, text) in &now_on {
                match was.iter_mut().find(|a| a.kind == *kind) {
                    Some(a) => a.text.clone_from(text),
                    None => {
                        changes.push(Change {
                            node: i,
                            kind: *kind,
                            text: Some(text.clone()),
                        });
                        was.push(Advice {
                            node: i,
                            kind: *kind,
                            text: text.clone(),
                        });
                    }
                }
            }
            was.retain(|a| {
                let keep = now_on.iter().any(|(k, _)| *k == a.kind);
                if !keep {
                    changes.push(Change {
                        node: i,
                        kind: a.kind,
                        text: None,
                    });
                }
                keep
            });
            was.sort_by_key(|a| a.kind);
        }
        changes
    }

    /// Every advice in force, by node.
    pub fn active(&self) -> impl Iterator<Item = &Advice> {
        self.active.iter().flatten()
    }

    /// Whether `kind` is in force for `node`.
    pub fn has(&self, node: usize, kind: Kind) -> bool {
        self.active
            .get(node)
            .is_some_and(|v| v.iter().any(|a| a.kind == kind))
    }
}

/// What happened at a node over the window: the counters' growth.
struct Window {
    connects_pool_full: u64,
    evicted: u64,
    stale_closes: u64,
    closed_idle_count: u64,
    closed_idle_ms: u64,
    slow_waits: u64,
    queue_timeouts: u64,
    replays: u64,
    reused_failures: u64,
    connecting_capped: u64,
    tls_full: u64,
    tls_resumed: u64,
}

impl Window {
    fn between(a: &NodeCounters, b: &NodeCounters) -> Window {
        let d = |x: u64, y: u64| y.saturating_sub(x);
        // Waits in buckets whose lower bound is at least SLOW_WAIT_MS (and the +Inf bucket).
        let slow = |c: &NodeCounters| {
            c.wait
                .counts()
                .iter()
                .enumerate()
                .filter(|(j, _)| *j > 0 && BUCKETS_MS[j - 1] >= SLOW_WAIT_MS)
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        Window {
            connects_pool_full: d(a.connects_pool_full, b.connects_pool_full),
            evicted: d(
                a.closes[CloseReason::Evicted.index()],
                b.closes[CloseReason::Evicted.index()],
            ),
            stale_closes: d(
                a.closes[CloseReason::Stale.index()],
                b.closes[CloseReason::Stale.index()],
            ),
            closed_idle_count: d(
                a.upstream_closed_idle_age.count(),
                b.upstream_closed_idle_age.count(),
            ),
            closed_idle_ms: d(
                a.upstream_closed_idle_age.sum_ms(),
                b.upstream_closed_idle_age.sum_ms(),
            ),
            slow_waits: d(slow(a), slow(b)),
            queue_timeouts: d(a.queue_timeouts, b.queue_timeouts),
            replays: d(a.replays, b.replays),
            reused_failures: d(a.reused_failures, b.reused_failures),
            connecting_capped: d(a.connecting_capped, b.connecting_capped),
            tls_full: d(a.tls_full_handshakes, b.tls_full_handshakes),
            tls_resumed: d(a.tls_resumed_handshakes, b.tls_resumed_handshakes),
        }
    }
}

fn secs(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if s >= 10.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// The rules, over window `w`; `need` is the most idle connections a purge in the window
/// found the load needed on one core but `size` did not keep.
fn judge(w: &Window, need: u64, l: &Limits, o: &Observed) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let size = l.pool.size;
    if size > 0 && w.connects_pool_full > 0 && need > size as u64 {
        out.push((
            Kind::PoolTooSmall,
            format!(
                "the load needed {need} idle connections on one core but keepalive_pool.size keeps {size}: {} connections were opened again in requests' paths in the last minute ({} closed as evicted); raise keepalive_pool.size to at least {need}",
                w.connects_pool_full, w.evicted
            ),
        ));
    }
    if w.stale_closes > 0 && !l.pool.idle_auto && size > 0 {
        // The age at which the upstream closes: what was learned, else the mean in the window.
        let age = o
            .learned_idle_ms
            .or_else(|| (w.closed_idle_count > 0).then(|| w.closed_idle_ms / w.closed_idle_count));
        let ours = u64::try_from(l.pool.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        if let Some(age) = age.filter(|&a| a < ours) {
            out.push((
                Kind::UpstreamClosesFirst,
                format!(
                    "the upstream closes idle connections after about {} ({} such closes in the last minute); keepalive_pool.idle_timeout is {}: set it to \"auto\" or at most {}",
                    secs(age),
                    w.stale_closes,
                    secs(ours),
                    secs(learned_idle_limit(age))
                ),
            ));
        }
    }
    if w.slow_waits > 0 || w.queue_timeouts > 0 {
        let cap = if l.max_connections > 0 {
            format!("max_connections = {}", l.max_connections)
        } else {
            format!("max_connecting = {}", l.max_connecting)
        };
        out.push((
            Kind::CapStalls,
            format!(
                "{cap} made {} requests wait more than {} for a connection and {} time out in the queue in the last minute; raise it, or the upstream's capacity",
                w.slow_waits,
                secs(SLOW_WAIT_MS),
                w.queue_timeouts
            ),
        ));
    }
    if w.replays + w.reused_failures > 0 {
        out.push((
            Kind::StaleReuse,
            format!(
                "{} requests met a pooled connection that failed before answering in the last minute ({} replayed on a fresh one, {} answered with an error); keep keepalive_pool.idle_timeout below the upstream's own, or set it to \"auto\"",
                w.replays + w.reused_failures,
                w.replays,
                w.reused_failures
            ),
        ));
    }
    if w.connecting_capped > 0 && l.max_connecting > 0 {
        out.push((
            Kind::ConnectStorm,
            format!(
                "max_connecting = {} was reached {} times in the last minute: connects are piling up; keep connections warm (keepalive_pool.min_idle, preconnect) or raise max_connecting",
                l.max_connecting, w.connecting_capped
            ),
        ));
    }
    let handshakes = w.tls_full + w.tls_resumed;
    if handshakes >= MIN_HANDSHAKES && w.tls_full * 2 > handshakes {
        out.push((
            Kind::TlsResumption,
            format!(
                "{} of {handshakes} TLS handshakes in the last minute were full: sessions are not being resumed (does the upstream issue session tickets or keep a session cache?)",
                w.tls_full
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            pool: PoolSettings::default(),
            max_connections: 0,
            max_connecting: 0,
        }
    }

    fn seen(c: &NodeCounters, l: Limits) -> Vec<Observed> {
        vec![Observed {
            counters: c.clone(),
            limits: Some(l),
            learned_idle_ms: None,
        }]
    }

    /// Drives one rule: `bump` makes its event happen once at 10 s; the advice must appear then,
    /// stay while the event is within the window, and clear once it is not.
    fn appears_then_clears(kind: Kind, l: Limits, bump: impl Fn(&mut NodeCounters)) -> String {
        let mut a = Advisor::default();
        let mut c = NodeCounters::default();
        assert!(
            a.observe(0, &seen(&c, l)).is_empty(),
            "{kind:?}: nothing yet"
        );
        bump(&mut c);
        let changes = a.observe(10_000, &seen(&c, l));
        assert_eq!(changes.len(), 1, "{kind:?}: {changes:?}");
        assert_eq!((changes[0].node, changes[0].kind), (0, kind));
        let text = changes[0].text.clone().expect("appeared");
        assert!(a.has(0, kind));
        assert!(
            a.observe(60_000, &seen(&c, l)).is_empty(),
            "{kind:?}: still within the window"
        );
        let changes = a.observe(75_000, &seen(&c, l));
        assert_eq!(
            changes,
            [Change {
                node: 0,
                kind,
                text: None
            }],
            "{kind:?}: cleared a window after its event"
        );
        assert!(!a.has(0, kind));
        text
    }

    #[test]
    fn pool_too_small_names_the_size_to_set() {
        let l = Limits {
            pool: PoolSettings {
                size: 32,
                ..PoolSettings::default()
            },
            ..limits()
        };
        let text = appears_then_clears(Kind::PoolTooSmall, l, |c| {
            c.connects_pool_full += 17;
            c.closes[CloseReason::Evicted.index()] += 18;
            c.size_short_of = 50;
        });
        assert!(
            text.contains("keepalive_pool.size to at least 50") && text.contains("17 connections"),
            "{text}"
        );
    }

    #[test]
    fn an_upstream_that_closes_first_gets_the_timeout_to_set() {
        let text = appears_then_clears(Kind::UpstreamClosesFirst, limits(), |c| {
            c.closes[CloseReason::Stale.index()] += 2;
            c.upstream_closed_idle_age.record(2_000);
            c.upstream_closed_idle_age.record(2_000);
        });
        assert!(
            text.contains("after about 2.0 s")
                && text.contains("idle_timeout is 60 s")
                && text.contains("at most 1.5 s"),
            "{text}"
        );
        // With "auto", hearth already follows the upstream: no advice.
        let mut a = Advisor::default();
        let mut l = limits();
        l.pool.idle_auto = true;
        let mut c = NodeCounters::default();
        a.observe(0, &seen(&c, l));
        c.closes[CloseReason::Stale.index()] += 2;
        c.upstream_closed_idle_age.record(2_000);
        assert!(a.observe(10_000, &seen(&c, l)).is_empty());
    }

    #[test]
    fn a_cap_that_stalls_names_the_cap_and_the_waits() {
        let l = Limits {
            max_connections: 50,
            ..limits()
        };
        let text = appears_then_clears(Kind::CapStalls, l, |c| {
            for _ in 0..73 {
                c.wait.record(1_500);
            }
            c.wait.record(20); // a short wait is no stall
            c.queue_timeouts += 4;
        });
        assert!(
            text.contains("max_connections = 50 made 73 requests wait more than 1.0 s")
                && text.contains("4 time out"),
            "{text}"
        );
    }

    #[test]
    fn stale_reuse_counts_replays_and_failures() {
        let text = appears_then_clears(Kind::StaleReuse, limits(), |c| {
            c.replays += 3;
            c.reused_failures += 1;
        });
        assert!(
            text.contains("4 requests") && text.contains("3 replayed"),
            "{text}"
        );
    }

    #[test]
    fn a_connect_storm_names_max_connecting() {
        let l = Limits {
            max_connecting: 10,
            ..limits()
        };
        let text = appears_then_clears(Kind::ConnectStorm, l, |c| c.connecting_capped += 40);
        assert!(
            text.contains("max_connecting = 10 was reached 40 times"),
            "{text}"
        );
    }

    #[test]
    fn full_handshakes_say_resumption_is_not_working() {
        let text = appears_then_clears(Kind::TlsResumption, limits(), |c| {
            c.tls_full_handshakes += 9;
            c.tls_resumed_handshakes += 3;
        });
        assert!(text.contains("9 of 12 TLS handshakes"), "{text}");
        // A handful of handshakes, or mostly resumed ones, say nothing.
        for (full, resumed) in [(5, 0), (10, 30)] {
            let mut a = Advisor::default();
            let mut c = NodeCounters::default();
            a.observe(0, &seen(&c, limits()));
            c.tls_full_handshakes += full;
            c.tls_resumed_handshakes += resumed;
            assert!(a.observe(10_000, &seen(&c, limits())).is_empty());
        }
    }

    #[test]
    fn the_first_reading_counts_from_start() {
        let mut a = Advisor::default();
        let c = NodeCounters {
            replays: 2,
            ..NodeCounters::default()
        };
        assert_eq!(a.observe(5_000, &seen(&c, limits())).len(), 1);
    }

    #[test]
    fn a_node_out_of_the_configuration_gets_no_advice_and_figures_do_not_repeat_lines() {
        let mut a = Advisor::default();
        let mut c = NodeCounters::default();
        let mut gone = seen(&c, limits());
        gone[0].limits = None;
        a.observe(0, &gone);
        c.replays += 5;
        gone[0].counters = c.clone();
        assert!(a.observe(1_000, &gone).is_empty());
        // Back in the configuration: the replays are within the window.
        assert_eq!(a.observe(2_000, &seen(&c, limits())).len(), 1);
        c.replays += 5;
        assert!(
            a.observe(3_000, &seen(&c, limits())).is_empty(),
            "new figures update the text without a new line"
        );
        assert!(a.active().next().unwrap().text.contains("10 requests"));
    }
}
