//! The upstream keep-alive pool's lists for one node on one core, and its retirement rules.
//!
//! Per node (an upstream's member address), a core keeps an LRU list of its idle connections
//! (checkout takes the most recently used, which is the one least likely to have been closed by
//! the upstream; overflow evicts the least recently used) and the queue of requests waiting for a
//! connection, in the order of their `QueueKey`s: first come first served within a class. The
//! rules for when a connection retires (`retire_reason`, `idle_deadline`) are plain functions of
//! time and counts. Nothing here touches a socket or a clock; `Upstreams` (the module above)
//! keeps these lists in step with its connections.

use std::collections::VecDeque;

use crate::config::PoolSettings;
use crate::id::{ClientId, UpId};
use crate::lru::{Handle, Lru};

/// Why a pooled or active upstream connection was closed. Counted per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle longer than `keepalive_pool.idle_timeout` (or the upstream's Keep-Alive timeout hint).
    IdleTimeout,
    /// Open longer than `keepalive_pool.max_lifetime`.
    Lifetime,
    /// Served `keepalive_pool.requests` (or the upstream's Keep-Alive `max`).
    MaxRequests,
    /// The upstream said `Connection: close` or answered HTTP/1.0 without keep-alive.
    UpstreamClose,
    /// The idle connection turned readable: the upstream closed it or sent stray bytes.
    Stale,
    /// Idle beyond `keepalive_pool.size` at a purge although recent load had used it (the pool
    /// is smaller than the concurrency it serves), or closed so that requests waiting for
    /// connections made for another name get its place in the caps.
    Evicted,
    /// Not reusable: close-delimited body, body not fully transferred, error, upgrade, shutdown.
    NotReusable,
    /// A connect or I/O error.
    Error,
    /// A reload removed the node from every upstream.
    Removed,
    /// Retired by what the upstream announced in `Keep-Alive: timeout=N, max=M`, before our own
    /// limits would have.
    KeepAliveHint,
    /// Active health checks took the node out.
    Health,
    /// The upstream answered before the whole request body was sent, and the rest did not
    /// follow within the bound that keeps such a connection (it could not be pooled with part of
    /// a request in it).
    RequestUnfinished,
    /// Idle beyond what the node needed: more than the most connections in use at once during
    /// the last `keepalive_pool.purge_interval` (and than `min_idle`).
    Purged,
    /// A binary upgrade: hearth hands its idle plain connections to the new process, and closes
    /// those it cannot hand over (TLS ones, whose session state cannot move between processes).
    Upgrade,
}

impl CloseReason {
    pub const ALL: [CloseReason; 14] = [
        CloseReason::IdleTimeout,
        CloseReason::Lifetime,
        CloseReason::MaxRequests,
        CloseReason::UpstreamClose,
        CloseReason::Stale,
        CloseReason::Evicted,
        CloseReason::NotReusable,
        CloseReason::Error,
        CloseReason::Removed,
        CloseReason::KeepAliveHint,
        CloseReason::Health,
        CloseReason::RequestUnfinished,
        CloseReason::Purged,
        CloseReason::Upgrade,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Lifetime => "lifetime",
            CloseReason::MaxRequests => "max_requests",
            CloseReason::UpstreamClose => "upstream_close",
            CloseReason::Stale => "stale",
            CloseReason::Evicted => "evicted",
            CloseReason::NotReusable => "not_reusable",
            CloseReason::Error => "error",
            CloseReason::Removed => "removed",
            CloseReason::KeepAliveHint => "keepalive_hint",
            CloseReason::Health => "health",
            CloseReason::RequestUnfinished => "request_unfinished",
            CloseReason::Purged => "purged",
            CloseReason::Upgrade => "upgrade",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the upstream's last response said about reuse (RFC 9112 §9.3, and the `Keep-Alive`
/// header of RFC 2068 §19.7.1.1 that servers still send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepAliveHint {
    pub timeout_secs: Option<u32>,
    pub max: Option<u32>,
}

/// Upstreams close idle connections after seconds, not milliseconds: a close younger than this
/// is a restart or a reset, and teaches the learned idle timeout nothing.
pub const MIN_LEARNED_IDLE_MS: u64 = 1_000;

/// One second under the upstream's announced timeout: the margin that keeps hearth from reusing
/// a connection in the instant the upstream closes it.
pub const HINT_MARGIN_MS: u64 = 1_000;

/// How long to keep a connection idle for an upstream seen closing idle connections after
/// `learned_ms`: a quarter under it (at least 250 ms under), so we retire first.
pub fn learned_idle_limit(learned_ms: u64) -> u64 {
    learned_ms.saturating_sub((learned_ms / 4).max(250))
}

/// When an idle connection must be retired: the earliest of our idle timeout (or, with
/// `idle_timeout = "auto"`, the limit learned from the upstream), the upstream's announced
/// timeout less a margin, and the connection's maximum lifetime.
pub fn idle_deadline(
    now: u64,
    opened_at: u64,
    settings: &PoolSettings,
    hint: KeepAliveHint,
    learned_ms: Option<u64>,
) -> (u64, CloseReason) {
    let mut idle_ms = settings.idle_timeout.as_millis() as u64;
    if let (true, Some(l)) = (settings.idle_auto, learned_ms) {
        idle_ms = idle_ms.min(learned_idle_limit(l));
    }
    let mut why = CloseReason::IdleTimeout;
    if let Some(t) = hint.timeout_secs {
        let hinted = (u64::from(t) * 1_000).saturating_sub(HINT_MARGIN_MS);
        if hinted < idle_ms {
            idle_ms = hinted;
            why = CloseReason::KeepAliveHint;
        }
    }
    let idle_at = now + idle_ms;
    let life_at = opened_at.saturating_add(settings.max_lifetime.as_millis() as u64);
    if life_at < idle_at {
        (life_at, CloseReason::Lifetime)
    } else {
        (idle_at, why)
    }
}

/// Whether a connection that just finished an exchange cleanly may go back to the pool, and if
/// not, why. `served` counts the exchanges it has carried, this one included.
pub fn retire_reason(
    now: u64,
    opened_at: u64,
    served: u64,
    settings: &PoolSettings,
    hint: KeepAliveHint,
) -> Option<CloseReason> {
    if settings.size == 0 {
        return Some(CloseReason::NotReusable);
    }
    if let Some(m) = hint.max.map(u64::from) {
        if (settings.requests == 0 || m < settings.requests) && served >= m {
            return Some(CloseReason::KeepAliveHint);
        }
    }
    if settings.requests > 0 && served >= settings.requests {
        return Some(CloseReason::MaxRequests);
    }
    if hint
        .timeout_secs
        .is_some_and(|t| u64::from(t) * 1_000 <= HINT_MARGIN_MS)
    {
        // The upstream will close it before we could safely reuse it.
        return Some(CloseReason::KeepAliveHint);
    }
    if now >= opened_at.saturating_add(settings.max_lifetime.as_millis() as u64) {
        return Some(CloseReason::Lifetime);
    }
    None
}

/// How many idle connections a checkout looks at for one made for its SNI name before it
/// opens a new one instead; bounds the walk when a pool holds many names.
pub const IDLE_SCAN: usize = 16;

/// What `NodePool::take_waiter` does with a queued waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    Skip,
    Drop,
}

/// Where a waiting request stands in its node's queue: lower keys are served first. A route's
/// `queue_class` orders before arrival, and its `queue_offset` counts as arriving later, so
/// within a class the wait is first come first served with that handicap (HAProxy's
/// `set-priority-class` and `set-priority-offset`). Every route's default, class 0 and no offset,
/// leaves the queue a plain FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct QueueKey {
    pub class: i16,
    /// Milliseconds on the core's clock: when the request queued plus its route's offset.
    pub at: u64,
}

/// Per-core lists of one node: its idle connections, most recently used first, and the requests
/// waiting for a connection, by `QueueKey` (arrival order among equal classes and offsets).
#[derive(Debug, Default)]
pub struct NodePool {
    idle: Lru<UpId>,
    waiters: VecDeque<(QueueKey, ClientId)>,
}

impl NodePool {
    /// The most recently used idle connection.
    pub fn take_idle(&mut self) -> Option<UpId> {
        self.idle.pop_front()
    }

    /// The most recently used idle connection that `fits` (one made for the request's SNI
    /// name), looking at no more than `IDLE_SCAN` of them: where every connection fits (plain
    /// http, fixed SNI) this is `take_idle`. Past the limit the caller opens a connection.
    pub fn take_idle_where(&mut self, fits: impl FnMut(&UpId) -> bool) -> Option<UpId> {
        self.idle.pop_front_where(IDLE_SCAN, fits)
    }

    /// Files `conn` as the most recently used idle connection. Returns its handle and, when that
    /// makes more than `size` idle, the least recently used one, which the caller closes.
    /// Files `conn` as the most recently used idle connection. Nothing is pushed out here: how
    /// many stay idle is decided at each purge, toward the recent need.
    pub fn put_idle(&mut self, conn: UpId) -> Handle {
        self.idle.push_front(conn)
    }

    pub fn remove_idle(&mut self, h: Handle) -> Option<UpId> {
        self.idle.remove(h)
    }

    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }

    /// The least recently used idle connection, to shed when another core needs the budget.
    pub fn oldest_idle(&mut self) -> Option<UpId> {
        self.idle.pop_back()
    }

    pub fn idle_conns(&self) -> impl Iterator<Item = &UpId> {
        self.idle.iter()
    }

    /// Queues a waiter behind every one whose key is not greater; false when the queue already
    /// holds `max` of them. With equal classes and offsets a key is never below the last one's,
    /// so the common case appends.
    pub fn wait(&mut self, client: ClientId, key: QueueKey, max: usize) -> bool {
        if self.waiters.len() >= max {
            return false;
        }
        match self.waiters.back() {
            Some(&(last, _)) if last > key => {
                let at = self.waiters.partition_point(|&(k, _)| k <= key);
                self.waiters.insert(at, (key, client));
            }
            _ => self.waiters.push_back((key, client)),
        }
        true
    }

    /// Puts a waiter back where it was, at the head of the queue (its turn came, but the budget
    /// did not), unless a request that outranks it came meanwhile.
    pub fn wait_front(&mut self, client: ClientId, key: QueueKey) {
        let at = self.waiters.partition_point(|&(k, _)| k < key);
        self.waiters.insert(at, (key, client));
    }

    /// The first queued waiter `judge` takes, in queue order. Waiters it drops (gone, or no
    /// longer waiting) leave the queue; waiters it skips (waiting for a connection made for
    /// another name) keep their place. Returns the waiter and how many left the queue.
    pub fn take_waiter(
        &mut self,
        judge: impl FnMut(ClientId) -> Verdict,
    ) -> (Option<ClientId>, u32) {
        let (taken, left) = self.take_ranked(judge);
        (taken.map(|(cid, _)| cid), left)
    }

    /// As `take_waiter`, with the key the waiter queued at, for putting it back (`wait_front`).
    pub fn take_ranked(
        &mut self,
        mut judge: impl FnMut(ClientId) -> Verdict,
    ) -> (Option<(ClientId, QueueKey)>, u32) {
        let mut left = 0;
        let mut i = 0;
        while let Some(&(key, cid)) = self.waiters.get(i) {
            match judge(cid) {
                Verdict::Take => {
                    self.waiters.remove(i);
                    return (Some((cid, key)), left + 1);
                }
                Verdict::Drop => {
                    self.waiters.remove(i);
                    left += 1;
                }
                Verdict::Skip => i += 1,
            }
        }
        (None, left)
    }

    pub fn waiters_len(&self) -> usize {
        self.waiters.len()
    }

    pub fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// Removes a waiter that gave up; true if it was queued.
    pub fn forget_waiter(&mut self, client: ClientId) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|&(_, c)| c != client);
        self.waiters.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(size: usize, requests: u64, idle_s: u64, life_s: u64) -> PoolSettings {
        PoolSettings {
            size,
            requests,
            idle_timeout: Duration::from_secs(idle_s),
            idle_auto: false,
            max_lifetime: Duration::from_secs(life_s),
            min_idle: 0,
            ..PoolSettings::default()
        }
    }

    #[test]
    fn idle_deadline_takes_the_earliest_limit() {
        let s = settings(32, 1000, 60, 3600);
        let none = KeepAliveHint::default();
        assert_eq!(
            idle_deadline(1_000, 0, &s, none, None),
            (61_000, CloseReason::IdleTimeout)
        );
        let hint = KeepAliveHint {
            timeout_secs: Some(5),
            max: None,
        };
        assert_eq!(
            idle_deadline(1_000, 0, &s, hint, None),
            (5_000, CloseReason::KeepAliveHint),
            "5 s hint less 1 s margin"
        );
        assert_eq!(
            idle_deadline(3_599_000, 0, &s, none, None),
            (3_600_000, CloseReason::Lifetime)
        );
    }

    #[test]
    fn retire_rules() {
        let s = settings(32, 3, 60, 10);
        let none = KeepAliveHint::default();
        assert_eq!(retire_reason(0, 0, 1, &s, none), None);
        assert_eq!(
            retire_reason(0, 0, 3, &s, none),
            Some(CloseReason::MaxRequests)
        );
        let max2 = KeepAliveHint {
            timeout_secs: None,
            max: Some(2),
        };
        assert_eq!(
            retire_reason(0, 0, 2, &s, max2),
            Some(CloseReason::KeepAliveHint),
            "upstream max=2 wins over requests=3"
        );
        assert_eq!(
            retire_reason(10_000, 0, 1, &s, none),
            Some(CloseReason::Lifetime)
        );
        assert_eq!(
            retire_reason(0, 0, 1, &settings(0, 3, 60, 10), none),
            Some(CloseReason::NotReusable)
        );
        let t1 = KeepAliveHint {
            timeout_secs: Some(1),
            max: None,
        };
        assert_eq!(
            retire_reason(0, 0, 1, &s, t1),
            Some(CloseReason::KeepAliveHint),
            "1 s hint leaves no safe reuse window"
        );
    }

    #[test]
    fn mru_checkout_and_lru_order() {
        let mut p = NodePool::default();
        p.put_idle(UpId(1));
        p.put_idle(UpId(2));
        p.put_idle(UpId(3));
        assert_eq!(p.idle_len(), 3, "nothing pushed out at filing");
        assert_eq!(p.take_idle(), Some(UpId(3)), "most recent first");
        assert_eq!(p.oldest_idle(), Some(UpId(1)), "least recent last");
        let h = p.put_idle(UpId(4));
        assert_eq!(p.remove_idle(h), Some(UpId(4)));
        assert_eq!(p.take_idle(), Some(UpId(2)));
        assert_eq!(p.take_idle(), None);
    }

    #[test]
    fn waiters_are_bounded_and_fifo() {
        let mut p = NodePool::default();
        let k = QueueKey::default();
        assert!(p.wait(ClientId(7), k, 2));
        assert!(p.wait(ClientId(8), k, 2));
        assert!(!p.wait(ClientId(9), k, 2));
        p.forget_waiter(ClientId(7));
        assert_eq!(p.take_waiter(|_| Verdict::Take).0, Some(ClientId(8)));
        assert_eq!(p.take_waiter(|_| Verdict::Take).0, None);
    }

    #[test]
    fn waiters_are_taken_by_name_in_queue_order() {
        // Waiters 1..=5; odd ones wait for name A, even ones for B, 3 has gone away.
        let judge = |want_odd: bool| {
            move |ClientId(cid): ClientId| match cid {
                3 => Verdict::Drop,
                c if (c % 2 == 1) == want_odd => Verdict::Take,
                _ => Verdict::Skip,
            }
        };
        let mut p = NodePool::default();
        for c in 1..=5 {
            assert!(p.wait(ClientId(c), QueueKey::default(), 8));
        }
        assert_eq!(
            p.take_waiter(judge(false)),
            (Some(ClientId(2)), 1),
            "first B"
        );
        assert_eq!(
            p.take_waiter(judge(true)),
            (Some(ClientId(1)), 1),
            "first A"
        );
        assert_eq!(
            p.take_waiter(judge(true)),
            (Some(ClientId(5)), 2),
            "3 dropped on the way"
        );
        assert_eq!(p.waiters_len(), 1, "4 kept its place");
        assert_eq!(p.take_waiter(judge(true)), (None, 0), "no A left");
        assert_eq!(p.take_waiter(|_| Verdict::Take).0, Some(ClientId(4)));
    }

    #[test]
    fn idle_checkout_takes_the_most_recent_fitting_connection() {
        let mut p = NodePool::default();
        for c in 1..=3 {
            p.put_idle(UpId(c));
        }
        assert_eq!(
            p.take_idle_where(|&c| c == UpId(1)),
            Some(UpId(1)),
            "the older fitting one"
        );
        assert_eq!(p.take_idle_where(|&c| c == UpId(9)), None);
        assert_eq!(p.take_idle(), Some(UpId(3)), "most recent");
        assert_eq!(p.idle_len(), 1);
        // Only IDLE_SCAN connections are looked at.
        let mut p = NodePool::default();
        for c in 0..=IDLE_SCAN {
            p.put_idle(UpId(c));
        }
        assert_eq!(
            p.take_idle_where(|&c| c == UpId(0)),
            None,
            "beyond the scan"
        );
        assert_eq!(
            p.take_idle_where(|&c| c == UpId(1)),
            Some(UpId(1)),
            "last one looked at"
        );
    }

    #[test]
    fn auto_idle_timeout_stays_under_what_was_learned() {
        let s = PoolSettings {
            idle_auto: true,
            ..settings(32, 1000, 60, 3600)
        };
        let none = KeepAliveHint::default();
        assert_eq!(
            idle_deadline(1_000, 0, &s, none, None),
            (61_000, CloseReason::IdleTimeout),
            "nothing learned: the ceiling"
        );
        assert_eq!(
            idle_deadline(1_000, 0, &s, none, Some(2_000)),
            (2_500, CloseReason::IdleTimeout),
            "a quarter under 2 s"
        );
        let fixed = PoolSettings {
            idle_auto: false,
            ..s
        };
        assert_eq!(
            idle_deadline(1_000, 0, &fixed, none, Some(2_000)),
            (61_000, CloseReason::IdleTimeout),
            "learning only counts with auto"
        );
    }

    fn key(class: i16, at: u64) -> QueueKey {
        QueueKey { class, at }
    }

    fn drain(p: &mut NodePool) -> Vec<usize> {
        std::iter::from_fn(|| p.take_waiter(|_| Verdict::Take).0.map(|c| c.0)).collect()
    }

    #[test]
    fn a_lower_class_is_served_first_and_fifo_holds_within_a_class() {
        let mut p = NodePool::default();
        // Arrivals at 10, 11, 12, ...: classes 1, 0, 1, 0, -1.
        for (c, class) in [(1, 1), (2, 0), (3, 1), (4, 0), (5, -1)] {
            assert!(p.wait(ClientId(c), key(class, 10 + c as u64), 8));
        }
        assert_eq!(drain(&mut p), [5, 2, 4, 1, 3]);
    }

    #[test]
    fn an_offset_lets_later_arrivals_go_first_for_that_long() {
        let mut p = NodePool::default();
        // 1 queues at 100 with a 50 ms handicap: 2 (at 120) and 3 (at 149) go before it, 4 (at
        // 150, an equal key) and 5 (at 200) after it.
        assert!(p.wait(ClientId(1), key(0, 150), 8));
        for (c, at) in [(2, 120), (3, 149), (4, 150), (5, 200)] {
            assert!(p.wait(ClientId(c), key(0, at), 8));
        }
        assert_eq!(drain(&mut p), [2, 3, 1, 4, 5]);
    }

    #[test]
    fn a_waiter_put_back_keeps_its_rank() {
        let mut p = NodePool::default();
        assert!(p.wait(ClientId(1), key(0, 10), 8));
        assert!(p.wait(ClientId(2), key(0, 20), 8));
        assert_eq!(p.take_waiter(|_| Verdict::Take).0, Some(ClientId(1)));
        // Meanwhile a request of a better class came: it stays ahead of the one put back.
        assert!(p.wait(ClientId(3), key(-1, 30), 8));
        p.wait_front(ClientId(1), key(0, 10));
        assert_eq!(drain(&mut p), [3, 1, 2]);
    }

    #[test]
    fn ranked_queues_match_a_sort_of_the_arrivals() {
        // Any mix of classes and keys comes out as a stable sort by key would give it.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut p = NodePool::default();
            let mut model = Vec::new();
            for c in 0..40usize {
                let k = key((next() % 3) as i16 - 1, next() % 16);
                assert!(p.wait(ClientId(c), k, 64));
                model.push((k, c));
            }
            model.sort_by_key(|&(k, _)| k);
            let want: Vec<usize> = model.into_iter().map(|(_, c)| c).collect();
            assert_eq!(drain(&mut p), want);
        }
    }
}
