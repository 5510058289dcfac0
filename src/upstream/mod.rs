//! The upstream side of one core: its upstream connections and, per node, the pool they belong
//! to, and every rule about them. It owns the connection slab, one [`Node`] record per node (idle
//! list, waiters, open and connecting counts, caps, health, latency, counters) and the hand-over
//! of connections between cores. The event loop owns the sockets' I/O and asks this module what
//! to do: its methods take `now` and return decisions (reuse this connection, open one, queue,
//! pool it, give it to a waiter or another core, close it and why) that the loop carries out.
//! A connection's I/O state is a type parameter `C`, so every rule here is tested with plain
//! values on a virtual clock (`upstream/tests.rs`, with a seeded model test).
//!
//! Invariants kept here, and only here:
//! - A connection is in exactly one state: connecting, active (owned by a client, or briefly by
//!   nobody while a decision is made), idle in its node's LRU list, or broken (its connect
//!   failed; its owner closes it).
//! - `Node::open` counts the node's connections in the slab; `Node::connecting` those still
//!   connecting; idle ones are exactly those in the node's LRU list.
//! - Every connection holds a [`Reservation`] of its node's process-wide caps from its connect
//!   to its close (or its hand-over to another core, which takes the reservation with it), so the
//!   caps' counts equal the connections open and connecting across the process.

pub mod advice;
pub mod budget;
pub mod node;
pub mod pool;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::balance::Load;
use crate::cause::Cause;
use crate::config::PoolSettings;
use crate::id::{ClientId, NodeId, UpId};
use crate::lru::Handle;
use crate::metrics::NodeCounters;
use crate::slab::Slab;

pub use budget::{Full, NodeBudget, Reservation};
pub use node::Node;
pub use pool::QueueKey;
use pool::{idle_deadline, retire_reason, CloseReason, KeepAliveHint, Verdict};

/// Where an upstream connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// TCP, then TLS where the node has it, is being set up; the connect timeout covers both.
    Connecting,
    /// Connected and owned by a client, or by nobody while a decision is made about it.
    Active,
    /// In its node's idle list.
    Idle(Handle),
    /// The connect failed, for this reason; the owner notices and closes it.
    Broken(Cause),
}

/// One upstream connection: its I/O (`io`) and what the pool knows of it.
#[derive(Debug)]
pub struct Conn<C> {
    pub io: C,
    pub node: NodeId,
    pub addr: SocketAddr,
    state: ConnState,
    /// The client whose request it carries (or was opened for).
    pub owner: Option<ClientId>,
    /// The tag of the SNI name it was made for (`tls::sni_tag`); 0 for pools with one name.
    pub sni: u64,
    opened_at: u64,
    /// How long its connect took, for the access log.
    pub connect_ms: u64,
    /// Exchanges it has carried.
    served: u64,
    /// What the upstream last said about keeping it (Keep-Alive timeout and max).
    hint: KeepAliveHint,
    idle_since: u64,
    /// While connecting, when the connect times out; while idle, when it retires (and why);
    /// otherwise 0.
    deadline: u64,
    idle_reason: CloseReason,
    /// The timer entry armed for it, if any (the event loop's lazy timers).
    pub timer_at: u64,
    reservation: Reservation,
}

impl<C> Conn<C> {
    pub fn state(&self) -> ConnState {
        self.state
    }

    pub fn deadline(&self) -> u64 {
        self.deadline
    }

    pub fn opened_at(&self) -> u64 {
        self.opened_at
    }

    /// What the upstream last said about keeping the connection.
    pub fn hint(&self) -> KeepAliveHint {
        self.hint
    }
}

/// A new connection, as the loop opened it.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub owner: Option<ClientId>,
    pub sni: u64,
    /// When the connect times out.
    pub deadline: u64,
}

/// An idle connection taken off its node's list for a request: the loop checks it is still
/// quiet (I/O) before it uses it. `expired`: it outlived its time while idle and must close
/// for this reason instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Popped {
    pub id: UpId,
    pub expired: Option<CloseReason>,
}

/// How a connection comes back after an exchange that ended cleanly.
#[derive(Debug, Clone, Copy)]
pub struct Return {
    /// What the upstream said about keeping it.
    pub hint: KeepAliveHint,
    /// The pool settings of the exchange that used it.
    pub settings: PoolSettings,
    /// Nothing arrived on it since the exchange (checked by the loop, which does the I/O).
    pub quiet: bool,
    /// Its node is still in the configuration.
    pub live: bool,
    /// The core is shutting down.
    pub shutting: bool,
}

/// What becomes of a returned connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Give it to this queued request (`attach`).
    ToWaiter(ClientId),
    /// Give it to this core, whose requests wait for the node (`hand_over`).
    HandOver(usize),
    /// Filed as idle until `deadline`.
    Pooled { deadline: u64 },
    /// Close it, for this reason.
    Close(CloseReason),
}

/// What a timer found when it fired for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing is due yet: arm again for this deadline.
    Rearm(u64),
    /// Nothing to do.
    Keep,
    /// An idle connection outlived its time: close it for this reason.
    Retire(CloseReason),
    /// A connect opened without a request (a warm one) timed out: close it, and count it
    /// against the node.
    ConnectTimedOut,
}

/// A connection that was closed: its I/O for the loop to finish, and whether its reservation
/// freed capacity that waiters may use.
#[derive(Debug)]
pub struct Closed<C> {
    pub io: C,
    pub node: NodeId,
    /// It was still connecting (its TLS session, if any, never finished its handshake).
    pub connecting: bool,
    /// It counted against a cap, so its close made room.
    pub freed: bool,
}

/// A connection on its way to another core, with its place in the caps.
#[derive(Debug)]
pub struct Handover<C> {
    pub io: C,
    pub node: NodeId,
    pub addr: SocketAddr,
    pub age_ms: u64,
    pub served: u64,
    pub hint: KeepAliveHint,
    pub sni: u64,
    pub reservation: Reservation,
}

/// What a waiter judge says of a queued request: it waits for a connection made for this SNI
/// tag, or it no longer waits.
pub type Waiting = Option<u64>;

#[derive(Debug)]
pub struct Upstreams<C> {
    conns: Slab<Conn<C>>,
    nodes: Vec<Node>,
    /// This core's index, for the per-core waiter counts of the caps.
    core: usize,
}

impl<C> Upstreams<C> {
    pub fn new(core: usize, budgets: &[Arc<NodeBudget>]) -> Self {
        let mut u = Upstreams {
            conns: Slab::default(),
            nodes: Vec::new(),
            core,
        };
        u.sync(budgets);
        u
    }

    /// Follows the pool registry after a reload: a node per pool id. Ids only grow, and a node
    /// keeps its record (and connections) for the life of the process.
    pub fn sync(&mut self, budgets: &[Arc<NodeBudget>]) {
        for (i, b) in budgets.iter().enumerate() {
            match self.nodes.get_mut(i) {
                Some(n) => n.budget = Arc::clone(b),
                None => self.nodes.push(Node::new(Arc::clone(b))),
            }
        }
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index())
    }

    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id.index())
    }

    pub fn conn(&self, id: UpId) -> Option<&Conn<C>> {
        self.conns.get(id.index())
    }

    pub fn conn_mut(&mut self, id: UpId) -> Option<&mut Conn<C>> {
        self.conns.get_mut(id.index())
    }

    pub fn state(&self, id: UpId) -> Option<ConnState> {
        self.conn(id).map(|c| c.state)
    }

    /// Every connection, for shutdown.
    pub fn ids(&self) -> Vec<UpId> {
        self.conns.keys().into_iter().map(UpId).collect()
    }

    /// The id the next connection will have, so the loop can register its socket first.
    pub fn vacant(&self) -> UpId {
        UpId(self.conns.vacant_key())
    }

    /// Counters of every node, gauges filled in.
    pub fn snapshot(&self) -> Vec<NodeCounters> {
        self.nodes.iter().map(Node::snapshot).collect()
    }

    // ------------------------------------------------------------------ opening

    /// A place in `node`'s caps for a new connection (0 = no cap); None at a cap. A refusal by
    /// `max_connecting` is counted: it is what a connect storm looks like.
    pub fn reserve(
        &mut self,
        node: NodeId,
        max_connections: u32,
        max_connecting: u32,
    ) -> Option<Reservation> {
        let n = self.nodes.get_mut(node.index())?;
        match Reservation::take(&n.budget, max_connections, max_connecting) {
            Ok(r) => Some(r),
            Err(Full::Connecting) => {
                n.counters.connecting_capped += 1;
                None
            }
            Err(Full::Connections) => None,
        }
    }

    /// Files a connection the loop started, under `reservation`.
    pub fn insert(&mut self, io: C, reservation: Reservation, o: Opening, now: u64) -> UpId {
        let id = UpId(self.conns.insert(Conn {
            io,
            node: o.node,
            addr: o.addr,
            state: ConnState::Connecting,
            owner: o.owner,
            sni: o.sni,
            opened_at: now,
            connect_ms: 0,
            served: 0,
            hint: KeepAliveHint::default(),
            idle_since: 0,
            deadline: o.deadline,
            idle_reason: CloseReason::IdleTimeout,
            timer_at: 0,
            reservation,
        }));
        if let Some(n) = self.nodes.get_mut(o.node.index()) {
            n.open += 1;
            n.connecting += 1;
            n.counters.connects += 1;
            if o.owner.is_some() {
                n.took();
                if n.size_limited {
                    n.counters.connects_pool_full += 1;
                }
            } else {
                n.counters.background_connects += 1;
            }
        }
        id
    }

    /// The connect (and TLS handshake) finished.
    pub fn connected(&mut self, id: UpId, now: u64) {
        let Some(c) = self.conns.get_mut(id.index()) else {
            return;
        };
        if c.state != ConnState::Connecting {
            return;
        }
        c.state = ConnState::Active;
        c.deadline = 0;
        c.connect_ms = now.saturating_sub(c.opened_at);
        c.reservation.connect_done();
        if let Some(n) = self.nodes.get_mut(c.node.index()) {
            n.connecting -= 1;
        }
    }

    /// The connect failed: the connection stays, broken, until its owner (or the loop, for one
    /// without) closes it.
    pub fn connect_failed(&mut self, id: UpId, cause: Cause) {
        let Some(c) = self.conns.get_mut(id.index()) else {
            return;
        };
        if c.state != ConnState::Connecting {
            return;
        }
        c.state = ConnState::Broken(cause);
        c.reservation.connect_done();
        if let Some(n) = self.nodes.get_mut(c.node.index()) {
            n.connecting -= 1;
            n.counters.connect_failures += 1;
        }
    }

    /// Lets a connection still connecting go on without its request: it is pooled once
    /// connected, as a warm connection is.
    pub fn disown(&mut self, id: UpId) {
        if let Some(c) = self.conns.get_mut(id.index()) {
            if c.owner.take().is_some() {
                if let Some(n) = self.nodes.get_mut(c.node.index()) {
                    n.let_go();
                }
            }
        }
    }

    // ------------------------------------------------------------------ checkout

    /// The most recently used idle connection of `node` made for the SNI tag `want` (any with
    /// None), taken off the list; the loop checks it is still quiet, then `reuse`s it or closes
    /// it. Looks at no more than `pool::IDLE_SCAN` of them.
    pub fn pop_idle(&mut self, node: NodeId, want: Option<u64>, now: u64) -> Option<Popped> {
        let conns = &self.conns;
        let n = self.nodes.get_mut(node.index())?;
        let fits =
            |id: &UpId| want.is_none_or(|w| conns.get(id.index()).is_some_and(|c| c.sni == w));
        let id = n.pool.take_idle_where(fits)?;
        let c = self.conns.get_mut(id.index())?;
        c.state = ConnState::Active;
        let expired = (c.deadline != 0 && now >= c.deadline).then_some(c.idle_reason);
        Some(Popped { id, expired })
    }

    /// The least recently used idle connection of `node`, to make room when the caps are held by
    /// idle connections made for other names; the loop closes it.
    pub fn pop_oldest_idle(&mut self, node: NodeId) -> Option<UpId> {
        let id = self.nodes.get_mut(node.index())?.pool.oldest_idle()?;
        if let Some(c) = self.conns.get_mut(id.index()) {
            c.state = ConnState::Active;
        }
        Some(id)
    }

    /// Every idle connection of `node`, taken off the list for the loop to close (the node left
    /// the configuration, or active checks took it out).
    pub fn drain_idle(&mut self, node: NodeId) -> Vec<UpId> {
        let mut out = Vec::new();
        let Some(n) = self.nodes.get_mut(node.index()) else {
            return out;
        };
        while let Some(id) = n.pool.take_idle() {
            if let Some(c) = self.conns.get_mut(id.index()) {
                c.state = ConnState::Active;
            }
            out.push(id);
        }
        out
    }

    /// A popped idle connection goes to `owner`'s request.
    pub fn reuse(&mut self, id: UpId, owner: ClientId, now: u64) {
        let Some(c) = self.conns.get_mut(id.index()) else {
            return;
        };
        let took = c.owner.replace(owner).is_none();
        c.deadline = 0;
        let age = now.saturating_sub(c.idle_since);
        if let Some(n) = self.nodes.get_mut(c.node.index()) {
            if took {
                n.took();
            }
            n.counters.reuses += 1;
            n.counters.reuse_idle_age.record(age);
        }
    }

    /// Gives a connection (connected, or still connecting) to a request that waited `waited_ms`
    /// in the queue; `reused`: it served an exchange before.
    pub fn attach(&mut self, id: UpId, owner: ClientId, reused: bool, waited_ms: u64) {
        let Some(c) = self.conns.get_mut(id.index()) else {
            return;
        };
        if c.state != ConnState::Connecting {
            c.state = ConnState::Active;
            c.deadline = 0;
        }
        let took = c.owner.replace(owner).is_none();
        if let Some(n) = self.nodes.get_mut(c.node.index()) {
            if took {
                n.took();
            }
            n.counters.wait.record(waited_ms);
            if reused {
                n.counters.reuses += 1;
            }
        }
    }

    // ------------------------------------------------------------------ release

    /// Decides what becomes of a connection whose exchange ended cleanly, in order: close it
    /// (shutting down, node gone or down, retired by its limits or the upstream's hints, or not
    /// quiet any more), give it to a waiter for its name (`waiting` judges each queued request),
    /// close it so that waiters for other names get its place in the caps, hand it to a core
    /// whose requests wait, or file it as idle.
    pub fn release(
        &mut self,
        id: UpId,
        ret: Return,
        now: u64,
        mut waiting: impl FnMut(ClientId) -> Waiting,
    ) -> Release {
        let core = self.core;
        let Some(c) = self.conns.get_mut(id.index()) else {
            return Release::Close(CloseReason::Error);
        };
        let had_owner = c.owner.take().is_some();
        c.served += u64::from(had_owner);
        c.hint = ret.hint;
        c.state = ConnState::Active;
        let node = c.node;
        let Some(n) = self.nodes.get_mut(node.index()) else {
            return Release::Close(CloseReason::Removed);
        };
        if had_owner {
            n.let_go();
        }
        if ret.shutting {
            return Release::Close(CloseReason::NotReusable);
        }
        if !ret.live {
            return Release::Close(CloseReason::Removed);
        }
        if n.down {
            return Release::Close(CloseReason::Health);
        }
        if let Some(why) = retire_reason(now, c.opened_at, c.served, &ret.settings, ret.hint) {
            return Release::Close(why);
        }
        if !ret.quiet {
            return Release::Close(CloseReason::Stale);
        }
        let sni = c.sni;
        let (taken, left) = n.pool.take_waiter(|cid| match waiting(cid) {
            Some(w) if w == sni => Verdict::Take,
            Some(_) => Verdict::Skip,
            None => Verdict::Drop,
        });
        for _ in 0..left {
            n.budget.remove_waiter(core);
        }
        if let Some(cid) = taken {
            return Release::ToWaiter(cid);
        }
        let capped = c.reservation.counts_connections();
        if capped && n.pool.has_waiters() {
            // Requests wait for connections made for other names while this one holds a place
            // they need: it closes, and the freed place opens one for them.
            return Release::Close(CloseReason::Evicted);
        }
        if capped {
            if let Some(other) = n.budget.waiting_core(core) {
                return Release::HandOver(other);
            }
        }
        let learned = n.budget.learned_idle_ms();
        let (deadline, why) = idle_deadline(now, c.opened_at, &ret.settings, ret.hint, learned);
        c.state = ConnState::Idle(n.pool.put_idle(id));
        c.idle_since = now;
        c.deadline = deadline;
        c.idle_reason = why;
        Release::Pooled { deadline }
    }

    // ------------------------------------------------------------------ closing

    /// Takes a connection out and does its books: lists, counts, the close counted by reason,
    /// its place in the caps given back. The loop finishes its I/O.
    pub fn close(&mut self, id: UpId, why: CloseReason) -> Option<Closed<C>> {
        let c = self.conns.remove(id.index())?;
        let connecting = c.state == ConnState::Connecting;
        if let Some(n) = self.nodes.get_mut(c.node.index()) {
            if let ConnState::Idle(h) = c.state {
                n.pool.remove_idle(h);
            }
            if c.owner.is_some() {
                n.let_go();
            }
            if connecting {
                n.connecting -= 1;
            }
            n.open -= 1;
            n.counters.closed(why);
        }
        let freed = c.reservation.capped();
        // Dropping the reservation gives back its place in the caps.
        let Conn { io, node, .. } = c;
        Some(Closed {
            io,
            node,
            connecting,
            freed,
        })
    }

    /// An idle connection turned readable: the upstream closed it (or sent bytes nobody asked
    /// for). Records its idle age and learns from it (the advice says so when our idle timeout
    /// is the longer one), and closes it as stale.
    pub fn closed_by_upstream(&mut self, id: UpId, now: u64) -> Option<Closed<C>> {
        let c = self.conns.get(id.index())?;
        let (node, age) = (c.node, now.saturating_sub(c.idle_since));
        if let Some(n) = self.nodes.get_mut(node.index()) {
            n.counters.upstream_closed_idle_age.record(age);
            n.budget.saw_idle_close(age);
        }
        self.close(id, CloseReason::Stale)
    }

    // ------------------------------------------------------------------ timers

    /// A timer armed for connection `id` fired at `now`.
    pub fn expire(&mut self, id: UpId, now: u64) -> Expiry {
        let Some(c) = self.conns.get(id.index()) else {
            return Expiry::Keep;
        };
        if c.deadline == 0 {
            return Expiry::Keep;
        }
        if now < c.deadline {
            return Expiry::Rearm(c.deadline);
        }
        match c.state {
            ConnState::Idle(_) => Expiry::Retire(c.idle_reason),
            ConnState::Connecting if c.owner.is_none() => Expiry::ConnectTimedOut,
            // An owned connect's timeout is its request's.
            _ => Expiry::Keep,
        }
    }

    // ------------------------------------------------------------------ waiters

    /// Queues `client` for `node` at its rank `key`; false when the queue already holds `max`.
    pub fn wait(&mut self, node: NodeId, client: ClientId, key: QueueKey, max: usize) -> bool {
        let core = self.core;
        let Some(n) = self.nodes.get_mut(node.index()) else {
            return false;
        };
        if !n.pool.wait(client, key, max) {
            return false;
        }
        n.counters.queued += 1;
        n.budget.add_waiter(core);
        true
    }

    /// Puts a waiter back at the head of the queue, with the rank it queued at: its turn came,
    /// but the caps did not.
    pub fn wait_front(&mut self, node: NodeId, client: ClientId, key: QueueKey) {
        let core = self.core;
        if let Some(n) = self.nodes.get_mut(node.index()) {
            n.pool.wait_front(client, key);
            n.budget.add_waiter(core);
        }
    }

    /// A waiter gave up (or was served another way).
    pub fn forget_waiter(&mut self, node: NodeId, client: ClientId) {
        let core = self.core;
        if let Some(n) = self.nodes.get_mut(node.index()) {
            if n.pool.forget_waiter(client) {
                n.budget.remove_waiter(core);
            }
        }
    }

    /// The first request still waiting for `node` (`waiting` judges each; any name), with the
    /// key it queued at.
    pub fn next_waiter(
        &mut self,
        node: NodeId,
        mut waiting: impl FnMut(ClientId) -> Waiting,
    ) -> Option<(ClientId, QueueKey)> {
        let core = self.core;
        let n = self.nodes.get_mut(node.index())?;
        let (taken, left) = n.pool.take_ranked(|cid| match waiting(cid) {
            Some(_) => Verdict::Take,
            None => Verdict::Drop,
        });
        for _ in 0..left {
            n.budget.remove_waiter(core);
        }
        taken
    }

    pub fn has_waiters(&self, node: NodeId) -> bool {
        self.node(node).is_some_and(|n| n.pool.has_waiters())
    }

    /// Another core with requests waiting for `node`, to tell when capacity frees here.
    pub fn waiting_core(&self, node: NodeId) -> Option<usize> {
        self.node(node)?.budget.waiting_core(self.core)
    }

    // ------------------------------------------------------------------ between cores

    /// Takes connection `id` (connected, unowned) out for another core; its reservation goes
    /// with it.
    pub fn hand_over(&mut self, id: UpId, now: u64) -> Option<Handover<C>> {
        let h = self.take_out(id, now)?;
        if let Some(n) = self.nodes.get_mut(h.node.index()) {
            n.counters.handed_over += 1;
        }
        Some(h)
    }

    /// Takes connection `id` (connected, unowned) out of this process for the one that upgrades
    /// it: for this process it is gone, counted as closed for `CloseReason::Upgrade`. The loop
    /// drops the reservation, whose caps are this process's.
    pub fn export(&mut self, id: UpId, now: u64) -> Option<Handover<C>> {
        let h = self.take_out(id, now)?;
        if let Some(n) = self.nodes.get_mut(h.node.index()) {
            n.counters.closed(CloseReason::Upgrade);
        }
        Some(h)
    }

    fn take_out(&mut self, id: UpId, now: u64) -> Option<Handover<C>> {
        let c = self.conns.remove(id.index())?;
        if let Some(n) = self.nodes.get_mut(c.node.index()) {
            if let ConnState::Idle(h) = c.state {
                n.pool.remove_idle(h);
            }
            n.open -= 1;
        }
        Some(Handover {
            io: c.io,
            node: c.node,
            addr: c.addr,
            age_ms: now.saturating_sub(c.opened_at),
            served: c.served,
            hint: c.hint,
            sni: c.sni,
            reservation: c.reservation,
        })
    }

    /// Takes in a connection another core handed over, active and unowned; the loop then
    /// `release`s it to a waiter or the idle list. None (the reservation given back, the
    /// connection dropped) for a node this core has no record of.
    pub fn adopt(&mut self, h: Handover<C>, now: u64) -> Option<UpId> {
        let n = self.nodes.get_mut(h.node.index())?;
        n.open += 1;
        Some(UpId(self.conns.insert(Conn {
            io: h.io,
            node: h.node,
            addr: h.addr,
            state: ConnState::Active,
            owner: None,
            sni: h.sni,
            opened_at: now.saturating_sub(h.age_ms),
            connect_ms: 0,
            served: h.served,
            hint: h.hint,
            idle_since: 0,
            deadline: 0,
            idle_reason: CloseReason::IdleTimeout,
            timer_at: 0,
            reservation: h.reservation,
        })))
    }

    // ------------------------------------------------------------------ nodes

    /// What the balancer may know of `node`: requests in flight on this core (connections in
    /// use or connecting, and requests queued) and its latency score.
    pub fn load(&self, node: NodeId, now: u64) -> Load {
        let Some(n) = self.node(node) else {
            return Load::default();
        };
        let busy = (n.open as usize).saturating_sub(n.idle()) + n.waiters();
        Load {
            active: u32::try_from(busy).unwrap_or(u32::MAX),
            latency_ms: n.latency.score(now),
        }
    }

    /// How many connections `node` should open in the background now: to bring its idle (and
    /// connecting) ones up to the warm floor `min_idle` (at most `size`), and all its open ones
    /// up to `preconnect` times those in use.
    pub fn warm_gap(&self, node: NodeId, set: &PoolSettings) -> usize {
        let Some(n) = self.node(node) else {
            return 0;
        };
        let floor = set
            .min_idle
            .min(set.size)
            .saturating_sub(n.idle() + n.connecting as usize);
        let ahead = set
            .preconnect_target(n.in_use)
            .saturating_sub(n.open as usize);
        floor.max(ahead)
    }

    // ------------------------------------------------------------------ purging

    /// Once per `set.purge_interval`, takes off `node`'s idle list the connections beyond its
    /// recent need, oldest first, into `out` with the reason each closes for; the loop closes
    /// them. The need is the most connections in use at once during the interval less those in
    /// use now, never below the warm floor and what `preconnect` keeps; `set.size` bounds what
    /// is kept. Those beyond the need close as `Purged`; those within the need but beyond
    /// `size` as `Evicted`, and connects made in a request's path until the next purge are then
    /// counted as the pool's (`connects_pool_full`). Each call that purges starts a new
    /// interval; the first only starts one.
    pub fn purge(
        &mut self,
        node: NodeId,
        now: u64,
        set: &PoolSettings,
        out: &mut Vec<(UpId, CloseReason)>,
    ) {
        let Some(n) = self.nodes.get_mut(node.index()) else {
            return;
        };
        let interval = u64::try_from(set.purge_interval.as_millis()).unwrap_or(u64::MAX);
        match n.purged_at {
            None => {
                n.purged_at = Some(now);
                return;
            }
            Some(at) if now < at.saturating_add(interval) => return,
            Some(_) => {}
        }
        let floor = set
            .min_idle
            .max(set.preconnect_target(n.in_use).saturating_sub(n.in_use));
        let need = n.peak_in_use.saturating_sub(n.in_use).max(floor);
        let keep = need.min(set.size);
        let idle = n.pool.idle_len();
        let surplus = idle.saturating_sub(need);
        for i in 0..idle.saturating_sub(keep) {
            let Some(id) = n.pool.oldest_idle() else {
                break;
            };
            if let Some(c) = self.conns.get_mut(id.index()) {
                c.state = ConnState::Active;
            }
            let why = if i < surplus {
                CloseReason::Purged
            } else {
                CloseReason::Evicted
            };
            out.push((id, why));
        }
        n.size_limited = need > set.size;
        if n.size_limited {
            n.size_short_of = need;
        }
        n.peak_in_use = n.in_use;
        n.purged_at = Some(now);
    }
}

#[cfg(test)]
mod tests;
