//! The process-wide part of a node: the counts behind `max_connections` and `max_connecting`,
//! which cores share, and what every core learns about the node (its idle timeout).
//!
//! A core takes a place in a node's caps as a [`Reservation`] when it starts a connect, and the
//! reservation gives it back when it is dropped: at the close of the connection, or on any error
//! path before it ever opened. So no path can leak capacity by forgetting to give it back, and the
//! counts always equal the connections that hold reservations (open plus connecting, including a
//! connection on its way between cores, whose reservation travels with it). The atomics are
//! touched when a connection opens or closes and when a request queues, never when one is reused.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::pool::MIN_LEARNED_IDLE_MS;

/// Which cap refused a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_connections`: the node has as many connections as it may.
    Connections,
    /// `max_connecting`: as many connects are in flight as may be.
    Connecting,
}

/// Process-wide counts for one node, for the caps that span cores.
#[derive(Debug, Default)]
pub struct NodeBudget {
    conns: AtomicU32,
    connecting: AtomicU32,
    /// Requests queued for this node, per core: a core about to idle a connection hands it to a
    /// core that has waiters instead, and a core that frees budget tells the waiting cores.
    waiting: Box<[AtomicU32]>,
    /// The shortest idle age (ms) at which the upstream was seen, twice, closing a pooled
    /// connection; u64::MAX until then. Written only when that happens.
    learned_idle_ms: AtomicU64,
    /// A shorter close age seen once, waiting for a second close to confirm it.
    candidate_idle_ms: AtomicU64,
    /// When each cause of a failed request at this node was last logged as a warning.
    pub warned: crate::cause::WarnClock,
}

impl NodeBudget {
    /// Reserves one connection and one connect slot if both caps allow (0 = no cap).
    fn try_open(&self, max_conns: u32, max_connecting: u32) -> Result<(), Full> {
        if max_conns > 0 && !bump_below(&self.conns, max_conns) {
            return Err(Full::Connections);
        }
        if max_connecting > 0 && !bump_below(&self.connecting, max_connecting) {
            if max_conns > 0 {
                self.conns.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(Full::Connecting);
        }
        Ok(())
    }

    fn connect_done(&self, max_connecting: u32) {
        if max_connecting > 0 {
            self.connecting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn closed(&self, max_conns: u32) {
        if max_conns > 0 {
            self.conns.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub fn open_now(&self) -> u32 {
        self.conns.load(Ordering::Acquire)
    }

    pub fn new(cores: usize) -> NodeBudget {
        NodeBudget {
            waiting: (0..cores).map(|_| AtomicU32::new(0)).collect(),
            learned_idle_ms: AtomicU64::new(u64::MAX),
            candidate_idle_ms: AtomicU64::new(u64::MAX),
            ..NodeBudget::default()
        }
    }

    /// Records that the upstream closed a connection that had been idle `age_ms`.
    ///
    /// Not every close is an idle timeout: an upstream that restarts or resets closes young
    /// connections too, and one such close must not pin the learned value low for the life of
    /// the process. So closes younger than `MIN_LEARNED_IDLE_MS` teach nothing, and a shorter
    /// value is adopted only when a second close agrees with it within a quarter.
    pub fn saw_idle_close(&self, age_ms: u64) {
        if age_ms < MIN_LEARNED_IDLE_MS || age_ms >= self.learned_idle_ms.load(Ordering::Acquire) {
            return;
        }
        let c = self.candidate_idle_ms.load(Ordering::Acquire);
        if c != u64::MAX && age_ms * 4 >= c * 3 && age_ms * 4 <= c * 5 {
            self.learned_idle_ms
                .fetch_min(age_ms.min(c), Ordering::AcqRel);
            self.candidate_idle_ms.store(u64::MAX, Ordering::Release);
        } else {
            self.candidate_idle_ms.store(age_ms, Ordering::Release);
        }
    }

    /// The shortest idle age at which the upstream closed a pooled connection, if seen.
    pub fn learned_idle_ms(&self) -> Option<u64> {
        let v = self.learned_idle_ms.load(Ordering::Acquire);
        (v != u64::MAX).then_some(v)
    }

    pub fn add_waiter(&self, core: usize) {
        if let Some(w) = self.waiting.get(core) {
            w.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn remove_waiter(&self, core: usize) {
        if let Some(w) = self.waiting.get(core) {
            w.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether requests wait for this node on `core`.
    pub fn waiting_at(&self, core: usize) -> bool {
        self.waiting
            .get(core)
            .is_some_and(|w| w.load(Ordering::Acquire) > 0)
    }

    /// A core other than `me` with requests waiting for this node, starting the search after
    /// `me` so that hand-overs spread across cores.
    pub fn waiting_core(&self, me: usize) -> Option<usize> {
        let n = self.waiting.len();
        (1..n)
            .map(|i| (me + i) % n)
            .find(|&c| self.waiting[c].load(Ordering::Acquire) > 0)
    }
}

fn bump_below(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// One connection's place in its node's caps, given back when dropped. The caps are those the
/// connection was opened under, so a reload that changes them gives back exactly what was taken.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<NodeBudget>,
    max_connections: u32,
    max_connecting: u32,
    /// It still holds a slot of `max_connecting` (until its connect finishes).
    connect_slot: bool,
}

impl Reservation {
    /// A place for one more connection to the node of `budget`, holding a connect slot, when both
    /// caps allow it (0 = no cap); which cap is reached otherwise.
    pub fn take(
        budget: &Arc<NodeBudget>,
        max_connections: u32,
        max_connecting: u32,
    ) -> Result<Reservation, Full> {
        budget.try_open(max_connections, max_connecting)?;
        Ok(Reservation {
            budget: Arc::clone(budget),
            max_connections,
            max_connecting,
            connect_slot: true,
        })
    }

    /// The connect finished (either way): its slot in `max_connecting` goes back.
    pub fn connect_done(&mut self) {
        if std::mem::take(&mut self.connect_slot) {
            self.budget.connect_done(self.max_connecting);
        }
    }

    /// Whether it was taken under a cap, so that giving it back may serve a waiter.
    pub fn capped(&self) -> bool {
        self.max_connections > 0 || self.max_connecting > 0
    }

    /// Whether the connection counts against `max_connections`.
    pub fn counts_connections(&self) -> bool {
        self.max_connections > 0
    }

    pub fn budget(&self) -> &Arc<NodeBudget> {
        &self.budget
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.connect_done();
        self.budget.closed(self.max_connections);
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::learned_idle_limit;
    use super::*;

    #[test]
    fn learning_keeps_the_shortest_close_and_warnings_are_rate_limited() {
        let b = NodeBudget::new(1);
        assert_eq!(b.learned_idle_ms(), None);
        b.saw_idle_close(5_000);
        assert_eq!(b.learned_idle_ms(), None, "one close is not yet a pattern");
        b.saw_idle_close(2_000);
        assert_eq!(b.learned_idle_ms(), None, "2 s does not confirm 5 s");
        b.saw_idle_close(2_100);
        assert_eq!(
            b.learned_idle_ms(),
            Some(2_000),
            "two closes agreeing within a quarter"
        );
        b.saw_idle_close(150);
        b.saw_idle_close(160);
        assert_eq!(
            b.learned_idle_ms(),
            Some(2_000),
            "a restart closing young connections teaches nothing"
        );
        b.saw_idle_close(3_000);
        assert_eq!(
            b.learned_idle_ms(),
            Some(2_000),
            "longer closes never raise it"
        );
        assert_eq!(learned_idle_limit(2_000), 1_500);
        assert_eq!(learned_idle_limit(600), 350, "at least 250 ms under");
    }

    #[test]
    fn waiting_cores_are_found_round_the_ring() {
        let b = NodeBudget::new(4);
        assert_eq!(b.waiting_core(0), None);
        b.add_waiter(2);
        b.add_waiter(0);
        assert_eq!(b.waiting_core(0), Some(2), "never itself");
        assert_eq!(b.waiting_core(2), Some(0));
        assert_eq!(b.waiting_core(3), Some(0));
        b.remove_waiter(2);
        assert_eq!(b.waiting_core(1), Some(0));
    }

    #[test]
    fn reservations_hold_the_caps_until_dropped() {
        let b = Arc::new(NodeBudget::new(1));
        let mut first = Reservation::take(&b, 2, 1).expect("room");
        assert_eq!(
            Reservation::take(&b, 2, 1).err(),
            Some(Full::Connecting),
            "one connect in flight already"
        );
        first.connect_done();
        let mut second = Reservation::take(&b, 2, 1).expect("a connect slot again");
        second.connect_done();
        assert_eq!(
            Reservation::take(&b, 2, 1).err(),
            Some(Full::Connections),
            "two open already"
        );
        assert_eq!(b.open_now(), 2);
        drop(first);
        assert_eq!(b.open_now(), 1);
        let third = Reservation::take(&b, 2, 0).expect("room after a close");
        assert!(third.capped() && !Reservation::take(&b, 0, 0).unwrap().capped());
        drop((second, third));
        assert_eq!(b.open_now(), 0);
        // A reservation dropped before its connect finished gives back both places.
        let r = Reservation::take(&b, 1, 1).unwrap();
        drop(r);
        assert!(Reservation::take(&b, 1, 1).is_ok());
    }
}
