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

    /// Which timeout it was, when the timer armed at `deadline` fires at `now`: always one whose
    /// time has come. The client's send clock is looked at first, so a client that stopped
    /// reading is not blamed on the upstream or the queue.
    pub(super) fn due(&self, now: u64) -> Due {
        match self.leg {
            _ if self.behind && now >= self.last_write + self.send_ms => Due::Send,
            Leg::Queued { since } if now >= since + self.queue_ms => Due::Queue,
            Leg::Draining { until, .. } if now >= until => Due::DrainEnd,
            _ if self.body_waits && now >= self.last_active + self.body_ms => Due::Body,
            // Between tries, and for a queued request whose timer fired early: the queue's.
            Leg::Queued { .. } | Leg::Unattached => Due::Queue,
            _ => Due::Upstream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::UpId;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

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
        // A pipelined request queued behind an answer the client is not reading: the client's
        // clock, not a queue timeout. Before, any timer of a queued request was a queue timeout.
        let q = Clocks {
            behind: true,
            queue_ms: 60_000,
            ..clocks(Leg::Queued { since: 0 })
        };
        assert_eq!((q.deadline(), q.due(31_000)), (31_000, Due::Send));
    }

    #[test]
    fn a_queued_request_is_only_timed_out_by_the_queue_once_its_time_has_come() {
        // queue.timeout over client.body_timeout: the body clock fires first and is named.
        let q = Clocks {
            body_waits: true,
            queue_ms: 120_000,
            ..clocks(Leg::Queued { since: 1_000 })
        };
        assert_eq!((q.deadline(), q.due(11_000)), (11_000, Due::Body));
        assert_eq!(q.due(121_000), Due::Queue);
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

    /// The naive model: every clock that runs for this state, as (time, what came due), in the
    /// order `due` looks at them.
    fn running(k: &Clocks) -> Vec<(u64, Due)> {
        let mut v = Vec::new();
        match k.leg {
            Leg::Queued { since } => v.push((since + k.queue_ms, Due::Queue)),
            Leg::Unattached => {}
            Leg::Connecting(_) => v.push((k.up_progress + k.connect_ms, Due::Upstream)),
            _ if !k.behind => v.push((k.up_progress + k.read_ms, Due::Upstream)),
            _ => {}
        }
        if k.behind {
            v.push((k.last_write + k.send_ms, Due::Send));
        }
        if let Leg::Draining { until, .. } = k.leg {
            v.push((until, Due::DrainEnd));
        }
        if k.body_waits {
            v.push((k.last_active + k.body_ms, Due::Body));
        }
        v
    }

    #[test]
    fn the_timer_fires_when_the_first_running_clock_comes_due_and_names_it() {
        for seed in 0..2_000u64 {
            let mut r = StdRng::seed_from_u64(seed);
            let up = UpId(r.random_range(0..4));
            let leg = match r.random_range(0..4) {
                0 => Leg::Queued {
                    since: r.random_range(0..5_000),
                },
                1 => Leg::Connecting(up),
                2 => Leg::Attached(up),
                _ => Leg::Draining {
                    up,
                    until: r.random_range(0..20_000),
                    left: 1,
                },
            };
            let k = Clocks {
                leg,
                up_progress: r.random_range(0..5_000),
                queue_ms: r.random_range(1..10_000),
                connect_ms: r.random_range(1..10_000),
                read_ms: r.random_range(1..10_000),
                behind: r.random_bool(0.5),
                last_write: r.random_range(0..5_000),
                send_ms: r.random_range(1..10_000),
                body_waits: r.random_bool(0.5),
                last_active: r.random_range(0..5_000),
                body_ms: r.random_range(1..10_000),
            };
            let clocks = running(&k);
            let first = clocks
                .iter()
                .map(|c| c.0)
                .min()
                .expect("some clock always runs");
            assert_eq!(k.deadline(), first, "seed {seed}: {k:?}");
            let due = k.due(first);
            assert!(
                clocks.iter().any(|&(t, d)| d == due && t <= first),
                "seed {seed}: {due:?} is not a clock that came due at {first}: {k:?}"
            );
            // Where the first clock to come due is the client's, it is the one named: a stalled
            // client is never reported as a slow upstream.
            let client_due = clocks
                .iter()
                .any(|&(t, d)| t == first && matches!(d, Due::Send));
            if client_due {
                assert_eq!(due, Due::Send, "seed {seed}: {k:?}");
            }
        }
    }
}
