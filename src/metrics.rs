//! Per-core counters, summed across cores on demand.
//!
//! Each core owns a `Counters` and bumps plain integers in it: no atomics, no sharing. A reader
//! asks every core for a copy by control message and adds them up (`Counters::merge`), so the
//! hot path pays an increment and nothing else.

use std::fmt::Write as _;

use crate::cause::Cause;
use crate::probe::Verdict;
use crate::upstream::pool::CloseReason;

/// Upper bounds of histogram buckets, in milliseconds (the last bucket is +Inf). They span a
/// fast upstream's response (1 ms) to an idle connection's age (an hour).
pub const BUCKETS_MS: [u64; 16] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 3_600_000,
];

/// A fixed-bucket histogram of durations in milliseconds; plain integers, no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot counts values over every bound.
    counts: [u64; BUCKETS_MS.len() + 1],
    sum_ms: u64,
}

impl Histogram {
    pub fn record(&mut self, ms: u64) {
        let i = BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(BUCKETS_MS.len());
        self.counts[i] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.sum_ms = self.sum_ms.saturating_add(o.sum_ms);
    }

    /// Prometheus histogram lines (seconds, cumulative buckets) for `name{labels}`.
    fn render(&self, s: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            cum += self.counts[i];
            let _ = writeln!(
                s,
                "{name}_bucket{{{labels},le=\"{}\"}} {cum}",
                *b as f64 / 1000.0
            );
        }
        cum += self.counts[BUCKETS_MS.len()];
        let _ = writeln!(s, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
        let _ = writeln!(s, "{name}_sum{{{labels}}} {}", self.sum_ms as f64 / 1000.0);
        let _ = writeln!(s, "{name}_count{{{labels}}} {cum}");
    }
}

/// Counters for one upstream node on one core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub requests: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub reuses: u64,
    /// Requests resent on a fresh connection after a reused one failed before answering.
    pub replays: u64,
    /// Idle connections given to another core whose requests were waiting for this node.
    pub handed_over: u64,
    /// Requests that had to wait for a connection, and those that gave up (503).
    pub queued: u64,
    pub queue_timeouts: u64,
    /// Requests that came to this node as a retry after another node failed them.
    pub retries: u64,
    /// Failures counted against the node by passive health (connect failures and timeouts,
    /// fresh connections lost before a response byte, read timeouts).
    pub failures: u64,
    /// Times passive health took the node out for `fail_timeout`.
    pub marked_down: u64,
    /// Requests whose client went away before their answer was complete.
    pub client_aborts: u64,
    pub closes: [u64; CloseReason::ALL.len()],
    /// Idle age of a pooled connection when a request reused it.
    pub reuse_idle_age: Histogram,
    /// Idle age of a pooled connection when the upstream closed it (or sent stray bytes).
    pub upstream_closed_idle_age: Histogram,
    /// Time a request waited in the queue for a connection.
    pub wait: Histogram,
    /// From the request's head arriving to the upstream's response head.
    pub response: Histogram,
    /// Final responses from the node by class: 1xx (101) to 5xx.
    pub responses: [u64; 5],
    /// TLS handshakes to an https node: full, resumed from a session, failed.
    pub tls_full_handshakes: u64,
    pub tls_resumed_handshakes: u64,
    pub tls_handshake_failures: u64,
    /// Gauges, filled in when a snapshot is taken.
    pub idle_now: u64,
    pub open_now: u64,
    pub waiters_now: u64,
}

impl NodeCounters {
    pub fn closed(&mut self, why: CloseReason) {
        self.closes[why.index()] += 1;
    }

    fn merge(&mut self, o: &NodeCounters) {
        self.requests += o.requests;
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.reuses += o.reuses;
        self.replays += o.replays;
        self.handed_over += o.handed_over;
        self.queued += o.queued;
        self.queue_timeouts += o.queue_timeouts;
        self.retries += o.retries;
        self.failures += o.failures;
        self.marked_down += o.marked_down;
        self.client_aborts += o.client_aborts;
        self.tls_full_handshakes += o.tls_full_handshakes;
        self.tls_resumed_handshakes += o.tls_resumed_handshakes;
        self.tls_handshake_failures += o.tls_handshake_failures;
        for (a, b) in self.closes.iter_mut().zip(o.closes.iter()) {
            *a += b;
        }
        self.reuse_idle_age.merge(&o.reuse_idle_age);
        self.upstream_closed_idle_age
            .merge(&o.upstream_closed_idle_age);
        self.wait.merge(&o.wait);
        self.response.merge(&o.response);
        for (a, b) in self.responses.iter_mut().zip(o.responses.iter()) {
            *a += b;
        }
        self.idle_now += o.idle_now;
        self.open_now += o.open_now;
        self.waiters_now += o.waiters_now;
    }

    /// Counts a final response by its class.
    pub fn responded(&mut self, status: u16) {
        if let Some(slot) = self
            .responses
            .get_mut(usize::from(status / 100).wrapping_sub(1))
        {
            *slot += 1;
        }
    }
}

/// A per-node metric: name, Prometheus type, and how to read it.
type Series = (&'static str, &'static str, fn(&NodeCounters) -> u64);

/// Status codes hearth answers itself, in the order of `Counters::answers`.
pub const ANSWER_CODES: [u16; 12] = [400, 404, 405, 408, 413, 414, 431, 500, 501, 502, 503, 504];

/// Everything one core counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub requests: u64,
    pub client_open_now: u64,
    /// Canned answers by status, indexed like `ANSWER_CODES`.
    pub answers: [u64; ANSWER_CODES.len()],
    /// Requests hearth answered or cut itself, by cause (indexed like `Cause::ALL`).
    pub failures: [u64; Cause::ALL.len()],
    /// Body bytes moved with splice(2), client to upstream and upstream to client.
    pub spliced_request_bytes: u64,
    pub spliced_response_bytes: u64,
    /// Indexed by global node id (see `runtime::core`).
    pub nodes: Vec<NodeCounters>,
}

impl Counters {
    pub fn with_nodes(n: usize) -> Counters {
        Counters {
            nodes: vec![NodeCounters::default(); n],
            ..Counters::default()
        }
    }

    pub fn failed(&mut self, cause: Cause) {
        self.failures[cause as usize] += 1;
    }

    pub fn answered(&mut self, status: u16) {
        if let Some(i) = ANSWER_CODES.iter().position(|&c| c == status) {
            self.answers[i] += 1;
        }
    }

    pub fn merge(&mut self, o: &Counters) {
        self.accepted += o.accepted;
        self.requests += o.requests;
        self.client_open_now += o.client_open_now;
        self.spliced_request_bytes += o.spliced_request_bytes;
        self.spliced_response_bytes += o.spliced_response_bytes;
        for (a, b) in self.answers.iter_mut().zip(o.answers.iter()) {
            *a += b;
        }
        for (a, b) in self.failures.iter_mut().zip(o.failures.iter()) {
            *a += b;
        }
        if self.nodes.len() < o.nodes.len() {
            self.nodes.resize(o.nodes.len(), NodeCounters::default());
        }
        for (a, b) in self.nodes.iter_mut().zip(o.nodes.iter()) {
            a.merge(b);
        }
    }

    /// Prometheus text exposition. `node_labels[i]` is `upstream="..",node=".."` for node i.
    pub fn render(&self, node_labels: &[String]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# TYPE hearth_client_connections_accepted_total counter");
        let _ = writeln!(
            s,
            "hearth_client_connections_accepted_total {}",
            self.accepted
        );
        let _ = writeln!(s, "# TYPE hearth_client_connections_open gauge");
        let _ = writeln!(s, "hearth_client_connections_open {}", self.client_open_now);
        let _ = writeln!(s, "# TYPE hearth_client_requests_total counter");
        let _ = writeln!(s, "hearth_client_requests_total {}", self.requests);
        let _ = writeln!(s, "# TYPE hearth_spliced_bytes_total counter");
        let _ = writeln!(
            s,
            "hearth_spliced_bytes_total{{direction=\"request\"}} {}",
            self.spliced_request_bytes
        );
        let _ = writeln!(
            s,
            "hearth_spliced_bytes_total{{direction=\"response\"}} {}",
            self.spliced_response_bytes
        );
        let _ = writeln!(s, "# TYPE hearth_answers_total counter");
        for (code, n) in ANSWER_CODES.iter().zip(self.answers.iter()) {
            let _ = writeln!(s, "hearth_answers_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(s, "# TYPE hearth_failures_total counter");
        for (cause, n) in Cause::ALL.iter().zip(self.failures.iter()) {
            let _ = writeln!(
                s,
                "hearth_failures_total{{cause=\"{}\"}} {n}",
                cause.token()
            );
        }
        let series: [Series; 19] = [
            ("requests_total", "counter", |n| n.requests),
            ("connects_total", "counter", |n| n.connects),
            ("connect_failures_total", "counter", |n| n.connect_failures),
            ("reuses_total", "counter", |n| n.reuses),
            ("replays_total", "counter", |n| n.replays),
            ("handed_over_total", "counter", |n| n.handed_over),
            ("queued_total", "counter", |n| n.queued),
            ("queue_timeouts_total", "counter", |n| n.queue_timeouts),
            ("retries_total", "counter", |n| n.retries),
            ("failures_total", "counter", |n| n.failures),
            ("marked_down_total", "counter", |n| n.marked_down),
            ("client_aborts_total", "counter", |n| n.client_aborts),
            ("tls_full_handshakes_total", "counter", |n| {
                n.tls_full_handshakes
            }),
            ("tls_resumed_handshakes_total", "counter", |n| {
                n.tls_resumed_handshakes
            }),
            ("tls_handshake_failures_total", "counter", |n| {
                n.tls_handshake_failures
            }),
            ("idle_connections", "gauge", |n| n.idle_now),
            ("open_connections", "gauge", |n| n.open_now),
            ("active_connections", "gauge", |n| {
                n.open_now.saturating_sub(n.idle_now)
            }),
            ("waiters", "gauge", |n| n.waiters_now),
        ];
        for (name, kind, f) in series {
            let _ = writeln!(s, "# TYPE hearth_upstream_{name} {kind}");
            for (i, n) in self.nodes.iter().enumerate() {
                let label = node_labels.get(i).map(String::as_str).unwrap_or("");
                let _ = writeln!(s, "hearth_upstream_{name}{{{label}}} {}", f(n));
            }
        }
        type HistOf = fn(&NodeCounters) -> &Histogram;
        let hists: [(&str, HistOf); 4] = [
            ("hearth_upstream_reuse_idle_age_seconds", |n| {
                &n.reuse_idle_age
            }),
            ("hearth_upstream_closed_idle_age_seconds", |n| {
                &n.upstream_closed_idle_age
            }),
            ("hearth_upstream_wait_seconds", |n| &n.wait),
            ("hearth_upstream_response_seconds", |n| &n.response),
        ];
        for (name, f) in hists {
            let _ = writeln!(s, "# TYPE {name} histogram");
            for (i, n) in self.nodes.iter().enumerate() {
                let label = node_labels.get(i).map(String::as_str).unwrap_or("");
                f(n).render(&mut s, name, label);
            }
        }
        let _ = writeln!(s, "# TYPE hearth_upstream_responses_total counter");
        for (i, n) in self.nodes.iter().enumerate() {
            let label = node_labels.get(i).map(String::as_str).unwrap_or("");
            for (c, count) in n.responses.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "hearth_upstream_responses_total{{{label},class=\"{}xx\"}} {count}",
                    c + 1
                );
            }
        }
        let _ = writeln!(s, "# TYPE hearth_upstream_closes_total counter");
        for (i, n) in self.nodes.iter().enumerate() {
            let label = node_labels.get(i).map(String::as_str).unwrap_or("");
            for why in CloseReason::ALL {
                let _ = writeln!(
                    s,
                    "hearth_upstream_closes_total{{{label},reason=\"{}\"}} {}",
                    why.name(),
                    n.closes[why.index()]
                );
            }
        }
        s
    }
}

/// Active health checks of one pool, as the checker thread sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealthCounters {
    /// Nodes start healthy, and unchecked nodes stay so.
    pub healthy: bool,
    /// Probes by what they counted as, indexed by `Verdict::index`.
    pub probes: [u64; Verdict::ALL.len()],
}

impl Default for NodeHealthCounters {
    fn default() -> Self {
        NodeHealthCounters {
            healthy: true,
            probes: [0; Verdict::ALL.len()],
        }
    }
}

/// The health checker's counters by pool id. They live on the checker thread, not on a core,
/// and are rendered next to the cores' sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCounters {
    pub nodes: Vec<NodeHealthCounters>,
}

impl HealthCounters {
    pub fn with_nodes(n: usize) -> HealthCounters {
        HealthCounters {
            nodes: vec![NodeHealthCounters::default(); n],
        }
    }

    /// Prometheus text for every node of `node_labels`; nodes the checker never saw are
    /// healthy with no probes.
    pub fn render(&self, node_labels: &[String]) -> String {
        let mut s = String::new();
        let unseen = NodeHealthCounters::default();
        let node = |i: usize| self.nodes.get(i).unwrap_or(&unseen);
        let _ = writeln!(s, "# TYPE hearth_upstream_node_healthy gauge");
        for (i, label) in node_labels.iter().enumerate() {
            let up = u8::from(node(i).healthy);
            let _ = writeln!(s, "hearth_upstream_node_healthy{{{label}}} {up}");
        }
        let _ = writeln!(s, "# TYPE hearth_upstream_health_probes_total counter");
        for (i, label) in node_labels.iter().enumerate() {
            for v in Verdict::ALL {
                let _ = writeln!(
                    s,
                    "hearth_upstream_health_probes_total{{{label},result=\"{}\"}} {}",
                    v.name(),
                    node(i).probes[v.index()]
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_seconds() {
        let mut h = Histogram::default();
        for ms in [0, 1, 3, 3, 70_000, 5_000_000] {
            h.record(ms);
        }
        let mut s = String::new();
        h.render(&mut s, "x", "n=\"a\"");
        assert!(s.contains("x_bucket{n=\"a\",le=\"0.001\"} 2"), "{s}");
        assert!(s.contains("x_bucket{n=\"a\",le=\"0.005\"} 4"), "{s}");
        assert!(s.contains("x_bucket{n=\"a\",le=\"3600\"} 5"), "{s}");
        assert!(s.contains("x_bucket{n=\"a\",le=\"+Inf\"} 6"), "{s}");
        assert!(s.contains("x_count{n=\"a\"} 6"), "{s}");
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = Counters::with_nodes(1);
        a.requests = 2;
        a.nodes[0].reuses = 3;
        a.nodes[0].closed(CloseReason::Stale);
        a.answered(502);
        let mut b = Counters::with_nodes(2);
        b.requests = 5;
        b.nodes[0].reuses = 1;
        b.nodes[1].connects = 4;
        b.nodes[1].failures = 2;
        b.nodes[1].marked_down = 1;
        b.answered(502);
        a.merge(&b);
        assert_eq!(a.requests, 7);
        assert_eq!(a.nodes[0].reuses, 4);
        assert_eq!(a.nodes[1].connects, 4);
        assert_eq!(a.nodes[0].closes[CloseReason::Stale.index()], 1);
        assert_eq!(
            a.answers[ANSWER_CODES.iter().position(|&c| c == 502).unwrap()],
            2
        );
        let text = a.render(&[
            "upstream=\"u\",node=\"n\"".into(),
            "upstream=\"u\",node=\"m\"".into(),
        ]);
        assert!(
            text.contains("hearth_upstream_reuses_total{upstream=\"u\",node=\"n\"} 4"),
            "{text}"
        );
        assert!(text.contains("reason=\"stale\"} 1"), "{text}");
        assert!(text.contains("reason=\"health\"} 0"), "{text}");
        assert!(
            text.contains("hearth_upstream_failures_total{upstream=\"u\",node=\"m\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("hearth_upstream_marked_down_total{upstream=\"u\",node=\"m\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn health_renders_every_node_unseen_ones_healthy() {
        let mut h = HealthCounters::with_nodes(1);
        h.nodes[0].healthy = false;
        h.nodes[0].probes[Verdict::TcpFailure.index()] = 3;
        let text = h.render(&["node=\"a\"".into(), "node=\"b\"".into()]);
        assert!(
            text.contains("hearth_upstream_node_healthy{node=\"a\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("hearth_upstream_node_healthy{node=\"b\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "hearth_upstream_health_probes_total{node=\"a\",result=\"tcp_failure\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("hearth_upstream_health_probes_total{node=\"b\",result=\"success\"} 0\n"),
            "{text}"
        );
    }
}
