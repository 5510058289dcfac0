//! What an active health probe counts as ([`Verdict`]): the vocabulary shared by the checker
//! thread ([`health`](crate::health), which judges each probe and counts runs of verdicts) and the
//! metrics ([`metrics`](crate::metrics), which count probes by verdict and render them).
//!
//! It sits below both so that neither imports the other for it: the checker reports its
//! counters in the metrics' types, and the metrics label them with these names. Invariants:
//! [`Verdict::ALL`] lists every variant once, in declaration order, so `index()` is a dense slot
//! in a counter array and `name()` is the `result` label of `hearth_upstream_health_probes_total`.

/// What a probe counts as under the node's checks; also the `result` label of the probe metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
    /// A status in neither `http_statuses` list: counts for nothing (as in APISIX).
    Neither,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Verdict::Success,
        Verdict::HttpFailure,
        Verdict::TcpFailure,
        Verdict::Timeout,
        Verdict::Neither,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::HttpFailure => "http_failure",
            Verdict::TcpFailure => "tcp_failure",
            Verdict::Timeout => "timeout",
            Verdict::Neither => "neither",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
