//! Per-core counters, summed across cores on demand.
//!
//! Each core owns a `Counters` and bumps plain integers in it: no atomics, no sharing. A reader
//! asks every core for a copy by control message and adds them up (`Counters::merge`), so the
//! hot path pays an increment and nothing else.

use std::fmt::Write as _;

use crate::upstream::pool::CloseReason;

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
    pub closes: [u64; CloseReason::ALL.len()],
    /// Gauges, filled in when a snapshot is taken.
    pub idle_now: u64,
    pub open_now: u64,
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
        for (a, b) in self.closes.iter_mut().zip(o.closes.iter()) {
            *a += b;
        }
        self.idle_now += o.idle_now;
        self.open_now += o.open_now;
    }
}

/// A per-node metric: name, Prometheus type, and how to read it.
type Series = (&'static str, &'static str, fn(&NodeCounters) -> u64);

/// Status codes hearth answers itself, in the order of `Counters::answers`.
pub const ANSWER_CODES: [u16; 11] = [400, 404, 408, 413, 414, 431, 500, 501, 502, 503, 504];

/// Everything one core counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub requests: u64,
    pub client_open_now: u64,
    /// Canned answers by status, indexed like `ANSWER_CODES`.
    pub answers: [u64; ANSWER_CODES.len()],
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

    pub fn answered(&mut self, status: u16) {
        if let Some(i) = ANSWER_CODES.iter().position(|&c| c == status) {
            self.answers[i] += 1;
        }
    }

    pub fn merge(&mut self, o: &Counters) {
        self.accepted += o.accepted;
        self.requests += o.requests;
        self.client_open_now += o.client_open_now;
        for (a, b) in self.answers.iter_mut().zip(o.answers.iter()) {
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
        let _ = writeln!(s, "# TYPE hearth_answers_total counter");
        for (code, n) in ANSWER_CODES.iter().zip(self.answers.iter()) {
            let _ = writeln!(s, "hearth_answers_total{{code=\"{code}\"}} {n}");
        }
        let series: [Series; 10] = [
            ("requests_total", "counter", |n| n.requests),
            ("connects_total", "counter", |n| n.connects),
            ("connect_failures_total", "counter", |n| n.connect_failures),
            ("reuses_total", "counter", |n| n.reuses),
            ("replays_total", "counter", |n| n.replays),
            ("handed_over_total", "counter", |n| n.handed_over),
            ("queued_total", "counter", |n| n.queued),
            ("queue_timeouts_total", "counter", |n| n.queue_timeouts),
            ("idle_connections", "gauge", |n| n.idle_now),
            ("open_connections", "gauge", |n| n.open_now),
        ];
        for (name, kind, f) in series {
            let _ = writeln!(s, "# TYPE hearth_upstream_{name} {kind}");
            for (i, n) in self.nodes.iter().enumerate() {
                let label = node_labels.get(i).map(String::as_str).unwrap_or("");
                let _ = writeln!(s, "hearth_upstream_{name}{{{label}}} {}", f(n));
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
