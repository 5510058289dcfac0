//! When each followed name is looked up again, and what a lookup's result does to its last good
//! addresses; sans-io, on a clock of milliseconds the caller passes in.
//!
//! Rules:
//! - With `resolver` servers, a name is looked up again when its answer's TTL runs out, the TTL
//!   clamped to `[resolve.min, resolve.max]`; a name new to the schedule is first asked again
//!   after `resolve.min`, since the addresses it came with had no TTL hearth kept. Without
//!   servers (the system resolver, which gives no TTL) every `resolve.interval`.
//! - A failed lookup (no answer, NXDOMAIN, no address) keeps the last good addresses and is
//!   retried after `resolve.min` with servers (a name that comes back is seen quickly), after
//!   `resolve.interval` without (the system resolver has its own retries and cache).
//! - At most one lookup per name is in flight; a name dropped from the configuration while its
//!   lookup runs is forgotten, and its late answer is [`Outcome::Gone`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::dns::{LookupError, Resolved};

/// The schedule's settings, from `resolver` and `[resolve]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub min: Duration,
    pub max: Duration,
    pub interval: Duration,
    /// Lookups go to configured servers (TTLs known) rather than the system resolver.
    pub servers: bool,
}

impl Timing {
    /// How long a result stays good: its TTL clamped to `[min, max]`, or `interval` when the
    /// source gives no TTL.
    pub fn good_for(&self, ttl: Option<Duration>) -> Duration {
        match ttl {
            Some(t) if self.servers => t.clamp(self.min, self.max.max(self.min)),
            _ => self.interval,
        }
    }

    /// How long after a failure the name is asked again.
    pub fn retry_after(&self) -> Duration {
        if self.servers {
            self.min
        } else {
            self.interval
        }
    }

    /// How long after it is first followed a name is asked again.
    pub fn first_after(&self) -> Duration {
        if self.servers {
            self.min
        } else {
            self.interval
        }
    }
}

#[derive(Debug, Clone)]
struct Host {
    /// The last good addresses: sorted, without repeats, never empty.
    addrs: Vec<IpAddr>,
    /// When the next lookup is due (ms).
    due: u64,
    in_flight: bool,
    /// Failures since the last success.
    failing: u32,
}

/// What a lookup's result did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The same addresses as before; next lookup in `next`.
    Same { next: Duration },
    /// Different addresses; the configuration follows them.
    Changed {
        old: Vec<IpAddr>,
        new: Vec<IpAddr>,
        next: Duration,
    },
    /// No address this time: the last good ones stay. `streak` counts failures in a row.
    Failed {
        why: LookupError,
        kept: Vec<IpAddr>,
        streak: u32,
        next: Duration,
    },
    /// The name is no longer followed; the result is dropped.
    Gone,
}

/// Every followed name, keyed by the name (without port).
#[derive(Debug, Default)]
pub struct Schedule {
    hosts: BTreeMap<String, Host>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Schedule {
    /// Follows exactly the names of `names`, each with the addresses the configuration came
    /// with; names already followed keep their own addresses and due times.
    pub fn follow(&mut self, names: BTreeMap<String, Vec<IpAddr>>, timing: &Timing, now: u64) {
        self.hosts.retain(|h, _| names.contains_key(h));
        for (name, addrs) in names {
            self.hosts.entry(name).or_insert_with(|| Host {
                addrs,
                due: now.saturating_add(ms(timing.first_after())),
                in_flight: false,
                failing: 0,
            });
        }
    }

    /// Names whose lookup is due, now marked in flight.
    pub fn start_due(&mut self, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (name, h) in &mut self.hosts {
            if !h.in_flight && h.due <= now {
                h.in_flight = true;
                out.push(name.clone());
            }
        }
        out
    }

    /// The earliest due time of a name not in flight.
    pub fn next_due(&self) -> Option<u64> {
        self.hosts
            .values()
            .filter(|h| !h.in_flight)
            .map(|h| h.due)
            .min()
    }

    /// The last good addresses of `name`.
    pub fn addrs(&self, name: &str) -> Option<&[IpAddr]> {
        self.hosts.get(name).map(|h| h.addrs.as_slice())
    }

    /// Failed lookups of `name` since its last good one.
    pub fn failing(&self, name: &str) -> u32 {
        self.hosts.get(name).map_or(0, |h| h.failing)
    }

    /// Every name followed.
    pub fn names(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Records the result of `name`'s lookup and schedules the next one.
    pub fn finish(
        &mut self,
        name: &str,
        result: Result<Resolved, LookupError>,
        timing: &Timing,
        now: u64,
    ) -> Outcome {
        let Some(h) = self.hosts.get_mut(name) else {
            return Outcome::Gone;
        };
        h.in_flight = false;
        match result {
            Ok(r) => {
                let next = timing.good_for(r.ttl);
                h.due = now.saturating_add(ms(next));
                h.failing = 0;
                if r.addrs == h.addrs {
                    return Outcome::Same { next };
                }
                let old = std::mem::replace(&mut h.addrs, r.addrs.clone());
                Outcome::Changed {
                    old,
                    new: r.addrs,
                    next,
                }
            }
            Err(why) => {
                let next = timing.retry_after();
                h.due = now.saturating_add(ms(next));
                h.failing = h.failing.saturating_add(1);
                Outcome::Failed {
                    why,
                    kept: h.addrs.clone(),
                    streak: h.failing,
                    next,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn timing(servers: bool) -> Timing {
        Timing {
            min: Duration::from_secs(1),
            max: Duration::from_secs(300),
            interval: Duration::from_secs(30),
            servers,
        }
    }

    fn ok(addrs: &[&str], ttl: Option<u64>) -> Result<Resolved, LookupError> {
        Ok(Resolved {
            addrs: addrs.iter().map(|a| ip(a)).collect(),
            ttl: ttl.map(Duration::from_secs),
        })
    }

    #[test]
    fn ttls_are_clamped_to_min_and_max() {
        let t = timing(true);
        let s = Duration::from_secs;
        assert_eq!(t.good_for(Some(s(0))), s(1));
        assert_eq!(t.good_for(Some(s(60))), s(60));
        assert_eq!(t.good_for(Some(s(86_400))), s(300));
        assert_eq!(t.good_for(None), s(30), "no TTL: the interval");
        assert_eq!(
            timing(false).good_for(Some(s(5))),
            s(30),
            "system resolver: the interval"
        );
        // A max below min (refused by the loader) still cannot panic the clamp.
        let odd = Timing { max: s(0), ..t };
        assert_eq!(odd.good_for(Some(s(9))), s(1));
    }

    /// A virtual-clock run: the schedule's due times follow the TTLs, failures keep the last
    /// good set and retry at `min`, and only a different set is a change.
    #[test]
    fn lookups_follow_ttls_and_failures_keep_the_last_good_set() {
        let t = timing(true);
        let mut s = Schedule::default();
        let names = BTreeMap::from([("api.internal".to_owned(), vec![ip("10.0.0.1")])]);
        s.follow(names.clone(), &t, 0);
        assert_eq!(s.next_due(), Some(1_000), "first asked again after min");
        assert!(s.start_due(999).is_empty());
        assert_eq!(s.start_due(1_000), ["api.internal"]);
        assert_eq!(s.next_due(), None, "in flight");
        assert!(s.start_due(5_000).is_empty(), "one lookup at a time");
        assert_eq!(
            s.finish("api.internal", ok(&["10.0.0.1"], Some(60)), &t, 1_010),
            Outcome::Same {
                next: Duration::from_secs(60)
            }
        );
        assert_eq!(s.next_due(), Some(61_010));
        assert_eq!(s.start_due(61_010).len(), 1);
        assert_eq!(
            s.finish("api.internal", ok(&["10.0.0.2"], Some(5)), &t, 61_020),
            Outcome::Changed {
                old: vec![ip("10.0.0.1")],
                new: vec![ip("10.0.0.2")],
                next: Duration::from_secs(5)
            }
        );
        assert_eq!(s.next_due(), Some(66_020));
        s.start_due(66_020);
        let failed = s.finish("api.internal", Err(LookupError::NotFound), &t, 66_030);
        assert_eq!(
            failed,
            Outcome::Failed {
                why: LookupError::NotFound,
                kept: vec![ip("10.0.0.2")],
                streak: 1,
                next: Duration::from_secs(1)
            }
        );
        assert_eq!(s.addrs("api.internal"), Some(&[ip("10.0.0.2")][..]));
        s.start_due(67_030);
        let again = s.finish("api.internal", Err(LookupError::NoAddress), &t, 67_040);
        assert!(
            matches!(again, Outcome::Failed { streak: 2, .. }),
            "{again:?}"
        );
        s.start_due(68_040);
        assert!(matches!(
            s.finish("api.internal", ok(&["10.0.0.2"], Some(9)), &t, 68_050),
            Outcome::Same { .. }
        ));
        // Following the same names again changes nothing; dropping one forgets it, and its
        // late answer is dropped.
        s.follow(names, &t, 70_000);
        assert_eq!(s.addrs("api.internal"), Some(&[ip("10.0.0.2")][..]));
        assert_eq!(s.next_due(), Some(77_050));
        s.start_due(77_050);
        s.follow(BTreeMap::new(), &t, 77_060);
        assert!(s.is_empty());
        assert_eq!(
            s.finish("api.internal", ok(&["10.0.0.3"], None), &t, 77_070),
            Outcome::Gone
        );
    }

    #[test]
    fn the_system_resolver_is_asked_every_interval() {
        let t = timing(false);
        let mut s = Schedule::default();
        s.follow(
            BTreeMap::from([("db".to_owned(), vec![ip("10.0.0.1")])]),
            &t,
            0,
        );
        assert_eq!(s.next_due(), Some(30_000));
        s.start_due(30_000);
        s.finish("db", Err(LookupError::Failed("timeout".into())), &t, 30_000);
        assert_eq!(s.next_due(), Some(60_000), "failures too");
    }
}
