//! The upstream side's rules on a virtual clock, with plain `u32`s for connections' I/O: named
//! scenarios for each rule, then seeded random sequences of operations checked against a naive
//! model of the pool and against the counting invariants after every step.

use std::sync::Arc;
use std::time::Duration;

use super::pool::{CloseReason, KeepAliveHint, HINT_MARGIN_MS, IDLE_SCAN};
use super::*;

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);

fn addr() -> SocketAddr {
    "127.0.0.1:9".parse().expect("literal address")
}

fn settings(size: usize, requests: u64, idle_ms: u64, life_ms: u64) -> PoolSettings {
    PoolSettings {
        size,
        requests,
        idle_timeout: Duration::from_millis(idle_ms),
        idle_auto: false,
        max_lifetime: Duration::from_millis(life_ms),
        min_idle: 0,
        preconnect_permille: 0,
        purge_interval: Duration::from_secs(5),
    }
}

fn budgets(n: usize, cores: usize) -> Vec<Arc<NodeBudget>> {
    (0..n).map(|_| Arc::new(NodeBudget::new(cores))).collect()
}

fn back(set: PoolSettings) -> Return {
    Return {
        hint: KeepAliveHint::default(),
        settings: set,
        quiet: true,
        live: true,
        shutting: false,
    }
}

/// Opens and connects a connection to `node` for `owner`, under caps (0 = none).
fn open(
    u: &mut Upstreams<u32>,
    node: NodeId,
    owner: Option<ClientId>,
    caps: (u32, u32),
    now: u64,
) -> Option<UpId> {
    let r = u.reserve(node, caps.0, caps.1)?;
    let tag = u.vacant().index() as u32;
    let id = u.insert(
        tag,
        r,
        Opening {
            node,
            addr: addr(),
            owner,
            sni: 0,
            deadline: now + 1_000,
        },
        now,
    );
    u.connected(id, now);
    Some(id)
}

fn nobody_waits(_: ClientId) -> Waiting {
    None
}

/// Checks the books: counts equal what the slab holds.
fn check_books(u: &Upstreams<u32>) {
    for (i, n) in u.nodes.iter().enumerate() {
        let mine: Vec<&Conn<u32>> = u
            .conns
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c.node.index() == i)
            .collect();
        assert_eq!(n.open as usize, mine.len(), "node {i}: open");
        let connecting = mine
            .iter()
            .filter(|c| c.state == ConnState::Connecting)
            .count();
        assert_eq!(n.connecting as usize, connecting, "node {i}: connecting");
        let idle = mine
            .iter()
            .filter(|c| matches!(c.state, ConnState::Idle(_)))
            .count();
        assert_eq!(n.idle(), idle, "node {i}: idle list");
    }
}

#[test]
fn most_recently_used_goes_first_and_nothing_is_pushed_out_at_release() {
    let mut u = Upstreams::new(0, &budgets(1, 1));
    let set = settings(2, 100, 60_000, 3_600_000);
    let ids: Vec<UpId> = (0..3)
        .map(|i| open(&mut u, A, Some(ClientId(i)), (0, 0), 0).unwrap())
        .collect();
    for (i, &id) in ids.iter().enumerate() {
        let at = 10 * (i as u64 + 1);
        assert_eq!(
            u.release(id, back(set), at, nobody_waits),
            Release::Pooled {
                deadline: at + 60_000
            },
            "a burst may leave more idle than size for a moment"
        );
    }
    assert_eq!(u.node(A).unwrap().idle(), 3);
    let p = u.pop_idle(A, None, 40).unwrap();
    assert_eq!(
        p,
        Popped {
            id: ids[2],
            expired: None
        },
        "the most recent first"
    );
    u.reuse(p.id, ClientId(9), 40);
    assert_eq!(u.node(A).unwrap().counters.reuses, 1);
    check_books(&u);
}

/// Opens `n` connections for requests on `node` and gives them back, so that `n` were in use at
/// once and are now idle.
fn burst(u: &mut Upstreams<u32>, node: NodeId, n: usize, set: PoolSettings, now: u64) {
    let ids: Vec<UpId> = (0..n)
        .map(|i| open(u, node, Some(ClientId(100 + i)), (0, 0), now).unwrap())
        .collect();
    for id in ids {
        assert!(matches!(
            u.release(id, back(set), now, nobody_waits),
            Release::Pooled { .. }
        ));
    }
}

#[test]
fn a_purge_keeps_the_recent_need_and_size_bounds_it() {
    let mut u = Upstreams::new(0, &budgets(1, 1));
    let set = settings(4, 100, 600_000, 3_600_000); // size 4, purged every 5 s
    let mut out = Vec::new();
    u.purge(A, 0, &set, &mut out);
    assert!(out.is_empty(), "the first call only starts an interval");
    burst(&mut u, A, 3, set, 1_000);
    u.purge(A, 4_999, &set, &mut out);
    assert!(out.is_empty(), "not due before the interval is up");
    u.purge(A, 5_000, &set, &mut out);
    assert!(out.is_empty(), "3 were in use at once: 3 idle are kept");
    // The next interval uses none: all three go, the oldest first, as beyond the need.
    u.purge(A, 10_000, &set, &mut out);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|&(_, why)| why == CloseReason::Purged));
    for (id, why) in out.drain(..) {
        u.close(id, why);
    }
    assert_eq!(u.node(A).unwrap().idle(), 0);
    // A burst of 6 against a size of 4: 2 of the 6 the load needed go, as evicted, and connects
    // in requests' paths until the next purge are the pool's fault.
    burst(&mut u, A, 6, set, 11_000);
    u.purge(A, 15_000, &set, &mut out);
    assert_eq!(
        out.iter().map(|&(_, why)| why).collect::<Vec<_>>(),
        [CloseReason::Evicted, CloseReason::Evicted]
    );
    for (id, why) in out.drain(..) {
        u.close(id, why);
    }
    assert_eq!(u.node(A).unwrap().idle(), 4);
    assert_eq!(
        u.node(A).unwrap().snapshot().size_short_of,
        6,
        "the figure for the advice: the load needed 6"
    );
    open(&mut u, A, Some(ClientId(1)), (0, 0), 15_500).unwrap();
    open(&mut u, A, None, (0, 0), 15_500).unwrap();
    let c = &u.node(A).unwrap().counters;
    assert_eq!(
        (c.connects_pool_full, c.background_connects),
        (1, 1),
        "the request's connect is the pool's; the background one is not"
    );
    check_books(&u);
}

#[test]
fn the_warm_floor_and_preconnect_say_what_to_open() {
    let mut u = Upstreams::new(0, &budgets(1, 1));
    let mut set = settings(8, 100, 60_000, 3_600_000);
    set.min_idle = 2;
    assert_eq!(u.warm_gap(A, &set), 2, "an empty node opens its floor");
    set.min_idle = 0;
    set.preconnect_permille = 1_500;
    let ids: Vec<UpId> = (0..3)
        .map(|i| open(&mut u, A, Some(ClientId(i)), (0, 0), 0).unwrap())
        .collect();
    assert_eq!(u.node(A).unwrap().in_use(), 3);
    assert_eq!(u.warm_gap(A, &set), 2, "ceil(1.5 x 3) = 5 open, 3 are");
    u.release(ids[0], back(set), 1, nobody_waits);
    assert_eq!(u.node(A).unwrap().in_use(), 2);
    assert_eq!(u.warm_gap(A, &set), 0, "ceil(1.5 x 2) = 3 open already");
    // The purge keeps what preconnect wants beside those in use.
    let mut out = Vec::new();
    u.purge(A, 0, &set, &mut out);
    u.purge(A, 5_000, &set, &mut out);
    assert!(
        out.is_empty(),
        "the one idle connection is within ceil(1.5 x 2) - 2"
    );
    check_books(&u);
}

#[test]
fn a_connect_refused_by_max_connecting_is_counted() {
    let mut u: Upstreams<u32> = Upstreams::new(0, &budgets(1, 1));
    let first = u.reserve(A, 0, 1).expect("room");
    assert!(u.reserve(A, 0, 1).is_none());
    assert!(u.reserve(A, 1, 0).is_some_and(|r| {
        drop(r);
        true
    }));
    drop(first);
    assert_eq!(u.node(A).unwrap().counters.connecting_capped, 1);
}

#[test]
fn retirement_by_requests_lifetime_and_the_upstreams_hints() {
    let mut u = Upstreams::new(0, &budgets(1, 1));
    let set = settings(8, 2, 60_000, 10_000);
    let id = open(&mut u, A, Some(ClientId(1)), (0, 0), 0).unwrap();
    assert!(matches!(
        u.release(id, back(set), 1, nobody_waits),
        Release::Pooled { .. }
    ));
    let p = u.pop_idle(A, None, 2).unwrap();
    u.reuse(p.id, ClientId(2), 2);
    assert_eq!(
        u.release(id, back(set), 3, nobody_waits),
        Release::Close(CloseReason::MaxRequests),
        "two requests served"
    );
    u.close(id, CloseReason::MaxRequests);

    let id = open(&mut u, A, Some(ClientId(1)), (0, 0), 100).unwrap();
    assert_eq!(
        u.release(id, back(set), 10_100, nobody_waits),
        Release::Close(CloseReason::Lifetime)
    );
    u.close(id, CloseReason::Lifetime);

    // Keep-Alive: max=1 retires after the first request, timeout=5 idles 4 s at most.
    let id = open(&mut u, A, Some(ClientId(1)), (0, 0), 20_000).unwrap();
    let hinted = Return {
        hint: KeepAliveHint {
            timeout_secs: None,
            max: Some(1),
        },
        ..back(set)
    };
    assert_eq!(
        u.release(id, hinted, 20_001, nobody_waits),
        Release::Close(CloseReason::KeepAliveHint)
    );
    u.close(id, CloseReason::KeepAliveHint);
    let id = open(&mut u, A, Some(ClientId(1)), (0, 0), 20_000).unwrap();
    let hinted = Return {
        hint: KeepAliveHint {
            timeout_secs: Some(5),
            max: None,
        },
        ..back(settings(8, 100, 60_000, 3_600_000))
    };
    assert_eq!(
        u.release(id, hinted, 20_001, nobody_waits),
        Release::Pooled {
            deadline: 20_001 + 5_000 - HINT_MARGIN_MS
        }
    );
    assert_eq!(u.expire(id, 24_000), Expiry::Rearm(24_001));
    assert_eq!(
        u.expire(id, 24_001),
        Expiry::Retire(CloseReason::KeepAliveHint)
    );
    // Found expired at checkout, it is handed out only to be closed.
    assert_eq!(
        u.pop_idle(A, None, 30_000),
        Some(Popped {
            id,
            expired: Some(CloseReason::KeepAliveHint)
        })
    );
    u.close(id, CloseReason::KeepAliveHint);
    check_books(&u);
}

#[test]
fn a_connection_that_is_not_quiet_or_not_wanted_closes() {
    let mut u = Upstreams::new(0, &budgets(1, 1));
    let set = settings(8, 100, 60_000, 3_600_000);
    let id = open(&mut u, A, Some(ClientId(1)), (0, 0), 0).unwrap();
    let stale = Return {
        quiet: false,
        ..back(set)
    };
    assert_eq!(
        u.release(id, stale, 1, nobody_waits),
        Release::Close(CloseReason::Stale)
    );
    let gone = Return {
        live: false,
        ..back(set)
    };
    assert_eq!(
        u.release(id, gone, 1, nobody_waits),
        Release::Close(CloseReason::Removed)
    );
    let shutting = Return {
        shutting: true,
        ..back(set)
    };
    assert_eq!(
        u.release(id, shutting, 1, nobody_waits),
        Release::Close(CloseReason::NotReusable)
    );
    u.node_mut(A).unwrap().down = true;
    assert_eq!(
        u.release(id, back(set), 1, nobody_waits),
        Release::Close(CloseReason::Health)
    );
    let off = settings(0, 100, 60_000, 3_600_000);
    u.node_mut(A).unwrap().down = false;
    assert_eq!(
        u.release(id, back(off), 1, nobody_waits),
        Release::Close(CloseReason::NotReusable),
        "size 0: no pooling"
    );
}

#[test]
fn waiters_get_connections_for_their_name_in_queue_order() {
    let mut u = Upstreams::new(0, &budgets(1, 2));
    let set = settings(8, 100, 60_000, 3_600_000);
    assert!(u.wait(A, ClientId(1), QueueKey::default(), 2));
    assert!(u.wait(A, ClientId(2), QueueKey::default(), 2));
    assert!(
        !u.wait(A, ClientId(3), QueueKey::default(), 2),
        "the queue holds two"
    );
    assert_eq!(u.node(A).unwrap().budget.waiting_core(1), Some(0));
    let id = open(&mut u, A, Some(ClientId(7)), (0, 0), 0).unwrap();
    // Client 1 waits for another name (tag 5), client 2 for this connection's (0).
    let judge = |c: ClientId| match c.0 {
        1 => Some(5),
        2 => Some(0),
        _ => None,
    };
    assert_eq!(
        u.release(id, back(set), 1, judge),
        Release::ToWaiter(ClientId(2))
    );
    u.attach(id, ClientId(2), true, 1);
    assert_eq!(u.node(A).unwrap().waiters(), 1, "client 1 kept its place");
    // Client 1 leaves; the next release finds nobody and pools the connection.
    assert_eq!(
        u.release(id, back(set), 2, |_| None),
        Release::Pooled { deadline: 60_002 }
    );
    assert_eq!(u.node(A).unwrap().waiters(), 0);
    assert_eq!(
        u.node(A).unwrap().budget.waiting_core(1),
        None,
        "the caps forgot both"
    );
    check_books(&u);
}

#[test]
fn reservations_follow_connections_across_cores() {
    let shared = budgets(1, 2);
    let mut one = Upstreams::new(0, &shared);
    let mut two = Upstreams::new(1, &shared);
    let set = settings(8, 100, 60_000, 3_600_000);
    let caps = (1, 0);
    let id = open(&mut one, A, Some(ClientId(1)), caps, 0).unwrap();
    assert!(two.reserve(A, 1, 0).is_none(), "the node is at its cap");
    assert!(two.wait(A, ClientId(5), QueueKey::default(), 8));
    // Core 0's connection comes back clean: core 1 waits, so it goes there.
    assert_eq!(
        one.release(id, back(set), 10, nobody_waits),
        Release::HandOver(1)
    );
    let h = one.hand_over(id, 10).unwrap();
    assert_eq!(shared[0].open_now(), 1, "the reservation travels");
    let there = two.adopt(h, 10).unwrap();
    assert_eq!(
        two.release(there, back(set), 10, |_| Some(0)),
        Release::ToWaiter(ClientId(5))
    );
    check_books(&one);
    check_books(&two);
    two.close(there, CloseReason::Error).unwrap();
    assert_eq!(shared[0].open_now(), 0, "closing gives the place back");
    // A failed connect gives back its places too.
    let r = one.reserve(A, 1, 1).unwrap();
    let id = one.insert(
        0,
        r,
        Opening {
            node: A,
            addr: addr(),
            owner: None,
            sni: 0,
            deadline: 5,
        },
        0,
    );
    assert!(one.reserve(A, 1, 1).is_none());
    assert_eq!(one.expire(id, 5), Expiry::ConnectTimedOut);
    let closed = one.close(id, CloseReason::Error).unwrap();
    assert!(closed.connecting && closed.freed);
    assert!(one.reserve(A, 1, 1).is_some());
    check_books(&one);
}

/// A connection adopted from elsewhere (another core, or the process this one upgrades) keeps
/// its age and its count: `max_lifetime` and `requests` retire it when they would have where it
/// was opened. The process that adopts it may be younger than the connection, which is why the
/// runtime's timeline starts at `clock::ORIGIN_MS`.
#[test]
fn an_adopted_connection_keeps_its_age_and_count() {
    let shared = budgets(1, 1);
    let mut u = Upstreams::new(0, &shared);
    let set = settings(8, 100, 60_000, 3_600_000);
    let now = crate::clock::ORIGIN_MS + 50;
    let h = Handover {
        io: 7,
        node: A,
        addr: addr(),
        age_ms: 3_590_000,
        served: 98,
        hint: KeepAliveHint::default(),
        sni: 0,
        reservation: u.reserve(A, 0, 0).expect("no caps"),
    };
    let id = u.adopt(h, now).expect("a known node");
    assert_eq!(u.conn(id).map(Conn::opened_at), Some(now - 3_590_000));
    // Filed idle, it retires at the end of its life, ten seconds on, not an hour on.
    assert_eq!(
        u.release(id, back(set), now, nobody_waits),
        Release::Pooled {
            deadline: now + 10_000
        }
    );
    assert_eq!(
        u.expire(id, now + 10_000),
        Expiry::Retire(CloseReason::Lifetime)
    );
    // Reused, its 99th and 100th exchanges are its last.
    let p = u.pop_idle(A, None, now + 1).expect("idle");
    u.reuse(p.id, ClientId(1), now + 1);
    assert_eq!(
        u.release(p.id, back(set), now + 2, nobody_waits),
        Release::Pooled {
            deadline: now + 10_000
        }
    );
    let p = u.pop_idle(A, None, now + 3).expect("idle");
    u.reuse(p.id, ClientId(1), now + 3);
    assert_eq!(
        u.release(p.id, back(set), now + 4, nobody_waits),
        Release::Close(CloseReason::MaxRequests)
    );
    check_books(&u);
}

/// An idle connection exported for a binary upgrade leaves this process's books as a close for
/// `upgrade`, with its age and count, and its reservation frees its place in the caps once the
/// loop drops it.
#[test]
fn an_export_is_a_close_for_upgrade() {
    let shared = budgets(1, 1);
    let mut u = Upstreams::new(0, &shared);
    let set = settings(8, 100, 60_000, 3_600_000);
    let id = open(&mut u, A, Some(ClientId(1)), (4, 0), 100).unwrap();
    assert!(matches!(
        u.release(id, back(set), 200, nobody_waits),
        Release::Pooled { .. }
    ));
    let h = u.export(id, 700).expect("idle");
    assert_eq!((h.age_ms, h.served, h.node), (600, 1, A));
    assert_eq!(shared[0].open_now(), 1, "held until the loop drops it");
    drop(h.reservation);
    assert_eq!(shared[0].open_now(), 0);
    let n = &u.snapshot()[0];
    assert_eq!(n.closes[CloseReason::Upgrade.index()], 1);
    assert_eq!(n.handed_over, 0, "not a hand-over between cores");
    assert!(u.pop_idle(A, None, 800).is_none(), "off the idle list");
    check_books(&u);
}

#[test]
fn a_capped_connection_closes_for_waiters_of_other_names() {
    let mut u = Upstreams::new(0, &budgets(1, 1));
    let set = settings(8, 100, 60_000, 3_600_000);
    let id = open(&mut u, A, Some(ClientId(1)), (1, 0), 0).unwrap();
    assert!(u.wait(A, ClientId(2), QueueKey::default(), 8));
    assert_eq!(
        u.release(id, back(set), 1, |_| Some(42)),
        Release::Close(CloseReason::Evicted)
    );
    let closed = u.close(id, CloseReason::Evicted).unwrap();
    assert!(closed.freed);
}

#[test]
fn learned_idle_timeout_shortens_the_deadline() {
    let mut u = Upstreams::new(0, &budgets(1, 1));
    let auto = PoolSettings {
        idle_auto: true,
        ..settings(8, 100, 60_000, 3_600_000)
    };
    for i in 0..2 {
        let id = open(&mut u, A, Some(ClientId(i)), (0, 0), 0).unwrap();
        u.release(id, back(auto), 0, nobody_waits);
        // The upstream closes it after 2 s idle, twice: learned.
        u.closed_by_upstream(id, 2_000 + i as u64 * 50).unwrap();
    }
    assert_eq!(
        u.node(A).unwrap().counters.closes[CloseReason::Stale.index()],
        2
    );
    let id = open(&mut u, A, Some(ClientId(9)), (0, 0), 10_000).unwrap();
    assert_eq!(
        u.release(id, back(auto), 10_000, nobody_waits),
        Release::Pooled { deadline: 11_500 },
        "a quarter under the learned 2 s"
    );
}

// ---------------------------------------------------------------- the model

/// splitmix64: a seeded generator, so a failure names a sequence that can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The naive model: every connection's facts in a plain list, and the rules written out again
/// without the LRU, the slab or the timer.
#[derive(Debug, Clone)]
struct Model {
    id: UpId,
    node: NodeId,
    sni: u64,
    opened: u64,
    served: u64,
    /// Some(order) while idle: higher is more recent.
    idle: Option<u64>,
    deadline: u64,
    why: CloseReason,
    connecting: bool,
}

fn model_retire(
    m: &Model,
    now: u64,
    set: &PoolSettings,
    hint: KeepAliveHint,
) -> Option<CloseReason> {
    if set.size == 0 {
        return Some(CloseReason::NotReusable);
    }
    if let Some(max) = hint.max.map(u64::from) {
        if (set.requests == 0 || max < set.requests) && m.served >= max {
            return Some(CloseReason::KeepAliveHint);
        }
    }
    if set.requests > 0 && m.served >= set.requests {
        return Some(CloseReason::MaxRequests);
    }
    if hint
        .timeout_secs
        .is_some_and(|t| u64::from(t) * 1000 <= HINT_MARGIN_MS)
    {
        return Some(CloseReason::KeepAliveHint);
    }
    let life = set.max_lifetime.as_millis() as u64;
    (now >= m.opened + life).then_some(CloseReason::Lifetime)
}

fn model_deadline(
    m: &Model,
    now: u64,
    set: &PoolSettings,
    hint: KeepAliveHint,
) -> (u64, CloseReason) {
    let mut idle = set.idle_timeout.as_millis() as u64;
    let mut why = CloseReason::IdleTimeout;
    if let Some(t) = hint.timeout_secs {
        let h = (u64::from(t) * 1000).saturating_sub(HINT_MARGIN_MS);
        if h < idle {
            idle = h;
            why = CloseReason::KeepAliveHint;
        }
    }
    let life = m.opened + set.max_lifetime.as_millis() as u64;
    if life < now + idle {
        (life, CloseReason::Lifetime)
    } else {
        (now + idle, why)
    }
}

#[test]
fn random_operations_agree_with_the_naive_model() {
    for seed in 0..300u64 {
        run_model(seed);
    }
}

fn run_model(seed: u64) {
    let mut rng = Rng(seed);
    let shared = budgets(2, 1);
    let mut u: Upstreams<u32> = Upstreams::new(0, &shared);
    let mut model: Vec<Model> = Vec::new();
    let mut now = 0u64;
    let mut order = 0u64;
    let set = settings(
        1 + rng.below(4) as usize,
        1 + rng.below(5),
        500 + rng.below(3_000),
        5_000 + rng.below(20_000),
    );
    let cap = rng.below(4) as u32; // 0: no cap
                                   // Per node: the most connections in use at once since the last purge, and when that was.
    let mut peak = [0usize; 2];
    let mut purged_at: [Option<u64>; 2] = [None; 2];
    for step in 0..400 {
        let ctx = format!("seed {seed} step {step}");
        now += rng.below(400);
        match rng.below(7) {
            // Open a connection for a request, maybe for a second SNI name.
            0 | 1 => {
                let node = if rng.below(3) == 0 { B } else { A };
                let sni = rng.below(2);
                let held = model.iter().filter(|m| m.node == node).count() as u32;
                match u.reserve(node, cap, 0) {
                    None => assert!(cap > 0 && held >= cap, "{ctx}: refused under the cap"),
                    Some(r) => {
                        assert!(cap == 0 || held < cap, "{ctx}: a cap let one more through");
                        let id = u.insert(
                            0,
                            r,
                            Opening {
                                node,
                                addr: addr(),
                                owner: Some(ClientId(1)),
                                sni,
                                deadline: now + 100,
                            },
                            now,
                        );
                        model.push(Model {
                            id,
                            node,
                            sni,
                            opened: now,
                            served: 0,
                            idle: None,
                            deadline: now + 100,
                            why: CloseReason::IdleTimeout,
                            connecting: true,
                        });
                        // In use from here, even if its connect fails within this step.
                        let in_use = model
                            .iter()
                            .filter(|m| m.node == node && m.idle.is_none())
                            .count();
                        peak[node.index()] = peak[node.index()].max(in_use);
                        if rng.below(5) == 0 {
                            u.connect_failed(id, Cause::ConnectRefused);
                            u.close(id, CloseReason::Error).unwrap();
                            model.retain(|m| m.id != id);
                        } else {
                            u.connected(id, now);
                            model.last_mut().unwrap().connecting = false;
                        }
                    }
                }
            }
            // Return an active connection after an exchange, with a random hint.
            2 => {
                let active: Vec<usize> = (0..model.len())
                    .filter(|&i| model[i].idle.is_none() && !model[i].connecting)
                    .collect();
                if active.is_empty() {
                    continue;
                }
                let i = active[rng.below(active.len() as u64) as usize];
                let hint = KeepAliveHint {
                    timeout_secs: (rng.below(4) == 0).then(|| rng.below(5) as u32),
                    max: (rng.below(4) == 0).then(|| 1 + rng.below(4) as u32),
                };
                let quiet = rng.below(10) != 0;
                model[i].served += 1;
                let want = model_retire(&model[i], now, &set, hint)
                    .or((!quiet).then_some(CloseReason::Stale));
                let got = u.release(
                    model[i].id,
                    Return {
                        hint,
                        settings: set,
                        quiet,
                        live: true,
                        shutting: false,
                    },
                    now,
                    nobody_waits,
                );
                match (want, got) {
                    (Some(why), Release::Close(got_why)) => {
                        assert_eq!(got_why, why, "{ctx}");
                        u.close(model[i].id, why).unwrap();
                        model.remove(i);
                    }
                    (None, Release::Pooled { deadline }) => {
                        let (d, why) = model_deadline(&model[i], now, &set, hint);
                        assert_eq!(deadline, d, "{ctx}: idle deadline");
                        order += 1;
                        model[i].idle = Some(order);
                        model[i].deadline = d;
                        model[i].why = why;
                    }
                    other => panic!("{ctx}: model {want:?}, pool {other:?}"),
                }
            }
            // A request asks for an idle connection for a name.
            3 => {
                let node = if rng.below(3) == 0 { B } else { A };
                let sni = rng.below(2);
                let mut idle: Vec<&Model> = model
                    .iter()
                    .filter(|m| m.node == node && m.idle.is_some())
                    .collect();
                idle.sort_by_key(|m| std::cmp::Reverse(m.idle));
                let want = idle
                    .iter()
                    .take(IDLE_SCAN)
                    .find(|m| m.sni == sni)
                    .map(|m| m.id);
                let got = u.pop_idle(node, Some(sni), now);
                assert_eq!(got.map(|p| p.id), want, "{ctx}: checkout");
                if let Some(p) = got {
                    let m = model.iter_mut().find(|m| m.id == p.id).unwrap();
                    let expired = (now >= m.deadline).then_some(m.why);
                    assert_eq!(p.expired, expired, "{ctx}: expiry at checkout");
                    if let Some(why) = expired {
                        u.close(p.id, why).unwrap();
                        model.retain(|m| m.id != p.id);
                    } else {
                        m.idle = None;
                        u.reuse(p.id, ClientId(2), now);
                    }
                }
            }
            // A timer fires for some connection.
            4 => {
                if model.is_empty() {
                    continue;
                }
                let i = rng.below(model.len() as u64) as usize;
                let m = model[i].clone();
                let got = u.expire(m.id, now);
                if m.idle.is_some() {
                    if now >= m.deadline {
                        assert_eq!(got, Expiry::Retire(m.why), "{ctx}");
                        u.close(m.id, m.why).unwrap();
                        model.remove(i);
                    } else {
                        assert_eq!(got, Expiry::Rearm(m.deadline), "{ctx}");
                    }
                } else {
                    assert_eq!(
                        got,
                        Expiry::Keep,
                        "{ctx}: an active connection has no deadline"
                    );
                }
            }
            // The core's tick purges a node.
            5 => {
                let node = if rng.below(3) == 0 { B } else { A };
                let mut got = Vec::new();
                u.purge(node, now, &set, &mut got);
                let k = node.index();
                let want: Vec<(UpId, CloseReason)> = match purged_at[k] {
                    None => {
                        purged_at[k] = Some(now);
                        Vec::new()
                    }
                    Some(at) if now < at + 5_000 => Vec::new(),
                    Some(_) => {
                        let in_use = model
                            .iter()
                            .filter(|m| m.node == node && m.idle.is_none())
                            .count();
                        let need = peak[k].saturating_sub(in_use);
                        let keep = need.min(set.size);
                        let mut idle: Vec<&Model> = model
                            .iter()
                            .filter(|m| m.node == node && m.idle.is_some())
                            .collect();
                        idle.sort_by_key(|m| m.idle);
                        let surplus = idle.len().saturating_sub(need);
                        let n = idle.len().saturating_sub(keep);
                        peak[k] = in_use;
                        purged_at[k] = Some(now);
                        idle[..n]
                            .iter()
                            .enumerate()
                            .map(|(j, m)| {
                                let why = if j < surplus {
                                    CloseReason::Purged
                                } else {
                                    CloseReason::Evicted
                                };
                                (m.id, why)
                            })
                            .collect()
                    }
                };
                assert_eq!(got, want, "{ctx}: purge");
                for (id, why) in got {
                    u.close(id, why).unwrap();
                    model.retain(|m| m.id != id);
                }
            }
            // Something fails on an active connection.
            _ => {
                let active: Vec<usize> = (0..model.len())
                    .filter(|&i| model[i].idle.is_none())
                    .collect();
                if let Some(&i) = active.first() {
                    u.close(model[i].id, CloseReason::Error).unwrap();
                    model.remove(i);
                }
            }
        }
        check_books(&u);
        for node in [A, B] {
            let in_use = model
                .iter()
                .filter(|m| m.node == node && m.idle.is_none())
                .count();
            peak[node.index()] = peak[node.index()].max(in_use);
            assert_eq!(
                u.node(node).unwrap().in_use(),
                in_use,
                "{ctx}: connections in use"
            );
            let held = model.iter().filter(|m| m.node == node).count() as u32;
            let counted = shared[node.index()].open_now();
            if cap > 0 {
                assert_eq!(
                    counted, held,
                    "{ctx}: reservations equal open and connecting"
                );
            } else {
                assert_eq!(counted, 0, "{ctx}: no cap, nothing counted");
            }
        }
    }
}
