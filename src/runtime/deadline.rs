//! When an exchange's time runs out, and which of its timeouts it was.
//!
//! One request in flight has up to four clocks running at once: the upstream's (queue, connect
//! or read timeout, by where the leg stands), the client's send timeout while answer bytes wait
//! for it, the client's body timeout while the request body is still due, and the drain window
//! after an early answer. The core arms one timer per client at the earliest of them
//! ([`Clocks::deadline`]) and, when it fires, asks which one came due ([`Clocks::due`]). Both
//! read the same plain values, so the timer and the verdict cannot disagree, and both are tested
//! here on a virtual clock.

use crate::runtime::exchange::Leg;

/// The times an exchange's timeouts count from, and their lengths, in clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clocks {
    pub leg: Leg,
    /// Last progress with the upstream (connect started, bytes read or written).
    pub up_progress: u64,
    pub queue_ms: u64,
    pub connect_ms: u64,
    pub read_ms: u64,
    /// Answer bytes wait for the client. hearth is then not reading the upstream (the client
    /// sets the pace), so the client's send timeout runs instead of the upstream's read timeout.
    pub behind: bool,
    pub last_write: u64,
    pub send_ms: u64,
    /// Request body is still due and none of it waits unread.
    pub body_waits: bool,
    pub last_active: u64,
    pub body_ms: u64,
}

/// Which timeout came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// The request waited for a connection past the queue timeout.
    Queue,
    /// The client took no answer bytes within its send timeout.
    Send,
    /// The answer is complete and the rest of the request body did not come within the drain
    /// window.
    DrainEnd,
    /// The client sent no request body within its body timeout.
    Body,
    /// The upstream went quiet: a connect timeout while connecting, a read timeout otherwise.
    Upstream,
}

impl Clocks {
    /// The earliest time one of the exchange's timeouts can come due.
    pub(super) fn deadline(&self) -> u64 {
        let mut d = match self.leg {
            Leg::Queued { since } => since + self.queue_ms,
            Leg::Connecting(_) => self.up_progress + self.connect_ms,
            _ if self.behind => u64::MAX,
            _ => self.up_progress + self.read_ms,
        };
        if self.behind {
            d = d.min(self.last_write + self.send_ms);
        }
        if self.body_waits {
            d = d.min(self.last_active + self.body_ms);
        }
        if let Leg::Draining { until, .. } = self.leg {
            d = d.min(until);
        }
        d
    }

    /// Which timeout it was, when the timer armed at `deadline` fires at `now`. A queued
    /// request only ever times out in the queue; otherwise the client's clocks are looked at
    /// before the upstream's, so a client that stopped reading is not blamed on the upstream.
    pub(super) fn due(&self, now: u64) -> Due {
        match self.leg {
            Leg::Queued { .. } | Leg::Unattached => Due::Queue,
            _ if self.behind && now >= self.last_write + self.send_ms => Due::Send,
            Leg::Draining { until, .. } if now >= until => Due::DrainEnd,
            _ if self.body_waits && now >= self.last_active + self.body_ms => Due::Body,
            _ => Due::Upstream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::UpId;

    fn clocks(leg: Leg) -> Clocks {
        Clocks {
            leg,
            up_progress: 1_000,
            queue_ms: 500,
            connect_ms: 2_000,
            read_ms: 60_000,
            behind: false,
            last_write: 1_000,
            send_ms: 30_000,
            body_waits: false,
            last_active: 1_000,
            body_ms: 10_000,
        }
    }

    #[test]
    fn each_leg_runs_its_own_upstream_clock() {
        let q = clocks(Leg::Queued { since: 900 });
        assert_eq!((q.deadline(), q.due(1_400)), (1_400, Due::Queue));
        let c = clocks(Leg::Connecting(UpId(3)));
        assert_eq!((c.deadline(), c.due(3_000)), (3_000, Due::Upstream));
        let a = clocks(Leg::Attached(UpId(3)));
        assert_eq!((a.deadline(), a.due(61_000)), (61_000, Due::Upstream));
    }

    #[test]
    fn a_client_behind_stops_the_read_clock_and_runs_its_send_clock() {
        let a = Clocks {
            behind: true,
            last_write: 5_000,
            ..clocks(Leg::Attached(UpId(0)))
        };
        assert_eq!(a.deadline(), 35_000, "not the read timeout at 61,000");
        assert_eq!(a.due(35_000), Due::Send);
        // Queued requests have no answer bytes, but the queue clock wins regardless.
        let q = Clocks {
            behind: true,
            ..clocks(Leg::Queued { since: 0 })
        };
        assert_eq!(q.due(31_000), Due::Queue);
    }

    #[test]
    fn the_body_and_drain_clocks_cut_in_when_earlier() {
        let b = Clocks {
            body_waits: true,
            ..clocks(Leg::Attached(UpId(0)))
        };
        assert_eq!((b.deadline(), b.due(11_000)), (11_000, Due::Body));
        let d = Clocks {
            body_waits: true,
            ..clocks(Leg::Draining {
                up: UpId(0),
                until: 4_000,
                left: 10,
            })
        };
        assert_eq!((d.deadline(), d.due(4_000)), (4_000, Due::DrainEnd));
    }
}
