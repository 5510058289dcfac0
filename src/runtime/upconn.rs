//! The event loop's side of upstream connections: the I/O that `upstream::Upstreams` decides.
//!
//! `Upstreams` keeps the books and makes every pool decision; this module opens sockets, drives
//! connects and TLS handshakes, checks that a pooled connection is still quiet, finishes closes
//! (a clean TLS close where the session may be resumed), and moves sockets between cores. An
//! upstream connection's I/O state is an `io::UpIo`, driven by the same user-space readiness
//! flags as a client's (`io::End`).

use std::io;
use std::mem;
use std::sync::Arc;

use log::{debug, warn};
use mio::net::TcpStream;
use mio::Interest;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, HandshakeKind};

use crate::cause::Cause;
use crate::config::PoolSettings;
use crate::id::{ClientId, NodeId, UpId};
use crate::runtime::control::Control;
use crate::runtime::core::{up_token, waiting_for, Core, Phase, TimerKey, TICK_EVERY_MS};
use crate::runtime::exchange::Leg;
use crate::runtime::generation::{UpSettings, UpTls};
use crate::runtime::io::{tls_feed, tls_flush, Fed, ShortRead, UpHandover, UpIo};
use crate::upstream::pool::{CloseReason, KeepAliveHint};
use crate::upstream::{Closed, ConnState, Opening, Release, Return};

/// Why `Core::connect` did not open a connection.
pub(super) enum ConnectError {
    /// A cap on connections or connects in flight is reached.
    Budget,
    Failed(Cause),
}

/// What a failed connect says about the node.
pub(super) fn connect_cause(e: &io::Error) -> Cause {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
        io::ErrorKind::TimedOut => Cause::ConnectTimeout,
        _ => Cause::ConnectFailed,
    }
}

/// How far an https connection's handshake got.
enum Handshake {
    Pending,
    Done,
    Failed(String),
}

/// Drives the TLS handshake of an upstream connection whose TCP connect finished.
fn handshake(u: &mut UpIo) -> Handshake {
    let Some(tls) = u.tls.as_deref_mut() else {
        return Handshake::Done;
    };
    loop {
        if tls_flush(&mut u.sock, tls, &mut u.writable).is_err() {
            return Handshake::Failed("connection reset during the handshake".into());
        }
        if !tls.is_handshaking() {
            return Handshake::Done;
        }
        if !u.readable {
            return Handshake::Pending;
        }
        match tls_feed(&mut u.sock, tls, &mut u.readable, &mut u.writable, u.hup) {
            Fed::Blocked | Fed::Records => {}
            Fed::Eof => {
                return Handshake::Failed(
                    "the upstream closed the connection during the handshake".into(),
                )
            }
            Fed::Error(e) => return Handshake::Failed(e),
        }
    }
}

/// The SNI name a connection of `t` made for tag `sni` on behalf of client `owner` is given when
/// that is not the node's own: the name of the owner's request, from `names` (`Core::sni_names`).
pub(super) fn request_sni_name<'a>(
    names: &'a [String],
    t: &UpTls,
    sni: u64,
    owner: Option<ClientId>,
) -> Option<&'a str> {
    owner
        .filter(|_| sni != 0 && sni != t.node_tag)
        .and_then(|cid| names.get(cid.index()))
        .map(String::as_str)
}

/// A plain connection still marked readable: is anything really there? The flag stays set
/// after a read that filled its buffer exactly, which says nothing of what follows (an answer
/// that ends on the buffer's last byte, often when a spliced body leaves a copied remainder of
/// one buffer). Taking that for stray bytes closed a good connection after about one large
/// answer in thirty. A one-byte peek tells: nothing yet clears the flag, while bytes, EOF or an
/// error mean the connection is done.
fn plain_drained(u: &mut UpIo) -> bool {
    if u.hup {
        return false;
    }
    loop {
        match u.sock.peek(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                u.readable = false;
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
}

/// Whether a connection about to be pooled, or pooled, is still quiet. A plain one is quiet
/// unless it turned readable (EOF or stray bytes). A TLS one may turn readable for session
/// tickets or key updates, which are read and kept; plaintext, close_notify, EOF or an error
/// mean the upstream is done with it.
pub(super) fn up_quiet(u: &mut UpIo) -> bool {
    let Some(tls) = u.tls.as_deref_mut() else {
        return !u.readable || plain_drained(u);
    };
    loop {
        match tls.process_new_packets() {
            Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => {}
            _ => return false,
        }
        if !u.readable {
            return true;
        }
        let mut src = ShortRead {
            sock: &mut u.sock,
            short: false,
        };
        match tls.read_tls(&mut src) {
            Ok(0) => return false,
            Ok(_) => {
                if src.short && !u.hup {
                    u.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        if tls.process_new_packets().is_err()
            || tls_flush(&mut u.sock, tls, &mut u.writable).is_err()
        {
            return false;
        }
    }
}

impl Core {
    /// The most recently used idle connection of `node` made for the SNI tag `want` (any with
    /// None) that is still quiet and in its time, closing on the way those that are not.
    pub(super) fn checkout_idle(&mut self, node: NodeId, want: Option<u64>) -> Option<UpId> {
        loop {
            let p = self.ups.pop_idle(node, want, self.now)?;
            let quiet = self.ups.conn_mut(p.id).is_some_and(|c| up_quiet(&mut c.io));
            if !quiet {
                // EOF or stray bytes arrived while it sat idle: the upstream is done with it.
                self.closed_by_upstream(p.id);
                continue;
            }
            if let Some(why) = p.expired {
                self.close_up(p.id, why);
                continue;
            }
            return Some(p.id);
        }
    }

    /// Opens a connection to `node` under `set`'s caps and connect timeout, for the SNI tag
    /// `sni`: where the pool takes SNI from the request, the name is the owner's (`sni_names`),
    /// or the node's for a connection opened without a request.
    pub(super) fn connect(
        &mut self,
        node: NodeId,
        owner: Option<ClientId>,
        set: &UpSettings,
        sni: u64,
    ) -> Result<UpId, ConnectError> {
        let Some(pool) = self.shared.pool(node) else {
            // The node left the configuration while the request waited.
            return Err(ConnectError::Failed(Cause::NodeRemoved));
        };
        let addr = pool.addr;
        if owner.is_some()
            && !pool.https
            && self.now < self.expect_until
            && self.expect_until - self.now < set.queue_ms
        {
            // The hearth this one replaces is handing over its connections as its clients move
            // here: the request waits in the node's queue for one (`adopt` gives it to the first
            // waiter), or connects when they stop coming, well before its queue timeout.
            return Err(ConnectError::Budget);
        }
        let per_request = pool.tls.as_ref().is_some_and(|t| t.from_request);
        let sni = if per_request { sni } else { 0 };
        let tls = match &pool.tls {
            // Per connection, not per request: an Arc clone and the session's allocations.
            Some(t) => match ClientConnection::new(Arc::clone(&t.config), {
                let asked = request_sni_name(&self.sni_names, t, sni, owner)
                    .and_then(|n| ServerName::try_from(n).ok());
                asked.map_or_else(|| t.name.clone(), |n| n.to_owned())
            }) {
                Ok(conn) => Some(Box::new(Connection::Client(conn))),
                Err(e) => {
                    warn!("TLS to {addr}: {e}");
                    self.node_counters(node, |c| c.connect_failures += 1);
                    return Err(ConnectError::Failed(Cause::TlsHandshake));
                }
            },
            None if pool.https => {
                // Its certificate files failed to load (logged when the generation was made).
                self.node_counters(node, |c| c.connect_failures += 1);
                return Err(ConnectError::Failed(Cause::TlsHandshake));
            }
            None => None,
        };
        let Some(reservation) = self
            .ups
            .reserve(node, set.max_connections, set.max_connecting)
        else {
            return Err(ConnectError::Budget);
        };
        let mut sock = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                debug!("connect to {addr}: {e}");
                self.node_counters(node, |c| c.connect_failures += 1);
                // Running out of descriptors or memory is ours, not the node's.
                let ours = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if !ours {
                    self.node_failed(node);
                }
                return Err(ConnectError::Failed(connect_cause(&e)));
            }
        };
        let _ = sock.set_nodelay(true);
        let id = self.ups.vacant();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            up_token(id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("registering an upstream socket failed: {e}");
            return Err(ConnectError::Failed(Cause::ConnectFailed));
        }
        let deadline = self.now + set.connect_ms;
        let io = UpIo {
            sock,
            tls,
            handshaking: false,
            readable: false,
            writable: false,
            hup: false,
        };
        let opening = Opening {
            node,
            addr,
            owner,
            sni,
            deadline,
        };
        let id = self.ups.insert(io, reservation, opening, self.now);
        self.arm(TimerKey::Up(id), deadline);
        Ok(id)
    }

    /// An event for upstream connection `id`: a connect or handshake moving on, readiness for
    /// the request it carries, or an idle connection turning readable.
    pub(super) fn upstream_ready(&mut self, id: UpId) {
        let now = self.now;
        let Some(c) = self.ups.conn_mut(id) else {
            return;
        };
        let (node, owner, addr, sni) = (c.node, c.owner, c.addr, c.sni);
        match c.state() {
            ConnState::Connecting => {
                let u = &mut c.io;
                if !u.writable && !u.readable {
                    return;
                }
                // Ok(()) connected, Err(cause) failed, None still connecting.
                let outcome = if u.handshaking {
                    Some(Ok(()))
                } else {
                    match u.sock.take_error() {
                        Ok(None) => match u.sock.peer_addr() {
                            Ok(_) => Some(Ok(())),
                            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
                            Err(e) => Some(Err(connect_cause(&e))),
                        },
                        Ok(Some(e)) => Some(Err(connect_cause(&e))),
                        Err(_) => Some(Err(Cause::ConnectFailed)),
                    }
                };
                let Some(mut outcome) = outcome else { return };
                let mut handshake_failed = None;
                let mut resumed = None;
                if outcome.is_ok() && u.tls.is_some() {
                    // TCP is up: the TLS handshake runs while the connection stays connecting.
                    u.handshaking = true;
                    match handshake(u) {
                        Handshake::Pending => return,
                        Handshake::Done => {
                            u.handshaking = false;
                            let kind = u.tls.as_deref().and_then(|t| t.handshake_kind());
                            resumed = Some(kind == Some(HandshakeKind::Resumed));
                        }
                        Handshake::Failed(why) => {
                            handshake_failed = Some(why);
                            outcome = Err(Cause::TlsHandshake);
                        }
                    }
                }
                match resumed {
                    Some(true) => self.node_counters(node, |c| c.tls_resumed_handshakes += 1),
                    Some(false) => self.node_counters(node, |c| c.tls_full_handshakes += 1),
                    None => {}
                }
                if let Some(why) = handshake_failed {
                    self.handshake_failed(node, addr, sni, owner, &why);
                }
                match outcome {
                    Err(cause) => {
                        debug!("connect to {addr} failed");
                        self.ups.connect_failed(id, cause);
                        match owner {
                            // The exchange counts it against the node when it sees the break.
                            Some(cid) => self.drive(cid),
                            None => {
                                self.close_up(id, CloseReason::Error);
                                self.node_failed(node);
                            }
                        }
                    }
                    Ok(()) => {
                        self.ups.connected(id, now);
                        match owner {
                            Some(cid) => self.drive(cid),
                            None => match self.shared.settings_of_pool(node) {
                                Some(set) => {
                                    self.release_up(id, KeepAliveHint::default(), set.pool)
                                }
                                None => self.close_up(id, CloseReason::Removed),
                            },
                        }
                    }
                }
            }
            ConnState::Active | ConnState::Broken(_) => {
                if let Some(cid) = owner {
                    self.drive(cid);
                }
            }
            ConnState::Idle(_) => {
                if !up_quiet(&mut c.io) {
                    self.closed_by_upstream(id);
                }
            }
        }
    }

    /// Logs a failed upstream TLS handshake: a warning at most once a minute per node and core
    /// (the counter has them all).
    fn handshake_failed(
        &mut self,
        node: NodeId,
        addr: std::net::SocketAddr,
        sni: u64,
        owner: Option<ClientId>,
        why: &str,
    ) {
        self.node_counters(node, |c| c.tls_handshake_failures += 1);
        let pool_tls = self.shared.pool(node).and_then(|p| p.tls.as_ref());
        let name = pool_tls.map_or_else(String::new, |t| {
            request_sni_name(&self.sni_names, t, sni, owner)
                .map_or_else(|| t.name.to_str().into_owned(), str::to_owned)
        });
        let line = format!("TLS handshake with upstream {addr} (SNI {name}) failed: {why}");
        let now = self.now;
        let Some(n) = self.ups.node_mut(node) else {
            return;
        };
        if n.tls_warned == 0 || now >= n.tls_warned + 60_000 {
            n.tls_warned = now.max(1);
            warn!("{line}");
        } else {
            debug!("{line}");
        }
    }

    /// Returns a connection after a clean exchange, as `Upstreams::release` decides: to a
    /// waiter, to a core whose requests wait for it, to the idle list, or closed.
    /// `settings` are those of the exchange that used it.
    pub(super) fn release_up(&mut self, id: UpId, hint: KeepAliveHint, settings: PoolSettings) {
        let Some(c) = self.ups.conn_mut(id) else {
            return;
        };
        let node = c.node;
        let quiet = up_quiet(&mut c.io);
        let ret = Return {
            hint,
            settings,
            quiet,
            live: self.shared.pool(node).is_some(),
            // Draining for an upgrade, connections are pooled for the remaining clients, and
            // those beyond their need go to the new hearth (`export_surplus`).
            shutting: self.shutdown_at.is_some() && self.export.is_none(),
        };
        let clients = &self.clients;
        match self
            .ups
            .release(id, ret, self.now, |cid| waiting_for(clients, cid, node))
        {
            Release::ToWaiter(cid) => self.attach(id, cid, true),
            Release::HandOver(core) => self.hand_over(id, core),
            Release::Pooled { deadline } => {
                self.export_due |= self.export.is_some();
                self.arm(TimerKey::Up(id), deadline);
                if self.expect_until != 0 {
                    // Requests on another core wait for a connection the hearth this one
                    // replaced hands over; this core has one to spare now.
                    if let Some(core) = self.ups.waiting_core(node) {
                        if let Some(uid) = self.checkout_idle(node, None) {
                            self.hand_over(uid, core);
                        }
                    }
                }
            }
            Release::Close(why) => self.close_up(id, why),
        }
    }

    /// Gives connection `id` (connected, or still connecting) to the waiting client `cid`.
    pub(super) fn attach(&mut self, id: UpId, cid: ClientId, reused: bool) {
        let now = self.now;
        let connecting = self.ups.state(id) == Some(ConnState::Connecting);
        let mut waited = 0;
        if let Some(Phase::Exchange(ex)) = self.clients.get_mut(cid.index()).map(|c| &mut c.phase) {
            if let Leg::Queued { since } = ex.leg {
                waited = now.saturating_sub(since);
            }
            ex.leg = if connecting {
                Leg::Connecting(id)
            } else {
                Leg::Attached(id)
            };
            ex.reused = reused;
            ex.up_progress = now;
        }
        self.ups.attach(id, cid, reused, waited);
        self.pending.push(cid);
    }

    /// Capacity for `node` came free: connect for waiting requests while the caps allow. Each
    /// connection is made under its waiter's own settings.
    pub(super) fn serve_waiters(&mut self, node: NodeId) {
        loop {
            let clients = &self.clients;
            let Some((cid, key)) = self
                .ups
                .next_waiter(node, |c| waiting_for(clients, c, node))
            else {
                return;
            };
            let Some(Phase::Exchange(ex)) = self.clients.get(cid.index()).map(|c| &c.phase) else {
                continue;
            };
            let (set, sni) = (ex.set, ex.sni);
            match self.connect(node, Some(cid), &set, sni) {
                Ok(id) => self.attach(id, cid, false),
                Err(ConnectError::Budget) => {
                    // Still no room: back to the head of the queue.
                    self.ups.wait_front(node, cid, key);
                    return;
                }
                Err(ConnectError::Failed(cause)) => self.fail_waiter(cid, cause),
            }
        }
    }

    /// Capacity for `node` came free here: use it for local waiters, or tell a waiting core.
    pub(super) fn budget_freed(&mut self, node: NodeId) {
        if self.ups.has_waiters(node) {
            self.serve_waiters(node);
        } else if let Some(core) = self.ups.waiting_core(node) {
            let _ = self.process.peers[core].send(Control::Freed(node));
        }
    }

    /// Gives connected, unowned connection `id` to core `to`, which has requests waiting for
    /// its node. Its place in the caps goes with it.
    pub(super) fn hand_over(&mut self, id: UpId, to: usize) {
        let Some(mut h) = self.ups.hand_over(id, self.now) else {
            return;
        };
        // The socket moves to another core's epoll instance.
        let _ = self.poll.registry().deregister(&mut h.io.sock);
        let node = h.node;
        if self.process.peers[to]
            .send(Control::Adopt(Box::new(h)))
            .is_err()
        {
            // The message, and the socket and reservation with it, is gone: the connection is
            // closed and its place given back.
            self.node_counters(node, |c| c.closed(CloseReason::Error));
        }
    }

    /// Takes in a connection another core handed over.
    pub(super) fn adopt(&mut self, mut h: UpHandover) {
        if self.ups.node(h.node).is_none() {
            // A generation this core has not seen yet; cannot happen while reloads reach every
            // core before any hand-over, but do not keep a connection we cannot account.
            return;
        }
        let id = self.ups.vacant();
        if let Err(e) = self.poll.registry().register(
            &mut h.io.sock,
            up_token(id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("adopting a connection failed: {e}");
            return;
        }
        let (node, hint) = (h.node, h.hint);
        let Some(id) = self.ups.adopt(h, self.now) else {
            return;
        };
        match self.shared.settings_of_pool(node) {
            Some(set) => self.release_up(id, hint, set.pool),
            None => self.close_up(id, CloseReason::Removed),
        }
    }

    /// An idle pooled connection turned readable: the upstream closed it (or sent bytes nobody
    /// asked for). `Upstreams::closed_by_upstream` learns from its idle age and closes it.
    pub(super) fn closed_by_upstream(&mut self, id: UpId) {
        if let Some(closed) = self.ups.closed_by_upstream(id, self.now) {
            self.finish_close(closed);
        }
    }

    pub(super) fn close_up(&mut self, id: UpId, why: CloseReason) {
        if let Some(closed) = self.ups.close(id, why) {
            self.finish_close(closed);
        }
    }

    /// The I/O of a close the books already show: a clean TLS close where the session may be
    /// resumed, then the socket closes (which takes it out of epoll). Capacity it gave back may
    /// serve a waiter.
    fn finish_close(&mut self, closed: Closed<UpIo>) {
        let Closed {
            mut io,
            node,
            connecting,
            freed,
        } = closed;
        if let (Some(tls), false) = (io.tls.as_deref_mut(), connecting) {
            // Best effort, one write: a clean TLS close, so the session stays resumable.
            tls.send_close_notify();
            let _ = tls_flush(&mut io.sock, tls, &mut io.writable);
        }
        drop(io);
        if freed {
            self.budget_freed(node);
        }
    }
}

// ------------------------------------------------------------------ pool housekeeping

impl Core {
    /// The pools' housekeeping, once a second: each node of the generation is purged toward its
    /// recent need when its `purge_interval` is up (`Upstreams::purge`), then topped up in the
    /// background to its warm floor (`min_idle`) and what `preconnect` keeps open. Connects go
    /// through the node's budget, so the caps and `max_connecting` pace them.
    pub(super) fn pool_tick(&mut self) {
        self.next_tick = 0;
        if self.shutdown_at.is_some() {
            return;
        }
        let shared = self.shared.clone(); // once a second at most, not per request
        let mut closing = mem::take(&mut self.purging);
        for node in (0..self.ups.nodes()).map(NodeId) {
            let Some(set) = shared.settings_of_pool(node) else {
                continue;
            };
            self.next_tick = self.now + TICK_EVERY_MS;
            self.ups.purge(node, self.now, &set.pool, &mut closing);
            for (uid, why) in closing.drain(..) {
                self.close_up(uid, why);
            }
            self.warm(node, &set);
        }
        self.purging = closing;
    }

    /// A request just took a connection to `node`: with `preconnect` on, the node's open
    /// connections follow the load up at once rather than at the next tick.
    pub(super) fn preconnect(&mut self, node: NodeId, set: &UpSettings) {
        if set.pool.preconnect_permille != 0 {
            self.warm(node, set);
        }
    }

    /// Opens what `Upstreams::warm_gap` says `node` lacks, without a request. Warm connections
    /// carry the node's own name (and tag).
    pub(super) fn warm(&mut self, node: NodeId, set: &UpSettings) {
        if self.inheriting {
            return; // connections are still coming from the hearth this one replaced
        }
        if !self.node_usable(node) {
            return; // health checks took it out: it would only be closed again
        }
        let gap = self.ups.warm_gap(node, &set.pool);
        if gap == 0 {
            return;
        }
        let tag = self
            .shared
            .pool(node)
            .and_then(|p| p.tls.as_ref())
            .map_or(0, |t| t.node_tag);
        for _ in 0..gap {
            if self.connect(node, None, set, tag).is_err() {
                break;
            }
        }
    }
}
