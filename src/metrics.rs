//! Per-core counters, summed across cores on demand.
//!
//! Each core owns a `Counters` and bumps plain integers in it: no atomics, no sharing. A reader
//! asks every core for a copy by control message and adds them up (`Counters::merge`), so the
//! hot path pays an increment and nothing else.
//!
//! Every metric family in the Prometheus text opens with `# HELP` and `# TYPE` lines, written by
//! [`family`] (`promtool check metrics` finds nothing to report; `tests/metrics_lint.rs` runs it).

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

    /// Per bucket, not cumulative: slot `i` counts values up to `BUCKETS_MS[i]` and over the
    /// bound before it; the last slot, values over every bound.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
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
    /// Connects made with no request waiting for them: the warm floor (`min_idle`) and
    /// `preconnect`. The rest of `connects` were made inside a request's path.
    pub background_connects: u64,
    /// Connects made inside a request's path while the pool was held under its need by `size`
    /// (its last purge closed connections the load had used).
    pub connects_pool_full: u64,
    /// Times a new connection was refused by `max_connecting`.
    pub connecting_capped: u64,
    /// Requests lost with a reused connection that failed before answering and could not be
    /// replayed (answered 502).
    pub reused_failures: u64,
    /// Gauges, filled in when a snapshot is taken.
    pub idle_now: u64,
    pub open_now: u64,
    pub waiters_now: u64,
    /// Connections serving a request now, and the most at once since the last purge (summed
    /// over cores like the other gauges).
    pub in_use_now: u64,
    pub in_use_peak: u64,
    /// The idle connections the load needed at the last purge that `size` cut short: what
    /// `keepalive_pool.size` (per core) must be raised to. The largest core's, not a sum.
    pub size_short_of: u64,
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
        self.background_connects += o.background_connects;
        self.connects_pool_full += o.connects_pool_full;
        self.connecting_capped += o.connecting_capped;
        self.reused_failures += o.reused_failures;
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
        self.in_use_now += o.in_use_now;
        self.in_use_peak += o.in_use_peak;
        self.size_short_of = self.size_short_of.max(o.size_short_of);
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

/// Opens the metric family `name` in Prometheus text: its `# HELP` line (`help`, one line, no
/// backslash) and its `# TYPE` line (`kind`: counter, gauge or histogram).
pub fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    debug_assert!(
        !help.contains(['\\', '\n']),
        "{name}: HELP text needs no escaping"
    );
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

/// A per-node metric: name, Prometheus type, help text, and how to read it.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&NodeCounters) -> u64,
);

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
        family(
            &mut s,
            "hearth_client_connections_accepted_total",
            "counter",
            "Client connections accepted.",
        );
        let _ = writeln!(
            s,
            "hearth_client_connections_accepted_total {}",
            self.accepted
        );
        family(
            &mut s,
            "hearth_client_connections_open",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(s, "hearth_client_connections_open {}", self.client_open_now);
        family(
            &mut s,
            "hearth_client_requests_total",
            "counter",
            "Requests read from clients.",
        );
        let _ = writeln!(s, "hearth_client_requests_total {}", self.requests);
        family(
            &mut s,
            "hearth_spliced_bytes_total",
            "counter",
            "Body bytes moved by splice(2) through a core's pipe rather than copied, by direction.",
        );
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
        family(
            &mut s,
            "hearth_answers_total",
            "counter",
            "Answers hearth made itself rather than an upstream, by status code.",
        );
        for (code, n) in ANSWER_CODES.iter().zip(self.answers.iter()) {
            let _ = writeln!(s, "hearth_answers_total{{code=\"{code}\"}} {n}");
        }
        family(
            &mut s,
            "hearth_failures_total",
            "counter",
            "Requests hearth answered or cut itself, by cause (as cause= in the access log).",
        );
        for (cause, n) in Cause::ALL.iter().zip(self.failures.iter()) {
            let _ = writeln!(
                s,
                "hearth_failures_total{{cause=\"{}\"}} {n}",
                cause.token()
            );
        }
        let series: [Series; 24] = [
            ("requests_total", "counter", "Requests sent to the node.", |n| {
                n.requests
            }),
            (
                "connects_total",
                "counter",
                "Connections opened to the node.",
                |n| n.connects,
            ),
            (
                "connect_failures_total",
                "counter",
                "Connection attempts to the node that failed or timed out.",
                |n| n.connect_failures,
            ),
            (
                "reuses_total",
                "counter",
                "Requests sent on a pooled connection rather than a new one.",
                |n| n.reuses,
            ),
            (
                "replays_total",
                "counter",
                "Requests sent again on a fresh connection after a reused one failed before answering.",
                |n| n.replays,
            ),
            (
                "handed_over_total",
                "counter",
                "Idle connections to the node given to another core whose requests waited for it.",
                |n| n.handed_over,
            ),
            (
                "queued_total",
                "counter",
                "Requests that had to wait for a connection to the node.",
                |n| n.queued,
            ),
            (
                "queue_timeouts_total",
                "counter",
                "Requests that gave up waiting for a connection to the node (answered 503).",
                |n| n.queue_timeouts,
            ),
            (
                "retries_total",
                "counter",
                "Requests that came to the node as a retry after another node failed them.",
                |n| n.retries,
            ),
            (
                "failures_total",
                "counter",
                "Failures passive health counted against the node.",
                |n| n.failures,
            ),
            (
                "marked_down_total",
                "counter",
                "Times passive health took the node out for fail_timeout.",
                |n| n.marked_down,
            ),
            (
                "client_aborts_total",
                "counter",
                "Requests to the node whose client left before the answer was complete.",
                |n| n.client_aborts,
            ),
            (
                "tls_full_handshakes_total",
                "counter",
                "Full TLS handshakes with the node.",
                |n| n.tls_full_handshakes,
            ),
            (
                "tls_resumed_handshakes_total",
                "counter",
                "TLS handshakes with the node resumed from an earlier session.",
                |n| n.tls_resumed_handshakes,
            ),
            (
                "tls_handshake_failures_total",
                "counter",
                "TLS handshakes with the node that failed.",
                |n| n.tls_handshake_failures,
            ),
            (
                "background_connects_total",
                "counter",
                "Connections opened to the node with no request waiting for them (min_idle, preconnect).",
                |n| n.background_connects,
            ),
            (
                "connects_pool_full_total",
                "counter",
                "Connections opened in a request's path after a purge closed idle ones the load had needed because of keepalive_pool.size.",
                |n| n.connects_pool_full,
            ),
            (
                "connecting_capped_total",
                "counter",
                "New connections to the node refused by max_connecting.",
                |n| n.connecting_capped,
            ),
            (
                "reused_failures_total",
                "counter",
                "Requests lost with a reused connection that failed before answering and could not be replayed.",
                |n| n.reused_failures,
            ),
            (
                "idle_connections",
                "gauge",
                "Idle pooled connections to the node now.",
                |n| n.idle_now,
            ),
            (
                "open_connections",
                "gauge",
                "Connections to the node open now, idle or not.",
                |n| n.open_now,
            ),
            (
                "active_connections",
                "gauge",
                "Connections to the node carrying a request now.",
                |n| n.open_now.saturating_sub(n.idle_now),
            ),
            (
                "waiters",
                "gauge",
                "Requests waiting for a connection to the node now.",
                |n| n.waiters_now,
            ),
            (
                "in_use_peak_connections",
                "gauge",
                "The most connections to the node in use at once since the last purge.",
                |n| n.in_use_peak,
            ),
        ];
        for (name, kind, help, f) in series {
            family(&mut s, &format!("hearth_upstream_{name}"), kind, help);
            for (i, n) in self.nodes.iter().enumerate() {
                let label = node_labels.get(i).map(String::as_str).unwrap_or("");
                let _ = writeln!(s, "hearth_upstream_{name}{{{label}}} {}", f(n));
            }
        }
        type HistOf = fn(&NodeCounters) -> &Histogram;
        let hists: [(&str, &str, HistOf); 4] = [
            (
                "hearth_upstream_reuse_idle_age_seconds",
                "How long a pooled connection had been idle when a request reused it.",
                |n| &n.reuse_idle_age,
            ),
            (
                "hearth_upstream_closed_idle_age_seconds",
                "How long a pooled connection had been idle when the upstream closed it; counts below idle_timeout mean the upstream's timeout is shorter.",
                |n| &n.upstream_closed_idle_age,
            ),
            (
                "hearth_upstream_wait_seconds",
                "How long requests waited for a connection to the node.",
                |n| &n.wait,
            ),
            (
                "hearth_upstream_response_seconds",
                "From a request's head arriving to the node's response head.",
                |n| &n.response,
            ),
        ];
        for (name, help, f) in hists {
            family(&mut s, name, "histogram", help);
            for (i, n) in self.nodes.iter().enumerate() {
                let label = node_labels.get(i).map(String::as_str).unwrap_or("");
                f(n).render(&mut s, name, label);
            }
        }
        family(
            &mut s,
            "hearth_upstream_responses_total",
            "counter",
            "Final responses from the node, by status class.",
        );
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
        family(
            &mut s,
            "hearth_upstream_closes_total",
            "counter",
            "Connections to the node closed, by reason.",
        );
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
        family(
            &mut s,
            "hearth_upstream_node_healthy",
            "gauge",
            "1 while active health checks find the node healthy (or do not check it), else 0.",
        );
        for (i, label) in node_labels.iter().enumerate() {
            let up = u8::from(node(i).healthy);
            let _ = writeln!(s, "hearth_upstream_node_healthy{{{label}}} {up}");
        }
        family(
            &mut s,
            "hearth_upstream_health_probes_total",
            "counter",
            "Active health probes of the node, by what they counted as.",
        );
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

    /// Every `# TYPE` follows a `# HELP` of the same family, and every sample belongs to a
    /// family opened before it.
    pub(crate) fn assert_every_family_is_described(text: &str) {
        let mut help: Option<&str> = None;
        let mut open: Option<&str> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, words) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(!words.trim().is_empty(), "empty help: {line}");
                help = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert_eq!(help, Some(name), "# TYPE without its # HELP: {line}");
                open = Some(name);
            } else {
                let family = open.unwrap_or_else(|| panic!("sample before any family: {line}"));
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| *base == family)
                    .unwrap_or(name);
                assert_eq!(base, family, "sample outside its family: {line}");
            }
        }
    }

    #[test]
    fn every_family_has_help_and_type() {
        let mut c = Counters::with_nodes(2);
        c.nodes[0].response.record(3);
        let labels = [
            "upstream=\"u\",node=\"n\"".into(),
            "upstream=\"u\",node=\"m\"".into(),
        ];
        let text = c.render(&labels);
        assert_every_family_is_described(&text);
        assert_eq!(text.matches("# HELP ").count(), 36, "{text}");
        assert_every_family_is_described(&HealthCounters::with_nodes(1).render(&labels));
        assert_every_family_is_described(&Counters::default().render(&[]));
    }

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
