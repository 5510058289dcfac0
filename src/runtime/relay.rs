//! The steps that move a request's exchange: finding a connection (an idle one, a new one, or a
//! place in the queue), sending the request, relaying the answer, and ending it cleanly, by a
//! retry or replay, or by an answer hearth makes itself. Pool decisions are the upstream side's
//! (`upstream::Upstreams`); these steps perform them.

use std::mem;

use log::{debug, warn};

use crate::accesslog::Start;
use crate::balance::{self, Load, Tried};
use crate::buf::Buf;
use crate::cause::Cause;
use crate::config::{Balance, PassHost};
use crate::http::body::{self, BodyError, ChunkedDecoder};
use crate::http::head::{self, ReqBody, RequestHead, RespBody, Version};
use crate::http::rewrite::{self, ClientSide, Forward, Offer, Upgrades};
use crate::id::{ClientId, NodeId, UpId};
use crate::route::{QueueRank, Request, Vars};
use crate::runtime::control::Control;
use crate::runtime::core::{Core, Phase, Step, Tunnel, MAX_SPARE_EXCHANGES};
use crate::runtime::exchange::{BodyIn, BodyOut, Exchange, Fault, Leg, Piped, Resp, Tries};
use crate::runtime::generation::host_override;
use crate::runtime::io::{end, queue_body, ReadOutcome};
use crate::runtime::splice::Route;
use crate::runtime::upconn::ConnectError;
use crate::tls;
use crate::upstream::pool::{CloseReason, KeepAliveHint};
use crate::upstream::ConnState;

/// A request body still arriving when its answer is complete is sent on, so the upstream
/// connection stays reusable, when no more than this much of it is left ...
const DRAIN_MAX_BYTES: u64 = 64 * 1024;

/// ... and it arrives within this long.
const DRAIN_TIMEOUT_MS: u64 = 2_000;

/// How much of a chunked body to re-frame into `room` bytes at once: what `body::reframe` may
/// write for it must fit. A decoder that takes lone LFs may write up to half as much again.
fn reframe_window(room: usize, lenient: bool) -> usize {
    let room = room.saturating_sub(body::REFRAME_SLACK);
    if lenient {
        room / 3 * 2
    } else {
        room
    }
}

impl Core {
    pub(super) fn begin_exchange(&mut self, cid: ClientId, h: RequestHead) -> (Phase, Step) {
        self.counters.requests += 1;
        // Borrow the generation (no Arc clone: that would be an atomic per request).
        let shared = &*self.shared;
        let cfg = &shared.cfg;
        let c = self
            .clients
            .get_mut(cid.index())
            .expect("driven client exists");
        c.head_started = None;
        c.last_active = self.now;
        let rbuf = c.rbuf.as_ref().expect("a head was parsed from it");
        let src = rbuf.filled();
        let host = h.host.map(|s| s.of(src));
        if let Some(a) = self.access.as_mut() {
            let field = |name: &[u8]| {
                self.headers
                    .iter()
                    .find(|f| f.name.of(src).eq_ignore_ascii_case(name))
                    .map_or(&b""[..], |f| f.value.of(src))
            };
            let p = a.start(&Start {
                client: c.ip,
                method: h.method_span.of(src),
                target: h.target.of(src),
                version: if h.version == Version::Http10 {
                    "HTTP/1.0"
                } else {
                    "HTTP/1.1"
                },
                host: host.unwrap_or(b""),
                referer: field(b"referer"),
                user_agent: field(b"user-agent"),
                wall_ms: self.clock.wall_ms(self.now),
            });
            if self.logs.len() <= cid.index() {
                self.logs.resize_with(cid.index() + 1, || None);
            }
            if let Some(old) = self.logs[cid.index()].replace(p) {
                a.discard(old);
            }
        }
        let route_req = Request {
            method: h.method_span.of(src),
            target: h.target.of(src),
            host,
            remote: c.ip,
            headers: &self.headers,
            src,
        };
        if h.method == head::Method::Connect {
            // A tunnel to whatever the client names is a forward proxy's job, never this one's;
            // the client may already be sending tunnel bytes, so the connection closes after.
            return self.answer(cid, Cause::ConnectMethod, false);
        }
        let Some(m) = self.router.find(&route_req) else {
            let keep = h.body == ReqBody::None && h.keep_alive;
            c.rbuf.as_mut().expect("present").consume(h.head_len);
            return self.answer(cid, Cause::NoRoute, keep);
        };
        let max_body = cfg.client.max_body_bytes;
        if let ReqBody::Length(n) = h.body {
            if max_body > 0 && n > max_body {
                return self.answer(cid, Cause::BodyTooLarge, false);
            }
        }
        let upstream = m.upstream;
        let (websocket, rank) = cfg
            .routes
            .get(m.route)
            .map_or((None, QueueRank::default()), |r| (r.websocket, r.queue));
        let up_cfg = &cfg.upstreams[upstream];
        // The key is read only for chash, from the request as it arrived.
        let hash = match &up_cfg.balance {
            Balance::Chash { key } => balance::hash_key(Vars::new(&route_req).get(key)),
            _ => 0,
        };
        let nodes = up_cfg.nodes.len();
        let left = up_cfg
            .retries
            .unwrap_or_else(|| u32::try_from(nodes.saturating_sub(1)).unwrap_or(u32::MAX));
        let until = match u64::try_from(up_cfg.retry_timeout.as_millis()).unwrap_or(u64::MAX) {
            0 => 0,
            ms => self.now.saturating_add(ms),
        };
        let mut tried = Tried::default();
        let Some(node) = self.choose_node(upstream, hash, &mut tried) else {
            return self.answer(cid, Cause::NoNode, false);
        };
        if self.tries.len() <= cid.index() {
            // Grows with the highest client id, as the slab does; not per request.
            self.tries.resize(cid.index() + 1, Tries::default());
        }
        self.tries[cid.index()] = Tries {
            upstream,
            generation: self.generation,
            hash,
            tried,
            left,
            until,
            tried_at: self.now,
        };
        // Borrowed again: choosing the node needed the whole core.
        let shared = &*self.shared;
        let up_cfg = &shared.cfg.upstreams[upstream];
        let c = self
            .clients
            .get_mut(cid.index())
            .expect("driven client exists");
        let src = c.rbuf.as_ref().expect("a head was parsed from it").filled();
        let set = shared.up_settings[upstream];
        let Some(pool) = shared.pool(node) else {
            return self.answer(cid, Cause::NoNode, false);
        };
        let Some(mut to_up) = self.bufs.checkout() else {
            return self.answer(cid, Cause::NoBuffer, false);
        };
        let mut fwd = Forward {
            client_ip: c.ip,
            proto: if c.tls.is_some() { "https" } else { "http" },
            // An HTTP/1.0 request may come without Host; the upstream gets HTTP/1.1, which
            // requires one (RFC 9112 §3.2), so it gets the node's address.
            host: host_override(&up_cfg.pass_host, pool)
                .or(h.host.is_none().then_some(pool.host.as_bytes())),
            upgrades: Upgrades {
                allowed: &up_cfg.upgrade,
                websocket,
            },
        };
        self.out.clear();
        let mut replay_safe = h.method.is_idempotent() || h.idempotency_key;
        // The Host a route's proxy-rewrite sends, which the SNI then follows.
        let mut edit_host = None;
        // The router says whether the route has a proxy-rewrite: most have none, and then this
        // test is all it costs them.
        let route_edit = if m.rewrites {
            shared
                .cfg
                .routes
                .get(m.route)
                .and_then(|r| r.rewrite.as_deref())
        } else {
            None
        };
        let offered = match route_edit {
            None => rewrite::request_head(src, &h, &self.headers, &fwd, &mut self.out),
            Some(p) => {
                // Only under pass_host "pass", as in APISIX: node and rewrite decide after it.
                if let (PassHost::Pass, Some(host)) = (&up_cfg.pass_host, &p.host) {
                    edit_host = Some(host.as_bytes());
                    fwd.host = edit_host;
                }
                replay_safe = p.idempotent(h.method) || h.idempotency_key;
                p.write_head(src, &h, &self.headers, &fwd, c.ip, &mut self.out)
            }
        };
        let offer = match offered {
            Some(value) => Offer::new(&self.out[value]),
            None => Offer::NONE,
        };
        if self.out.len() > to_up.capacity() {
            self.bufs.give_back(to_up);
            return self.answer(cid, Cause::HeadTooLarge, false);
        }
        to_up.push(&self.out);
        let head_len = self.out.len() as u64;
        // The SNI follows the Host sent upstream when the pool takes it from the request; a
        // Host rustls cannot use as a name gets the node's name, as warm connections do.
        let sni = match pool.tls.as_ref().filter(|t| t.from_request) {
            None => 0,
            Some(t) => {
                if self.sni_names.len() <= cid.index() {
                    // Grows with the highest client id, as the slab does; not per request.
                    self.sni_names.resize_with(cid.index() + 1, String::new);
                }
                let out = &mut self.sni_names[cid.index()];
                let sent = edit_host
                    .or(h.host.map(|s| s.of(src)))
                    .unwrap_or(pool.host.as_bytes());
                match tls::request_sni(&self.process.sni_key, sent, out) {
                    Some(tag) => tag,
                    None => {
                        out.clear();
                        out.push_str(&t.name.to_str());
                        t.node_tag
                    }
                }
            }
        };
        c.rbuf.as_mut().expect("present").consume(h.head_len);
        self.node_counters(node, |c| c.requests += 1);
        let req = match h.body {
            ReqBody::None | ReqBody::Length(0) => BodyIn::Done,
            ReqBody::Length(n) => BodyIn::Length(n),
            // The declared size of each chunk is held to what `max_body_bytes` still allows, so
            // a chunk too large is refused at its size line, before any of it is forwarded.
            ReqBody::Chunked => BodyIn::Chunked(
                ChunkedDecoder::from_limits(&self.limits)
                    .max_payload(self.shared.cfg.client.max_body_bytes)
                    .lenient(self.limits.accept_bare_lf),
            ),
        };
        let fresh = Exchange {
            node,
            sni,
            set,
            rank,
            leg: Leg::Unattached,
            reused: false,
            replayed: false,
            to_up,
            sent: 0,
            intact: true,
            replay_safe,
            from_up: None,
            req,
            resp: Resp::Waiting,
            up_eof: false,
            head_request: h.method == head::Method::Head,
            client_version: h.version,
            req_keep_alive: h.keep_alive,
            offer,
            keep_client: false,
            up_keeps: false,
            up_dirty: false,
            hint: KeepAliveHint::default(),
            started: self.now,
            status: 0,
            sent_body: 0,
            up_progress: self.now,
            wrote: 0,
            head_len,
            send_failed: false,
            piped: Piped::Nothing,
        };
        let ex = match self.spare.pop() {
            Some(mut ex) => {
                *ex = fresh;
                ex
            }
            // Only while the core's concurrency grows past what it had before.
            None => Box::new(fresh),
        };
        self.start_exchange(cid, ex, false)
    }

    /// Finds a connection for the exchange: an idle one (unless `fresh`), a new one, or a place in
    /// the node's queue. A connect that fails at once moves the request to the next node while
    /// tries are left.
    pub(super) fn start_exchange(
        &mut self,
        cid: ClientId,
        mut ex: Box<Exchange>,
        fresh: bool,
    ) -> (Phase, Step) {
        let mut fresh = fresh;
        loop {
            let node = ex.node;
            if let Some(t) = self.tries.get_mut(cid.index()) {
                t.tried_at = self.now;
            }
            if !fresh {
                if let Some(uid) = self.checkout_idle(node, Some(ex.sni)) {
                    self.ups.reuse(uid, cid, self.now);
                    ex.leg = Leg::Attached(uid);
                    ex.reused = true;
                    ex.up_progress = self.now;
                    self.preconnect(node, &ex.set);
                    return (Phase::Exchange(ex), Step::Continue);
                }
            }
            let mut opened = self.connect(node, Some(cid), &ex.set, ex.sni);
            if matches!(opened, Err(ConnectError::Budget)) && ex.sni != 0 {
                // The caps are held by idle connections made for other names (none fit this
                // request): the least recently used gives way, then this request tries again,
                // behind any waiter the freed capacity serves first.
                if let Some(old) = self.ups.pop_oldest_idle(node) {
                    self.close_up(old, CloseReason::Evicted);
                    opened = self.connect(node, Some(cid), &ex.set, ex.sni);
                }
            }
            match opened {
                Ok(uid) => {
                    ex.leg = Leg::Connecting(uid);
                    ex.reused = false;
                    ex.up_progress = self.now;
                    self.preconnect(node, &ex.set);
                    return (Phase::Exchange(ex), Step::Continue);
                }
                Err(ConnectError::Budget) => {
                    let (qsize, max_conns) = (ex.set.queue_size, ex.set.max_connections);
                    let key = ex.queue_key(self.now);
                    if !self.ups.wait(node, cid, key, qsize) {
                        self.node_counters(node, |c| c.queue_timeouts += 1);
                        let r = self.answer_for(cid, Cause::QueueFull, false, Some(&ex));
                        self.retire(ex);
                        return r;
                    }
                    ex.leg = Leg::Queued { since: self.now };
                    if max_conns > 0 || self.expect_until != 0 {
                        // Another core may sit on idle connections to this node: ask for one.
                        // Uncapped, a request waits only for a connection the hearth this one
                        // replaces hands over, which may have been filed with another core.
                        for (i, p) in self.process.peers.iter().enumerate() {
                            if i != self.id {
                                let _ = p.send(Control::ShedIdle {
                                    node,
                                    from: self.id,
                                });
                            }
                        }
                    }
                    return (Phase::Exchange(ex), Step::Wait);
                }
                Err(ConnectError::Failed(cause)) => {
                    // `connect` counted the failure against the node.
                    if self.next_try(cid, &mut ex) {
                        fresh = false;
                        continue;
                    }
                    let keep = matches!(ex.req, BodyIn::Done) && ex.req_keep_alive;
                    let r = self.answer_for(cid, cause, keep, Some(&ex));
                    self.retire(ex);
                    return r;
                }
            }
        }
    }

    /// Whether requests may go to pool `pool` now. Active health checks take a node out until
    /// they see it recover; passive health takes it out for
    /// `fail_timeout` after `max_fails` failures; every pick asks here, and a pick falls back
    /// to nodes that fail this only when no node passes it.
    pub(super) fn node_usable(&self, pool: NodeId) -> bool {
        self.ups.node(pool).is_none_or(|n| n.usable(self.now))
    }

    /// Counts a failure of pool `pool` for passive health, under the settings of the upstream
    /// that governs the pool in the current generation.
    pub(super) fn node_failed(&mut self, pool: NodeId) {
        let Some(info) = self.shared.pool(pool) else {
            return; // no longer configured: nothing to protect
        };
        let passive = &self.shared.cfg.upstreams[info.upstream].passive;
        let (max_fails, fail_ms) = (
            passive.max_fails,
            u64::try_from(passive.fail_timeout.as_millis()).unwrap_or(u64::MAX),
        );
        let now = self.now;
        let Some(n) = self.ups.node_mut(pool) else {
            return;
        };
        n.counters.failures += 1;
        if n.health.fail(now, max_fails, fail_ms) {
            n.counters.marked_down += 1;
            warn!(
                "core {}: upstream node {} failed {max_fails} time(s) within fail_timeout; not used for {:.1} s",
                self.id,
                info.addr,
                fail_ms as f64 / 1000.0
            );
        }
    }

    /// Chooses a node of upstream `up` for a request's next try (`Balancer::choose`: untried
    /// and usable first) and marks it in `tried`.
    pub(super) fn choose_node(
        &mut self,
        up: usize,
        hash: u64,
        tried: &mut Tried,
    ) -> Option<NodeId> {
        let nodes = self.shared.up_nodes.get(up).map_or(&[][..], Vec::as_slice);
        if let Some(i) = self.balancers.get(up)?.sole(tried) {
            return nodes.get(i).copied();
        }
        // Out of its table for the pick, so the predicates can read the whole core. An empty
        // balancer holds no heap memory: this moves a few words and allocates nothing.
        let mut b = mem::take(self.balancers.get_mut(up)?);
        let pick = b.choose(
            hash,
            |i| {
                nodes
                    .get(i)
                    .map_or_else(Load::default, |&p| self.ups.load(p, self.now))
            },
            tried,
            |i| nodes.get(i).is_some_and(|&p| self.node_usable(p)),
        );
        self.balancers[up] = b;
        pick.and_then(|i| nodes.get(i).copied())
    }

    /// Whether a request that failed may go to another node: tries left, its upstream still the
    /// same, the retry time not spent, no response byte seen, and the request still whole in
    /// `to_up` and either never sent or safe to send again (the replay rules).
    pub(super) fn may_retry(&self, t: &Tries, ex: &Exchange) -> bool {
        t.left > 0
            && t.generation == self.generation
            && (t.until == 0 || self.now < t.until)
            && !ex.started()
            && ex.intact
            && (ex.sent == 0 || ex.replay_safe)
    }

    /// Moves a failed exchange to another node of its upstream for one more try; false when it
    /// may not. The failed try's connection must already be gone (the leg has none).
    pub(super) fn next_try(&mut self, cid: ClientId, ex: &mut Exchange) -> bool {
        let Some(mut t) = self.tries.get(cid.index()).copied() else {
            return false;
        };
        if ex.leg.up().is_some() || !self.may_retry(&t, ex) {
            return false;
        }
        let node = self.choose_node(t.upstream, t.hash, &mut t.tried);
        self.tries[cid.index()] = t;
        let Some(node) = node else {
            return false;
        };
        let pass_node = matches!(
            self.shared.cfg.upstreams[t.upstream].pass_host,
            PassHost::Node
        );
        if pass_node && node != ex.node && !self.rehost(ex, node) {
            return false;
        }
        debug!("retrying on pool {node} after pool {} failed", ex.node);
        self.tries[cid.index()].left -= 1;
        ex.node = node;
        ex.reused = false;
        ex.sent = 0;
        ex.wrote = 0;
        ex.send_failed = false;
        ex.up_eof = false;
        ex.resp = Resp::Waiting;
        self.bufs.release(&mut ex.from_up);
        self.node_counters(node, |c| c.requests += 1);
        self.node_counters(node, |c| c.retries += 1);
        true
    }

    /// Points the Host line of a request in `to_up` at `node`, for a retry under
    /// `pass_host = "node"`. `rewrite::request_head` puts Host first, right after the request
    /// line. Rare enough that `out` may grow for it.
    pub(super) fn rehost(&mut self, ex: &mut Exchange, node: NodeId) -> bool {
        let Some(host) = self.shared.pool(node).map(|p| p.host.as_bytes()) else {
            return false;
        };
        let bytes = ex.to_up.filled();
        let find = |hay: &[u8]| hay.windows(2).position(|w| w == b"\r\n");
        let Some(line) = find(bytes) else {
            return false;
        };
        let value = line + 2 + b"Host: ".len();
        if !bytes[line + 2..].starts_with(b"Host: ") {
            return false;
        }
        let Some(len) = find(&bytes[value..]) else {
            return false;
        };
        self.out.clear();
        self.out.extend_from_slice(&bytes[..value]);
        self.out.extend_from_slice(host);
        self.out.extend_from_slice(&bytes[value + len..]);
        if self.out.len() > ex.to_up.capacity() {
            return false;
        }
        ex.head_len = (ex.head_len + host.len() as u64).saturating_sub(len as u64);
        ex.to_up.clear();
        ex.to_up.push(&self.out);
        true
    }

    pub(super) fn step_exchange(&mut self, cid: ClientId, mut ex: Box<Exchange>) -> (Phase, Step) {
        let mut progress = match self.flush_client(cid) {
            Ok(p) => p,
            Err(()) => return self.fail(cid, ex, Fault::ClientGone(Cause::ClientAbort)),
        };
        if progress && ex.answered() {
            // The client took answer bytes: the wait for the upstream counts from here, not from
            // before the client fell behind (see `rearm_client`).
            ex.up_progress = ex.up_progress.max(self.now);
        }
        // Request body bytes may move into `to_up` even before a connection is ready.
        match self.pump_request(cid, &mut ex) {
            Ok(p) => progress |= p,
            Err(f) => return self.fail(cid, ex, f),
        }
        if !ex.answered() && self.client_left(cid, &ex) {
            // Nobody is left to answer: stop the upstream's work now rather than at its answer
            // or its read timeout.
            return self.fail(cid, ex, Fault::ClientGone(Cause::ClientAbort));
        }
        let Some(uid) = ex.leg.up() else {
            return (
                Phase::Exchange(ex),
                if progress { Step::Continue } else { Step::Wait },
            );
        };
        match self.ups.state(uid) {
            Some(ConnState::Active) => {
                if let Leg::Connecting(up) = ex.leg {
                    ex.leg = Leg::Attached(up);
                }
            }
            Some(ConnState::Connecting) => {
                return (
                    Phase::Exchange(ex),
                    if progress { Step::Continue } else { Step::Wait },
                );
            }
            Some(ConnState::Broken(cause)) => {
                return self.fail(cid, ex, Fault::UpstreamGone(cause))
            }
            _ => return self.fail(cid, ex, Fault::UpstreamGone(Cause::UpstreamClosed)),
        }
        if !ex.send_failed {
            match self.send_upstream(uid, &mut ex) {
                Ok(p) => progress |= p,
                Err(_) => {
                    // The upstream stopped taking the request: often it answered early (413,
                    // 401) and closed. An answer that arrived still goes to the client, so read
                    // what is there before calling the exchange failed.
                    ex.send_failed = true;
                    if let Some(u) = self.ups.conn_mut(uid) {
                        u.io.readable = true;
                    }
                    progress = true;
                }
            }
        }
        match self.splice_response(cid, uid, &mut ex) {
            Ok(p) => progress |= p,
            Err(f) => return self.fail(cid, ex, f),
        }
        match self.recv_upstream(uid, &mut ex) {
            Ok(p) => progress |= p,
            Err(f) => return self.fail(cid, ex, f),
        }
        match self.relay_response(cid, &mut ex) {
            Ok(Some(tunnel)) => {
                self.log_end(cid, 101, 0, Some((&ex, 0)), None);
                self.retire(ex);
                return (Phase::Tunnel(tunnel), Step::Continue);
            }
            Ok(None) => {}
            Err(f) => return self.fail(cid, ex, f),
        }
        // EOF ends the exchange only once everything read before it has been relayed.
        let relayed = ex.from_up.as_ref().is_none_or(Buf::is_empty) && ex.piped != Piped::Response;
        if ex.up_eof && relayed {
            match ex.resp {
                Resp::Body(BodyOut::Close) => ex.resp = Resp::Done,
                Resp::Done => {}
                _ => {
                    let cause = if ex.send_failed {
                        Cause::UpstreamReset
                    } else {
                        Cause::UpstreamClosed
                    };
                    return self.fail(cid, ex, Fault::UpstreamGone(cause));
                }
            }
        }
        match self.flush_client(cid) {
            Ok(p) => progress |= p,
            Err(()) => return self.fail(cid, ex, Fault::ClientGone(Cause::ClientAbort)),
        }
        if matches!(ex.resp, Resp::Done) {
            let req_done = matches!(ex.req, BodyIn::Done)
                && ex.sent == ex.to_up.len()
                && ex.piped != Piped::Request
                && !ex.send_failed;
            if req_done || ex.up_eof || ex.send_failed || !self.keeps_draining(&mut ex) {
                return self.finish_exchange(cid, ex, req_done);
            }
        }
        (
            Phase::Exchange(ex),
            if progress { Step::Continue } else { Step::Wait },
        )
    }

    /// Whether an exchange whose answer is complete goes on sending the rest of its request body
    /// so that the upstream connection can be pooled: only when the client keeps its connection
    /// too, and for at most `DRAIN_MAX_BYTES` more within `DRAIN_TIMEOUT_MS` (the clock starts
    /// at the first call). Past either the connection closes, as it had to before.
    pub(super) fn keeps_draining(&mut self, ex: &mut Exchange) -> bool {
        if !ex.keep_client || !ex.up_keeps {
            return false;
        }
        match ex.leg {
            Leg::Attached(up) => {
                ex.leg = Leg::Draining {
                    up,
                    until: self.now + DRAIN_TIMEOUT_MS,
                    left: DRAIN_MAX_BYTES,
                };
                true
            }
            Leg::Draining { until, left, .. } => self.now < until && left > 0,
            _ => false,
        }
    }

    /// Whether the client of an exchange that has not been answered yet is gone: it closed or
    /// reset its connection after sending the whole request. Bytes it sent before its FIN (a
    /// pipelined request) mean it still waits, as nginx judges it; so does everything with
    /// `client.ignore_abort`. Only a client whose FIN or reset was reported is read here.
    pub(super) fn client_left(&mut self, cid: ClientId, ex: &Exchange) -> bool {
        if self.shared.cfg.client.ignore_abort || !matches!(ex.req, BodyIn::Done) {
            return false;
        }
        let Some(c) = self.clients.get_mut(cid.index()) else {
            return true;
        };
        if !c.hup {
            return false;
        }
        loop {
            if c.rbuf.as_ref().is_some_and(|b| !b.is_empty()) {
                return false;
            }
            if c.eof {
                return true;
            }
            if !c.readable {
                return false;
            }
            if c.rbuf.is_none() {
                match self.bufs.checkout() {
                    Some(b) => c.rbuf = Some(b),
                    None => return false,
                }
            }
            match end!(c).read_into(c.rbuf.as_mut().expect("present")) {
                ReadOutcome::Data => c.last_active = self.now,
                ReadOutcome::Blocked => {
                    self.bufs.release_if_empty(&mut c.rbuf);
                    return false;
                }
                ReadOutcome::Eof => c.eof = true,
                ReadOutcome::Failed => return true,
            }
        }
    }

    /// Moves request body bytes from the client into `to_up`, reading the client as needed. A
    /// chunked body is framed afresh on the way (`body::reframe`): whatever chunks the client
    /// sent, each pass forwards what it read as one chunk, so a body of a million one-byte
    /// chunks costs the upstream a few hundred chunks, and relaying it costs per buffer.
    pub(super) fn pump_request(&mut self, cid: ClientId, ex: &mut Exchange) -> Result<bool, Fault> {
        let gone = Fault::ClientGone(Cause::ClientAbort);
        let mut progress = false;
        // A body on its way to the pipe reads nothing more from the client into the buffers:
        // what they hold goes first, then the rest is spliced.
        let read_client = match self.request_route(cid, ex) {
            Route::Copy => true,
            Route::CopyThenSplice => false,
            Route::Splice(uid) => return self.splice_request(cid, uid, ex),
        };
        let c = self.clients.get_mut(cid.index()).ok_or(gone)?;
        loop {
            if matches!(ex.req, BodyIn::Done) {
                return Ok(progress);
            }
            if let Leg::Draining { left: 0, .. } = ex.leg {
                // Draining after the answer, and the bound is spent: the caller gives up.
                return Ok(progress);
            }
            let has = c.rbuf.as_ref().is_some_and(|b| !b.is_empty());
            if !has {
                if !read_client {
                    return Ok(progress);
                }
                if c.eof {
                    return Err(gone);
                }
                if !c.readable {
                    return Ok(progress);
                }
                if c.rbuf.is_none() {
                    c.rbuf = Some(
                        self.bufs
                            .checkout()
                            .ok_or(Fault::ClientBad(Cause::NoBuffer))?,
                    );
                }
                match end!(c).read_into(c.rbuf.as_mut().expect("present")) {
                    ReadOutcome::Data => {
                        c.last_active = self.now;
                        progress = true;
                        continue;
                    }
                    ReadOutcome::Blocked => return Ok(progress),
                    ReadOutcome::Eof => {
                        c.eof = true;
                        return Err(gone);
                    }
                    ReadOutcome::Failed => return Err(gone),
                }
            }
            // Make room in `to_up`, giving up the ability to replay if we must drop sent bytes.
            // Re-framing may add a little to what it reads, so a chunked body needs that much
            // more room to move at all.
            let slack = match ex.req {
                BodyIn::Chunked(_) => 2 * body::REFRAME_SLACK,
                _ => 0,
            };
            if ex.to_up.free() <= slack {
                if ex.sent == 0 {
                    return Ok(progress);
                }
                ex.to_up.consume(ex.sent);
                ex.sent = 0;
                ex.intact = false;
            }
            let mut room = ex.to_up.free();
            if let Leg::Draining { left, .. } = ex.leg {
                // After the answer, only the bytes the drain bound still allows.
                room = room.min(usize::try_from(left).unwrap_or(usize::MAX));
            }
            let before = ex.to_up.len();
            let rb = c.rbuf.as_mut().expect("has bytes");
            let avail = rb.len().min(room);
            match &mut ex.req {
                BodyIn::Done => unreachable!("checked at the top of the loop"),
                BodyIn::Length(rem) => {
                    let n = avail.min(usize::try_from(*rem).unwrap_or(usize::MAX));
                    ex.to_up.push(&rb.filled()[..n]);
                    rb.consume(n);
                    *rem -= n as u64;
                    if *rem == 0 {
                        ex.req = BodyIn::Done;
                    }
                }
                BodyIn::Chunked(dec) => {
                    let take = avail.min(reframe_window(room, self.limits.accept_bare_lf));
                    let input = &rb.filled()[..take];
                    self.out.clear();
                    let d = body::reframe(dec, input, &mut self.out).map_err(|e| match e {
                        BodyError::TooLarge => Fault::ClientBad(Cause::BodyTooLarge),
                        _ => Fault::ClientBad(Cause::BadRequestBody),
                    })?;
                    ex.to_up.push(&self.out);
                    rb.consume(d.consumed);
                    if d.done {
                        ex.req = BodyIn::Done;
                    }
                }
            }
            if let Leg::Draining { left, .. } = &mut ex.leg {
                let moved = (ex.to_up.len() - before) as u64;
                *left = left.saturating_sub(moved.max(1));
            }
            progress = true;
        }
    }

    pub(super) fn send_upstream(&mut self, uid: UpId, ex: &mut Exchange) -> Result<bool, Fault> {
        let gone = Fault::UpstreamGone(Cause::UpstreamReset);
        let u = &mut self.ups.conn_mut(uid).ok_or(gone)?.io;
        if ex.sent >= ex.to_up.len() || !u.writable {
            return Ok(false);
        }
        let n = end!(u)
            .write_from(&ex.to_up.filled()[ex.sent..])
            .map_err(|()| gone)?;
        ex.sent += n;
        ex.wrote += n as u64;
        if n > 0 {
            ex.up_progress = self.now;
        }
        Ok(n > 0)
    }

    pub(super) fn recv_upstream(&mut self, uid: UpId, ex: &mut Exchange) -> Result<bool, Fault> {
        let u = &mut self
            .ups
            .conn_mut(uid)
            .ok_or(Fault::UpstreamGone(Cause::UpstreamClosed))?
            .io;
        // Body bytes in the pipe go to the client before any more are read.
        if !u.readable || ex.up_eof || ex.piped == Piped::Response {
            return Ok(false);
        }
        if ex.from_up.is_none() {
            ex.from_up = Some(
                self.bufs
                    .checkout()
                    .ok_or(Fault::UpstreamGone(Cause::NoBuffer))?,
            );
        }
        let buf = ex.from_up.as_mut().expect("present");
        match end!(u).read_into(buf) {
            ReadOutcome::Data => {
                ex.up_progress = self.now;
                if matches!(ex.resp, Resp::Waiting) {
                    ex.resp = Resp::Head;
                    // The upstream has the request: the replay copy is no longer needed.
                    if ex.sent > 0 && ex.sent == ex.to_up.len() {
                        ex.to_up.consume(ex.sent);
                        ex.sent = 0;
                    }
                    ex.intact = false;
                }
                Ok(true)
            }
            ReadOutcome::Blocked => Ok(false),
            ReadOutcome::Eof => {
                ex.up_eof = true;
                Ok(true)
            }
            ReadOutcome::Failed => Err(Fault::UpstreamGone(Cause::UpstreamReset)),
        }
    }

    /// Parses response heads and moves body bytes from `from_up` to the client's `wbuf`.
    /// Returns a tunnel when the upstream switched protocols.
    pub(super) fn relay_response(
        &mut self,
        cid: ClientId,
        ex: &mut Exchange,
    ) -> Result<Option<Tunnel>, Fault> {
        let max_requests = self.shared.cfg.client.max_requests;
        let shutting = self.shutdown_at.is_some();
        let c = self
            .clients
            .get_mut(cid.index())
            .ok_or(Fault::ClientGone(Cause::ClientAbort))?;
        let plain = c.tls.is_none();
        loop {
            let Some(from) = ex.from_up.as_mut() else {
                return Ok(None);
            };
            if from.is_empty() {
                self.bufs.release(&mut ex.from_up);
                return Ok(None);
            }
            if c.wbuf.is_none() {
                c.wbuf = Some(
                    self.bufs
                        .checkout()
                        .ok_or(Fault::UpstreamGone(Cause::NoBuffer))?,
                );
            }
            let w = c.wbuf.as_mut().expect("present");
            match &mut ex.resp {
                Resp::Waiting | Resp::Head => {
                    let h = match head::parse_response(
                        from.filled(),
                        &self.limits,
                        ex.head_request,
                        &mut self.headers,
                    ) {
                        Ok(Some(h)) => h,
                        Ok(None) => {
                            if from.free() == 0 {
                                return Err(Fault::UpstreamBad(Cause::BadResponse));
                            }
                            return Ok(None);
                        }
                        Err(e) => {
                            debug!("invalid response head from pool {}: {e:?}", ex.node);
                            return Err(Fault::UpstreamBad(Cause::BadResponse));
                        }
                    };
                    let interim = (100..200).contains(&h.status) && h.status != 101;
                    if h.status == 101 {
                        let src = from.filled();
                        let named = self
                            .headers
                            .iter()
                            .filter(|f| f.name.of(src).eq_ignore_ascii_case(b"upgrade"))
                            .map(|f| f.value.of(src));
                        if !ex.offer.accepts(named) {
                            // A switch hearth did not ask for (an h2c upgrade it stripped, say):
                            // tunnelling it would let the client past the route table.
                            return Err(Fault::UpstreamBad(Cause::UnexpectedUpgrade));
                        }
                    }
                    let dechunk =
                        ex.client_version == Version::Http10 && h.body == RespBody::Chunked;
                    // A request whose body is still on its way may keep its connection when the
                    // upstream will keep its own and the rest of the body is small enough to send
                    // on after the answer (`keeps_draining`): answering early, as auth failures
                    // and fixed answers do, then costs no upstream connection.
                    let req_finishes = match ex.req {
                        BodyIn::Done => true,
                        BodyIn::Length(rem) => {
                            let unsent = (ex.to_up.len() - ex.sent) as u64;
                            h.keep_alive && !ex.send_failed && rem + unsent <= DRAIN_MAX_BYTES
                        }
                        BodyIn::Chunked(_) => h.keep_alive && !ex.send_failed,
                    };
                    if !interim && h.status != 101 {
                        ex.keep_client = ex.req_keep_alive
                            && req_finishes
                            && h.body != RespBody::Close
                            && !dechunk
                            && !shutting
                            && (max_requests == 0 || c.served + 1 < max_requests);
                        // The parser says keep-alive only for a body that does not run to close.
                        ex.up_keeps = h.keep_alive;
                        ex.status = h.status;
                        let now = self.now;
                        let tried_at = self
                            .tries
                            .get(cid.index())
                            .map_or(ex.started, |t| t.tried_at);
                        if let Some(n) = self.ups.node_mut(ex.node) {
                            n.counters.responded(h.status);
                            n.counters.response.record(now.saturating_sub(ex.started));
                            // An answer is the node's success: its failure count starts over.
                            n.health.ok();
                            if self.ewma {
                                n.latency.observe(now, now.saturating_sub(tried_at));
                            }
                        }
                        ex.hint = KeepAliveHint {
                            timeout_secs: h.ka_timeout,
                            max: h.ka_max,
                        };
                    }
                    // 1xx responses are not for HTTP/1.0 clients (RFC 9110 §15.2).
                    let forward = !(interim && ex.client_version == Version::Http10);
                    if forward {
                        self.out.clear();
                        let side = ClientSide {
                            version: ex.client_version,
                            keep_alive: ex.keep_client || interim || h.status == 101,
                            dechunk,
                            head_request: ex.head_request,
                        };
                        rewrite::response_head(
                            from.filled(),
                            &h,
                            &self.headers,
                            &side,
                            &mut self.out,
                        );
                        if self.out.len() > w.capacity() {
                            return Err(Fault::UpstreamBad(Cause::BadResponse));
                        }
                        if w.free() < self.out.len() {
                            return Ok(None); // wait for the client to drain
                        }
                        // An interim response does not commit us: a final 502 may still follow
                        // it if the upstream goes silent (RFC 9110 §15.2). A final one does, as
                        // `resp` says once it is past its head.
                        w.push(&self.out);
                    }
                    from.consume(h.head_len);
                    if interim {
                        continue;
                    }
                    if h.status == 101 {
                        let up = ex
                            .leg
                            .take_up()
                            .expect("a relaying exchange has a connection");
                        return Ok(Some(Tunnel {
                            up,
                            from_up: ex.from_up.take(),
                            idle_ms: ex.set.read_ms,
                        }));
                    }
                    ex.resp = match h.body {
                        RespBody::None => Resp::Done,
                        RespBody::Length(0) => Resp::Done,
                        RespBody::Length(n) => Resp::Body(BodyOut::Length(n)),
                        // An upstream whose head ended lines in LF alone may frame its chunks
                        // that way too; they are read leniently and written out with CRLF.
                        RespBody::Chunked => Resp::Body(BodyOut::Chunked {
                            dec: ChunkedDecoder::from_limits(&self.limits).lenient(h.bare_lf),
                            dechunk,
                            reframe: h.bare_lf,
                        }),
                        RespBody::Close => Resp::Body(BodyOut::Close),
                    };
                }
                Resp::Body(body) => {
                    let room = w.free();
                    if room == 0 {
                        return Ok(None);
                    }
                    let avail = from.len().min(room);
                    match body {
                        BodyOut::Length(rem) => {
                            let n = avail.min(usize::try_from(*rem).unwrap_or(usize::MAX));
                            if queue_body(&c.sock, plain, &mut c.writable, w, &from.filled()[..n]) {
                                c.last_write = self.now;
                            }
                            ex.sent_body += n as u64;
                            from.consume(n);
                            *rem -= n as u64;
                            if *rem == 0 {
                                ex.resp = Resp::Done;
                            }
                        }
                        BodyOut::Chunked {
                            dec,
                            dechunk: false,
                            reframe: true,
                        } => {
                            let window = reframe_window(room, true);
                            if window == 0 {
                                return Ok(None);
                            }
                            let input = &from.filled()[..avail.min(window)];
                            self.out.clear();
                            let d = body::reframe(dec, input, &mut self.out)
                                .map_err(|_| Fault::UpstreamBad(Cause::BadResponseBody))?;
                            if queue_body(&c.sock, plain, &mut c.writable, w, &self.out) {
                                c.last_write = self.now;
                            }
                            from.consume(d.consumed);
                            ex.sent_body += self.out.len() as u64;
                            if d.done {
                                ex.resp = Resp::Done;
                            }
                        }
                        BodyOut::Chunked { dec, dechunk, .. } => {
                            let input = &from.filled()[..avail];
                            let mut relayed = 0u64;
                            let d = if *dechunk {
                                dec.decode(input, &mut |a, b| {
                                    w.push(&input[a..b]);
                                    relayed += (b - a) as u64;
                                })
                            } else {
                                dec.decode(input, &mut |_, _| {})
                            }
                            .map_err(|_| Fault::UpstreamBad(Cause::BadResponseBody))?;
                            if !*dechunk {
                                let bytes = &input[..d.consumed];
                                if queue_body(&c.sock, plain, &mut c.writable, w, bytes) {
                                    c.last_write = self.now;
                                }
                                relayed = d.consumed as u64;
                            }
                            from.consume(d.consumed);
                            ex.sent_body += relayed;
                            if d.done {
                                ex.resp = Resp::Done;
                            }
                        }
                        BodyOut::Close => {
                            let bytes = &from.filled()[..avail];
                            if queue_body(&c.sock, plain, &mut c.writable, w, bytes) {
                                c.last_write = self.now;
                            }
                            ex.sent_body += avail as u64;
                            from.consume(avail);
                        }
                    }
                }
                Resp::Done => {
                    // Bytes past the end of the response: never forwarded, never reused.
                    ex.up_dirty = true;
                    from.clear();
                }
            }
        }
    }

    /// Ends an exchange whose response is complete: the upstream connection goes back to the
    /// pool (or to a waiter) if it may, and the client reads its next request or closes.
    pub(super) fn finish_exchange(
        &mut self,
        cid: ClientId,
        mut ex: Box<Exchange>,
        req_done: bool,
    ) -> (Phase, Step) {
        let uid = ex
            .leg
            .take_up()
            .expect("a finished exchange had a connection");
        let connect_ms = if ex.reused {
            0
        } else {
            self.ups.conn(uid).map_or(0, |u| u.connect_ms)
        };
        self.log_end(cid, ex.status, ex.sent_body, Some((&ex, connect_ms)), None);
        let leftover = ex.from_up.as_ref().is_some_and(|b| !b.is_empty());
        let reusable = ex.up_keeps && !ex.up_dirty && !leftover && !ex.up_eof && req_done;
        if reusable {
            self.release_up(uid, ex.hint, ex.set.pool);
        } else {
            let why = if !ex.up_keeps {
                CloseReason::UpstreamClose
            } else if !req_done {
                // Answered before the whole request went, and the rest could not follow.
                CloseReason::RequestUnfinished
            } else {
                CloseReason::NotReusable
            };
            self.close_up(uid, why);
        }
        let keep = ex.keep_client && req_done;
        self.retire(ex);
        let Some(c) = self.clients.get_mut(cid.index()) else {
            return (Phase::Closing, Step::Closed);
        };
        c.served += 1;
        c.last_active = self.now;
        if keep {
            (Phase::Head, Step::Continue)
        } else {
            (Phase::Closing, Step::Continue)
        }
    }

    /// Handles a failed exchange: replay, a canned answer, or cutting the connection.
    pub(super) fn fail(&mut self, cid: ClientId, mut ex: Box<Exchange>, f: Fault) -> (Phase, Step) {
        let node = ex.node;
        if let Leg::Queued { .. } = ex.leg {
            self.ups.forget_waiter(node, cid);
        }
        match f {
            Fault::UpstreamGone(_)
                if !ex.started() && ex.reused && !ex.replayed && ex.intact && ex.replay_safe =>
            {
                // The reused connection died before answering: the upstream closed it as we sent.
                // That is an idle close too, and what the learned idle timeout learns from.
                if let Some(uid) = ex.leg.take_up() {
                    self.closed_by_upstream(uid);
                }
                self.node_counters(node, |c| c.replays += 1);
                ex.replayed = true;
                ex.sent = 0;
                ex.wrote = 0;
                ex.send_failed = false;
                ex.up_eof = false;
                ex.resp = Resp::Waiting;
                self.bufs.release(&mut ex.from_up);
                debug!("replaying a request on a fresh connection to pool {node}");
                self.start_exchange(cid, ex, true)
            }
            Fault::UpstreamGone(_) | Fault::UpstreamBad(_) if !ex.started() => {
                // Lost before any response byte. Only a fresh connection's loss says something
                // about the node: a reused one may just have been closed as we sent on it.
                if let Some(uid) = ex.leg.take_up() {
                    self.close_up(uid, CloseReason::Error);
                }
                if ex.reused {
                    // A pooled connection failed under a request that may not be replayed: the
                    // stale-reuse advice counts it.
                    self.node_counters(node, |c| c.reused_failures += 1);
                } else {
                    self.node_failed(node);
                }
                if self.next_try(cid, &mut ex) {
                    return self.start_exchange(cid, ex, false);
                }
                self.give_up(cid, ex, f)
            }
            Fault::UpstreamGone(_) | Fault::UpstreamBad(_) | Fault::ClientBad(_) => {
                self.give_up(cid, ex, f)
            }
            Fault::ClientGone(cause) => {
                // 499, as nginx logs a request whose client went away before the answer.
                let status = if ex.answered() { ex.status } else { 499 };
                if !matches!(ex.resp, Resp::Done) {
                    self.node_counters(node, |c| c.client_aborts += 1);
                }
                self.report(cid, cause, Some(&ex));
                self.log_end(cid, status, ex.sent_body, Some((&ex, 0)), Some(cause));
                if let Some(uid) = ex.leg.take_up() {
                    self.abandon_up(uid, &ex);
                }
                self.retire(ex);
                self.close_client(cid);
                (Phase::Closing, Step::Closed)
            }
        }
    }

    /// Lets go of the connection of an exchange that ends early. One that never carried a byte
    /// of it is as good as new: pooled if connected, pooled once connected if still connecting.
    /// Anything else holds part of a request and closes.
    pub(super) fn abandon_up(&mut self, uid: UpId, ex: &Exchange) {
        if ex.wrote > 0 || ex.started() {
            self.close_up(uid, CloseReason::NotReusable);
            return;
        }
        match self.ups.state(uid) {
            Some(ConnState::Connecting) => self.ups.disown(uid),
            Some(ConnState::Active) => {
                self.ups.disown(uid);
                let hint = self.ups.conn(uid).map(|c| c.hint()).unwrap_or_default();
                self.release_up(uid, hint, ex.set.pool);
            }
            _ => self.close_up(uid, CloseReason::NotReusable),
        }
    }

    /// Ends an exchange that failed with its cause's answer (502, or the client's error status),
    /// or cuts the connection when a response had already begun.
    pub(super) fn give_up(
        &mut self,
        cid: ClientId,
        mut ex: Box<Exchange>,
        f: Fault,
    ) -> (Phase, Step) {
        let cause = f.cause();
        if let Some(uid) = ex.leg.take_up() {
            match f {
                // The client's fault: a connection that carried none of the request is kept.
                Fault::ClientBad(_) => self.abandon_up(uid, &ex),
                _ => self.close_up(uid, CloseReason::Error),
            }
        }
        if ex.answered() {
            // Cut mid-response: what arrived still goes out, then the connection closes without
            // the rest, so the client sees a message shorter than its framing promised rather
            // than a complete one. Logged with the status that had gone out.
            self.report(cid, cause, Some(&ex));
            self.log_end(cid, ex.status, ex.sent_body, Some((&ex, 0)), Some(cause));
            self.retire(ex);
            return (Phase::Closing, Step::Continue);
        }
        let keep = matches!(f, Fault::UpstreamGone(_) | Fault::UpstreamBad(_))
            && matches!(ex.req, BodyIn::Done)
            && ex.req_keep_alive
            && !ex.send_failed;
        if let Some(c) = self.clients.get_mut(cid.index()) {
            c.served += 1;
        }
        let r = self.answer_for(cid, cause, keep, Some(&ex));
        self.retire(ex);
        r
    }

    /// Ends an exchange's life: its buffers go back to the pool and its box to the free list,
    /// where the next request's exchange comes from.
    pub(super) fn retire(&mut self, mut ex: Box<Exchange>) {
        if ex.piped != Piped::Nothing {
            // Ended with bytes in the pipe (a reset, an abort): they belong to nobody now.
            self.pipe.discard();
            ex.piped = Piped::Nothing;
        }
        self.bufs
            .give_back(mem::replace(&mut ex.to_up, Buf::empty()));
        self.bufs.release(&mut ex.from_up);
        // Bounded like the buffer pool's reserve: a burst does not pin its peak forever.
        if self.spare.len() < MAX_SPARE_EXCHANGES {
            self.spare.push(ex);
        }
    }

    /// Ends a queued request with a canned answer and closes its connection after it.
    pub(super) fn fail_waiter(&mut self, cid: ClientId, cause: Cause) {
        let Some(c) = self.clients.get_mut(cid.index()) else {
            return;
        };
        if let Phase::Exchange(ex) = mem::replace(&mut c.phase, Phase::Closing) {
            let (phase, step) = self.answer_for(cid, cause, false, Some(&ex));
            self.retire(ex);
            if step != Step::Closed {
                if let Some(c) = self.clients.get_mut(cid.index()) {
                    c.phase = phase;
                }
                self.pending.push(cid);
            }
        }
    }
}
