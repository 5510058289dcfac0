//! One core: a `mio::Poll`, its listeners, its client connections and their phases, its timer
//! wheel, buffers and counters, and its upstream side (`upstream::Upstreams`), all owned by one
//! thread and touched by no other. This module is the event loop: it turns events and timers
//! into steps of each client's phase. A request's exchange with its upstream is `exchange`'s,
//! the I/O of upstream connections `upconn`'s, socket and TLS reads and writes `io`'s.
//!
//! Invariants kept here:
//! - Every socket is registered once, for reading and writing, edge-triggered; readiness is kept
//!   in user space (`readable`/`writable` flags set by events, cleared by `WouldBlock` or a short
//!   read or write), so the hot path makes no `epoll_ctl` calls.
//! - Code that queues output for a socket attempts the write in the same pass.
//! - An idle client holds no buffer; an idle upstream connection holds no buffer and stays
//!   registered, so the moment it turns readable (EOF, reset, stray bytes) it is closed.
//! - Timers are lazy: a connection stores its deadline and the wheel holds at most a few entries
//!   per connection; an entry that fires early re-arms at the stored deadline.
//! - The clock is read once per loop turn (`tick`) and `now` handed down.

use std::io::{self, Read};
use std::mem;
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use log::{debug, info, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::{Connection, ServerConnection};

use crate::accesslog::{AccessLog, Outcome, Pending};
use crate::balance::Balancer;
use crate::buf::{Buf, BufPool};
use crate::cause::{Cause, Context};
use crate::clock::Clock;
use crate::config::{Balance, ClientSettings, Config};
use crate::http::answer::canned;
use crate::http::head::{self, Header, Limits};
use crate::id::{ClientId, NodeId, UpId};
use crate::metrics::{Counters, NodeCounters};
use crate::route::Router;
use crate::runtime::control::{Control, Export};
use crate::runtime::deadline::{Clocks, Due};
use crate::runtime::exchange::{Exchange, Fault, Leg, Piped, Tries};
use crate::runtime::generation::{ListenTls, Shared};
use crate::runtime::io::{end, pump, ReadOutcome, SplicePipe, UpIo};
use crate::runtime::process::Process;
use crate::slab::Slab;
use crate::timer::TimerWheel;
use crate::upstream::pool::CloseReason;
use crate::upstream::{Expiry, Upstreams, Waiting};

const WAKER: Token = Token(usize::MAX);
const CONN_BASE: usize = 1 << 16;
/// Steps one drive may take before yielding to other connections.
const MAX_STEPS: usize = 64;
/// How long a closing client may keep sending before we stop reading and drop it.
const LINGER: Duration = Duration::from_secs(2);
/// Buffers one core may have checked out at once.
const MAX_BUFFERS: usize = 65_536;
/// Bytes per buffer (or `client.max_head_bytes` when larger). Only connections with bytes in
/// flight hold buffers; 32 KiB lets a 16 KiB response and its head pass in one read and one
/// write, where 16 KiB took two of each.
const BUF_BYTES: usize = 32_768;
/// Finished exchanges' boxes a core keeps for reuse.
pub(super) const MAX_SPARE_EXCHANGES: usize = 1024;
/// After EMFILE/ENFILE, accepting pauses this long instead of spinning.
const ACCEPT_PAUSE_MS: u64 = 100;
/// At `max_client_connections`, how often a paused core looks whether it may accept again.
const CAP_RECHECK_MS: u64 = 50;
/// How often a core looks after its pools: purges that are due, the warm floor
/// (`keepalive_pool.min_idle`) and `preconnect` top-ups.
pub(super) const TICK_EVERY_MS: u64 = 1_000;

fn client_token(id: ClientId) -> Token {
    Token(CONN_BASE + 2 * id.index())
}

pub(super) fn up_token(id: UpId) -> Token {
    Token(CONN_BASE + 2 * id.index() + 1)
}

/// What an event's token names: the inverse of the tokens given at registration.
#[derive(Clone, Copy)]
enum Source {
    Waker,
    Listener(usize),
    Client(ClientId),
    Up(UpId),
}

fn source(t: Token) -> Source {
    match t.0 {
        _ if t == WAKER => Source::Waker,
        n if n < CONN_BASE => Source::Listener(n),
        n if (n - CONN_BASE) % 2 == 0 => Source::Client(ClientId((n - CONN_BASE) / 2)),
        n => Source::Up(UpId((n - CONN_BASE) / 2)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKey {
    Client(ClientId),
    Up(UpId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Something moved; look again.
    Continue,
    /// Nothing can move until an event or a timer.
    Wait,
    /// The client connection is gone.
    Closed,
}

/// A client connection switched to another protocol (a 101): bytes flow both ways until either
/// side closes or it idles past the upstream's read timeout.
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) up: UpId,
    pub(super) from_up: Option<Buf>,
    /// Inactivity limit (the upstream's read timeout).
    pub(super) idle_ms: u64,
}

// The exchange is boxed so that a step moves a pointer, not the few hundred bytes of the
// exchange (each step takes the phase out of the client and puts one back, and the step
// functions pass the exchange by value: inline, that was some 20 memcpy calls a request). The
// boxes come from the core's free list (`Core::spare`), so a request allocates nothing.
#[derive(Debug)]
pub(super) enum Phase {
    /// Waiting for (the rest of) a request head; the keep-alive idle state between requests.
    Head,
    Exchange(Box<Exchange>),
    Tunnel(Tunnel),
    /// Writing what is left in `wbuf`, then closing.
    Closing,
    /// Write side shut; reading and discarding until EOF or the linger deadline, so the client
    /// reads our last answer instead of a reset.
    Lingering,
}

pub(super) struct Client {
    pub(super) sock: TcpStream,
    /// The TLS session of a client that came in on a TLS listener.
    pub(super) tls: Option<Box<Connection>>,
    pub(super) ip: IpAddr,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The peer's FIN (or an error) was reported by an event; sticky.
    pub(super) hup: bool,
    pub(super) eof: bool,
    pub(super) rbuf: Option<Buf>,
    pub(super) wbuf: Option<Buf>,
    pub(super) phase: Phase,
    pub(super) served: u64,
    accepted_at: u64,
    pub(super) last_active: u64,
    pub(super) head_started: Option<u64>,
    pub(super) last_write: u64,
    deadline: u64,
    timer_at: u64,
}

/// A listening socket of a core, and the `[[listen]]` entry it serves (a core may have several
/// sockets of one entry after a binary upgrade from a hearth with more cores).
struct Listening {
    sock: TcpListener,
    entry: usize,
}

pub struct Core {
    pub(super) id: usize,
    pub(super) poll: Poll,
    listeners: Vec<Listening>,
    accept_paused_until: u64,
    emfile_logged: bool,
    pub(super) clients: Slab<Client>,
    /// The upstream side: connections, pools and every rule about them.
    pub(super) ups: Upstreams<UpIo>,
    /// By upstream index of the current generation.
    pub(super) balancers: Vec<Balancer>,
    /// Some upstream of the current generation balances by latency (ewma); without one nobody
    /// reads the nodes' latency, and responses skip the average (an `exp` each). A switch to
    /// ewma starts from no history, as a new node does.
    pub(super) ewma: bool,
    /// Reloads seen, so a request can tell whether its upstream index still means the same.
    pub(super) generation: u64,
    /// By client id: the tries of the request in progress.
    pub(super) tries: Vec<Tries>,
    /// By client id: the SNI name of the request in progress, for an upstream whose SNI comes
    /// from the Host (its tag is `Exchange::sni`); read when a connection is opened for it.
    /// Each string keeps its capacity, so writing the name does not allocate.
    pub(super) sni_names: Vec<String>,
    timers: TimerWheel<(TimerKey, u64)>,
    pub(super) bufs: BufPool,
    /// The pipe large plain bodies are spliced through (see `splice`).
    pub(super) pipe: SplicePipe,
    pub(super) shared: Arc<Shared>,
    pub(super) process: Arc<Process>,
    /// This core's own copy of the generation's router. A compiled regex keeps a scratch pool
    /// that only its first user reaches without a lock; other threads go through a mutex. A
    /// clone has its own pool, so each core matching `~~` / `~*` conditions on its copy never
    /// contends with another core.
    pub(super) router: Router,
    pub(super) limits: Limits,
    pub(super) client_ms: ClientMs,
    pub(super) headers: Vec<Header>,
    pub(super) out: Vec<u8>,
    fired: Vec<(TimerKey, u64)>,
    /// Boxes of finished exchanges, for the next requests (see `Phase`). Boxes, not values:
    /// the point is to hand out the allocation itself.
    #[allow(clippy::vec_box)]
    pub(super) spare: Vec<Box<Exchange>>,
    pub(super) pending: Vec<ClientId>,
    /// Clients that used up their steps and resume on the next loop turn.
    deferred: Vec<ClientId>,
    /// The process's clock, read once per loop turn (`tick`); `now` is its reading.
    pub(super) clock: Clock,
    pub(super) now: u64,
    /// Client-side counters; each node's are in its record (`ups`).
    pub(super) counters: Counters,
    pub(super) shutdown_at: Option<u64>,
    /// Some while draining for a binary upgrade: where idle plain upstream connections go.
    pub(super) export: Option<crossbeam_channel::Sender<Export>>,
    /// While draining for an upgrade, something changed what the remaining clients may still
    /// need (a connection was pooled, a client left): look for idle connections to export.
    pub(super) export_due: bool,
    /// TLS connections closed for the upgrade, for the core's last word.
    pub(super) upgrade_closed: u64,
    /// Started on the sockets of a hearth it replaces, which is still handing over its
    /// connections: no pool is warmed until it has (`Control::Inherited`).
    pub(super) inheriting: bool,
    /// While connections still come from the hearth this one replaces, until when a request
    /// waits for one of them rather than open one (`Control::Expect`); 0 otherwise.
    pub(super) expect_until: u64,
    /// Next `min_idle` top-up; 0 when no upstream asks for a warm floor.
    /// When `pool_tick` runs next; 0 while no pool is configured.
    pub(super) next_tick: u64,
    /// Connections a purge takes off the idle lists, kept for its allocation.
    pub(super) purging: Vec<(UpId, CloseReason)>,
    /// The access log, when configured; its entries in progress by client id (kept out of
    /// `Client` so idle connections stay small).
    pub(super) access: Option<AccessLog>,
    pub(super) logs: Vec<Option<Pending>>,
    ctl: Receiver<Control>,
}

impl Core {
    pub fn new(
        id: usize,
        poll: Poll,
        listeners: Vec<(usize, TcpListener)>,
        shared: Arc<Shared>,
        process: Arc<Process>,
        ctl: Receiver<Control>,
        inheriting: bool,
    ) -> io::Result<Core> {
        let cfg = shared.cfg.clone();
        let budgets = process.budgets();
        let mut core = Core {
            id,
            poll,
            listeners: listeners
                .into_iter()
                .map(|(entry, sock)| Listening { sock, entry })
                .collect(),
            accept_paused_until: 0,
            emfile_logged: false,
            clients: Slab::default(),
            ups: Upstreams::new(id, &budgets),
            balancers: balancers_of(&cfg),
            ewma: uses_ewma(&cfg),
            generation: 0,
            tries: Vec::new(),
            sni_names: Vec::new(),
            timers: TimerWheel::new(Clock.now_ms()),
            bufs: BufPool::new(cfg.client.max_head_bytes.max(BUF_BYTES), MAX_BUFFERS),
            pipe: SplicePipe::default(),
            limits: Limits {
                max_head_bytes: cfg.client.max_head_bytes,
                accept_bare_lf: cfg.client.accept_bare_lf,
                ..head::Limits::default()
            },
            client_ms: ClientMs::of(&cfg.client),
            headers: Vec::with_capacity(head::MAX_HEADERS),
            out: Vec::with_capacity(cfg.client.max_head_bytes + 1024),
            fired: Vec::new(),
            spare: Vec::new(),
            pending: Vec::new(),
            deferred: Vec::new(),
            clock: Clock,
            now: 0,
            counters: Counters::default(),
            router: shared.router.clone(),
            shutdown_at: None,
            export: None,
            export_due: false,
            upgrade_closed: 0,
            inheriting,
            expect_until: 0,
            next_tick: 0,
            purging: Vec::new(),
            access: match &cfg.access_log {
                Some(a) => Some(AccessLog::open(&a.path, a.format)?),
                None => None,
            },
            logs: Vec::new(),
            ctl,
            shared,
            process,
        };
        for (i, l) in core.listeners.iter_mut().enumerate() {
            core.poll
                .registry()
                .register(&mut l.sock, Token(i), Interest::READABLE)?;
        }
        Ok(core)
    }

    pub(super) fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    fn tick(&mut self) {
        self.now = self.clock.now_ms();
    }

    /// Runs the event loop until shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.tick();
        self.pool_tick();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.tick();
            // Readiness first, for the whole batch, then the work: a request driven early in
            // the batch must not take a pooled connection whose EOF is further down it.
            for ev in events.iter() {
                self.note(ev);
            }
            for ev in events.iter() {
                self.dispatch(ev.token());
            }
            self.pending.append(&mut self.deferred);
            self.run_pending();
            self.expire_timers();
            self.run_pending();
            if self.export_due {
                self.export_surplus(true);
            }
            if self.expect_until != 0 && self.now >= self.expect_until {
                self.stop_expecting();
            }
            if self.accept_paused_until != 0 && self.now >= self.accept_paused_until {
                self.accept_paused_until = 0;
                if self.below_resume_mark() {
                    for i in 0..self.listeners.len() {
                        self.accept(i);
                    }
                } else {
                    self.accept_paused_until = self.now + CAP_RECHECK_MS;
                }
            }
            if self.next_tick != 0 && self.now >= self.next_tick {
                self.pool_tick();
            }
            if let Some(a) = self.access.as_mut() {
                a.tick(self.now);
            }
            if let Some(at) = self.shutdown_at {
                if self.clients.is_empty() || self.now >= at {
                    self.finish_shutdown();
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.deferred.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.timers.next_deadline();
        if self.accept_paused_until != 0 {
            next = Some(next.map_or(self.accept_paused_until, |n| {
                n.min(self.accept_paused_until)
            }));
        }
        if let Some(at) = self.shutdown_at {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if self.expect_until != 0 {
            next = Some(next.map_or(self.expect_until, |n| n.min(self.expect_until)));
        }
        if let Some(d) = self.access.as_ref().and_then(AccessLog::next_deadline) {
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        if self.next_tick != 0 {
            next = Some(next.map_or(self.next_tick, |n| n.min(self.next_tick)));
        }
        next.map(|d| self.clock.until(d))
    }

    /// Records what event `ev` says of its socket, without acting on it (`dispatch` does).
    fn note(&mut self, ev: &Event) {
        let (readable, hup, writable) = match source(ev.token()) {
            Source::Client(i) => {
                let Some(c) = self.clients.get_mut(i.index()) else {
                    return;
                };
                (&mut c.readable, &mut c.hup, &mut c.writable)
            }
            Source::Up(i) => {
                let Some(u) = self.ups.conn_mut(i).map(|u| &mut u.io) else {
                    return;
                };
                (&mut u.readable, &mut u.hup, &mut u.writable)
            }
            Source::Waker | Source::Listener(_) => return,
        };
        *readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
        *hup |= ev.is_read_closed() || ev.is_error();
        *writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
    }

    /// Acts on an event for token `t`, whose readiness `note` has recorded. Work done for
    /// events earlier in the batch may have used that readiness already; then this finds
    /// nothing to do, as for any spurious event. Both connection kinds ignore a token whose
    /// connection is gone.
    fn dispatch(&mut self, t: Token) {
        match source(t) {
            Source::Waker => self.control(),
            Source::Listener(li) => self.accept(li),
            Source::Client(i) => self.drive(i),
            Source::Up(i) => self.upstream_ready(i),
        }
    }

    fn run_pending(&mut self) {
        let mut guard = 0;
        while let Some(cid) = self.pending.pop() {
            self.drive(cid);
            guard += 1;
            if guard > 100_000 {
                warn!("core {}: runaway pending work, deferring", self.id);
                break;
            }
        }
    }

    // ---------------------------------------------------------------- control

    fn control(&mut self) {
        while let Ok(msg) = self.ctl.try_recv() {
            match msg {
                Control::Shutdown { grace } => self.begin_shutdown(grace),
                Control::Stats(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                Control::ShedIdle { node, from } => {
                    // Any name: the other core's release matches it to a waiter or, for
                    // another name, frees its place in the caps (`release_up`).
                    if let Some(uid) = self.checkout_idle(node, None) {
                        self.hand_over(uid, from);
                    }
                }
                Control::Freed(node) => self.serve_waiters(node),
                Control::Adopt(h) => self.adopt(*h),
                Control::Reload(shared) => self.reload(shared),
                Control::NodeHealth { node, healthy } => self.node_health(node, healthy),
                Control::ReopenLog => self.reopen_access_log(),
                Control::Export { export } => self.export_early(export),
                Control::Upgrade { grace, export } => self.begin_upgrade(grace, export),
                Control::Expect { until } => self.expect_until = until,
                Control::Inherited => {
                    self.inheriting = false;
                    self.last_call();
                    self.pool_tick();
                }
            }
        }
    }

    /// Swaps in a new configuration generation. Pools of nodes still configured keep their
    /// connections; idle connections to removed nodes close now, active ones when released.
    /// Requests in flight keep the settings they started with.
    fn reload(&mut self, shared: Arc<Shared>) {
        self.ups.sync(&self.process.budgets());
        self.router = shared.router.clone();
        self.balancers = balancers_of(&shared.cfg);
        self.ewma = uses_ewma(&shared.cfg);
        self.generation += 1;
        if shared.cfg.access_log != self.shared.cfg.access_log {
            if let Some(a) = self.access.as_mut() {
                a.flush();
            }
            self.access = match &shared.cfg.access_log {
                None => None,
                Some(a) => match AccessLog::open(&a.path, a.format) {
                    Ok(log) => Some(log),
                    Err(e) => {
                        warn!(
                            "core {}: cannot open access log {}: {e}; logging is off",
                            self.id,
                            a.path.display()
                        );
                        None
                    }
                },
            };
        }
        // Buffers keep the size they were made with; a larger head limit takes a restart.
        self.limits.max_head_bytes = shared.cfg.client.max_head_bytes.min(self.bufs.buf_size());
        self.limits.accept_bare_lf = shared.cfg.client.accept_bare_lf;
        self.client_ms = ClientMs::of(&shared.cfg.client);
        self.shared = shared;
        for node in (0..self.ups.nodes()).map(NodeId) {
            if self.shared.pool(node).is_some() {
                continue;
            }
            for uid in self.ups.drain_idle(node) {
                self.close_up(uid, CloseReason::Removed);
            }
            loop {
                let clients = &self.clients;
                let Some((cid, _)) = self
                    .ups
                    .next_waiter(node, |c| waiting_for(clients, c, node))
                else {
                    break;
                };
                self.fail_waiter(cid, Cause::NodeRemoved);
            }
        }
        debug!("core {}: configuration reloaded", self.id);
        self.pool_tick();
    }

    /// SIGUSR1: start the access log anew at its configured path, after a rotation renamed the
    /// file. A log that could not be opened before is tried again.
    fn reopen_access_log(&mut self) {
        let Some(cfg) = self.shared.cfg.access_log.as_ref() else {
            return;
        };
        let opened = match self.access.as_mut() {
            Some(log) => log.reopen(&cfg.path),
            None => AccessLog::open(&cfg.path, cfg.format).map(|log| self.access = Some(log)),
        };
        match opened {
            Ok(()) => debug!("core {}: access log reopened", self.id),
            Err(e) => warn!(
                "core {}: cannot reopen access log {}: {e}",
                self.id,
                cfg.path.display()
            ),
        }
    }

    /// Active health checks changed a node's state. Going down, its idle connections close now
    /// and those in use when released (`release_up`), and new requests skip it; coming back,
    /// it is used again and warmed if its upstream keeps a floor.
    fn node_health(&mut self, node: NodeId, healthy: bool) {
        let Some(n) = self.ups.node_mut(node) else {
            return; // a pool this core has no record of has no connections here either
        };
        n.down = !healthy;
        debug!("core {}: pool {node} healthy={healthy}", self.id);
        if healthy {
            self.pool_tick();
            return;
        }
        for uid in self.ups.drain_idle(node) {
            self.close_up(uid, CloseReason::Health);
        }
    }

    fn snapshot(&self) -> Counters {
        let mut c = self.counters.clone();
        c.client_open_now = self.clients.len() as u64;
        c.nodes = self.ups.snapshot();
        c
    }

    /// Changes node `node`'s counters, when the node is known.
    pub(super) fn node_counters(&mut self, node: NodeId, f: impl FnOnce(&mut NodeCounters)) {
        if let Some(n) = self.ups.node_mut(node) {
            f(&mut n.counters);
        }
    }

    pub(super) fn begin_shutdown(&mut self, grace: Duration) {
        if self.shutdown_at.is_some() {
            return;
        }
        self.tick();
        self.shutdown_at = Some(self.now + grace.as_millis() as u64);
        for mut l in self.listeners.drain(..) {
            // Deregistered before the close: after an upgrade the new hearth holds the same
            // socket, and epoll forgets a socket only when its last descriptor closes.
            let _ = self.poll.registry().deregister(&mut l.sock);
        }
        for cid in self.clients.keys() {
            self.pending.push(ClientId(cid));
        }
    }

    fn finish_shutdown(&mut self) {
        for cid in self.clients.keys() {
            self.close_client(ClientId(cid));
        }
        if self.export.is_some() {
            for node in (0..self.ups.nodes()).map(NodeId) {
                for uid in self.ups.drain_idle(node) {
                    self.export_up(uid);
                }
            }
        }
        for uid in self.ups.ids() {
            self.close_up(uid, CloseReason::NotReusable);
        }
        if let Some(a) = self.access.as_mut() {
            a.flush();
        }
        let c = self.snapshot();
        let labels = self.process.labels();
        for (i, n) in c.nodes.iter().enumerate() {
            if n.requests > 0 {
                info!(
                    "core {}: {} requests={} connects={} reuses={} replays={} connect_failures={} queue_timeouts={}",
                    self.id, labels.get(i).map_or("", String::as_str), n.requests, n.connects, n.reuses, n.replays, n.connect_failures, n.queue_timeouts
                );
            }
        }
        if let Some(export) = self.export.take() {
            let _ = export.send(Export::Finished {
                core: self.id,
                closed: self.upgrade_closed,
            });
        }
    }

    // ---------------------------------------------------------------- accept

    fn accept(&mut self, li: usize) {
        if self.shutdown_at.is_some() || self.accept_paused_until != 0 {
            return;
        }
        let cap = self.shared.cfg.max_client_connections;
        loop {
            let Some(l) = self.listeners.get(li) else {
                return;
            };
            let entry = l.entry;
            if cap > 0 && !self.reserve_client_slot(cap) {
                // Leave new connections in the backlog rather than failing requests in flight.
                if self.accept_paused_until == 0 {
                    debug!(
                        "core {}: {cap} client connections open, pausing accepts",
                        self.id
                    );
                }
                self.accept_paused_until = self.now + CAP_RECHECK_MS;
                return;
            }
            let accepted = l.sock.accept();
            if cap > 0 && accepted.is_err() {
                self.process.clients_open.fetch_sub(1, Ordering::AcqRel);
            }
            match accepted {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let tls = match self.shared.listen_tls.get(entry) {
                        None | Some(ListenTls::Plain) => None,
                        // One Arc clone per connection (not per request) for the session.
                        Some(ListenTls::Tls(cfg)) => match ServerConnection::new(cfg.clone()) {
                            Ok(conn) => Some(Box::new(Connection::Server(conn))),
                            Err(e) => {
                                warn!("starting a TLS session failed: {e}");
                                None
                            }
                        },
                        Some(ListenTls::Broken) => None,
                    };
                    if tls.is_none()
                        && !matches!(
                            self.shared.listen_tls.get(entry),
                            None | Some(ListenTls::Plain)
                        )
                    {
                        // A TLS listener must never answer in plain text.
                        if cap > 0 {
                            self.process.clients_open.fetch_sub(1, Ordering::AcqRel);
                        }
                        continue;
                    }
                    let cid = ClientId(self.clients.vacant_key());
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        client_token(cid),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!("registering a client failed: {e}");
                        if cap > 0 {
                            self.process.clients_open.fetch_sub(1, Ordering::AcqRel);
                        }
                        continue;
                    }
                    self.counters.accepted += 1;
                    let now = self.now;
                    self.clients.insert(Client {
                        sock,
                        tls,
                        ip: peer.ip(),
                        readable: false,
                        writable: false,
                        hup: false,
                        eof: false,
                        rbuf: None,
                        wbuf: None,
                        phase: Phase::Head,
                        served: 0,
                        accepted_at: now,
                        last_active: now,
                        head_started: None,
                        last_write: now,
                        deadline: 0,
                        timer_at: 0,
                    });
                    self.rearm_client(cid);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    if !self.emfile_logged {
                        warn!("core {}: accept failed ({e}); pausing accepts for {ACCEPT_PAUSE_MS} ms at a time", self.id);
                        self.emfile_logged = true;
                    }
                    self.accept_paused_until = self.now + ACCEPT_PAUSE_MS;
                    return;
                }
                Err(e) => {
                    debug!("accept: {e}");
                    return;
                }
            }
        }
    }

    // ---------------------------------------------------------------- client driving

    /// Moves a client's state machine as far as readiness allows.
    pub(super) fn drive(&mut self, cid: ClientId) {
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > MAX_STEPS {
                // Still moving: let other connections have a turn, then come back without
                // waiting for an event (edge-triggered readiness will not repeat).
                self.deferred.push(cid);
                break;
            }
            let Some(c) = self.clients.get_mut(cid.index()) else {
                return;
            };
            let phase = mem::replace(&mut c.phase, Phase::Closing);
            let (next, step) = match phase {
                Phase::Head => self.step_head(cid),
                Phase::Exchange(ex) => self.step_exchange(cid, ex),
                Phase::Tunnel(t) => self.step_tunnel(cid, t),
                Phase::Closing => self.step_closing(cid),
                Phase::Lingering => self.step_lingering(cid),
            };
            if step == Step::Closed {
                return;
            }
            let Some(c) = self.clients.get_mut(cid.index()) else {
                return;
            };
            c.phase = next;
            if step == Step::Wait {
                break;
            }
        }
        self.rearm_client(cid);
    }

    /// Writes pending client output. Err: the client is gone.
    ///
    /// The state machine calls this at every step, about nine times a request, and most calls
    /// find nothing to write: those are answered here, inline, before the write path is entered.
    #[inline]
    pub(super) fn flush_client(&mut self, cid: ClientId) -> Result<bool, ()> {
        let c = self.clients.get(cid.index()).ok_or(())?;
        let idle = c.wbuf.as_ref().is_none_or(Buf::is_empty) || !c.writable;
        if idle && c.tls.is_none() {
            return Ok(false);
        }
        self.write_client(cid)
    }

    fn write_client(&mut self, cid: ClientId) -> Result<bool, ()> {
        let now = self.now;
        let c = &mut self.clients.get_mut(cid.index()).ok_or(())?;
        let mut end = end!(c);
        // What rustls holds goes first (handshake, alerts, the last record), even with no wbuf.
        let flushed = end.flush_tls()?;
        if flushed {
            c.last_write = now;
        }
        let Some(w) = c.wbuf.as_mut() else {
            return Ok(flushed);
        };
        if w.is_empty() || !*end.writable {
            return Ok(flushed);
        }
        let n = end.write_from(w.filled())?;
        w.consume(n);
        if n > 0 {
            c.last_write = now;
        }
        self.bufs.release_if_empty(&mut c.wbuf);
        Ok(n > 0 || flushed)
    }

    /// Queues a canned answer for `cause` and moves to closing (or back to reading heads when
    /// `keep`).
    pub(super) fn answer(&mut self, cid: ClientId, cause: Cause, keep: bool) -> (Phase, Step) {
        self.answer_for(cid, cause, keep, None)
    }

    /// As `answer`, for a request that had an exchange: its node and progress go into the
    /// warning and the access log line.
    pub(super) fn answer_for(
        &mut self,
        cid: ClientId,
        cause: Cause,
        keep: bool,
        ex: Option<&Exchange>,
    ) -> (Phase, Step) {
        let status = cause.status();
        // Stopping, an answer of our own says that the connection closes after it.
        let keep = keep && self.shutdown_at.is_none();
        self.counters.answered(status);
        self.report(cid, cause, ex);
        self.log_end(cid, status, 0, ex.map(|e| (e, 0)), Some(cause));
        let Some(c) = self.clients.get_mut(cid.index()) else {
            return (Phase::Closing, Step::Closed);
        };
        if c.wbuf.is_none() {
            c.wbuf = self.bufs.checkout();
        }
        match c.wbuf.as_mut() {
            Some(w) if w.free() >= canned(status, !keep).len() => {
                w.push(canned(status, !keep));
            }
            _ => {
                self.close_client(cid);
                return (Phase::Closing, Step::Closed);
            }
        }
        if keep {
            (Phase::Head, Step::Continue)
        } else {
            (Phase::Closing, Step::Continue)
        }
    }

    /// Says why hearth answered or cut a request: a warning at most once a second per node (or,
    /// for the clients' doing, per core) and cause, and a debug line every time.
    pub(super) fn report(&mut self, cid: ClientId, cause: Cause, ex: Option<&Exchange>) {
        self.counters.failed(cause);
        let cfg = &self.shared.cfg;
        let ms = |d: Duration| d.as_millis() as u64;
        let limit_ms = match cause {
            Cause::HeaderTimeout => ms(cfg.client.header_timeout),
            Cause::BodyTimeout => ms(cfg.client.body_timeout),
            Cause::SendTimeout => ms(cfg.client.send_timeout),
            Cause::ConnectTimeout => ex.map_or(0, |e| e.set.connect_ms),
            Cause::ReadTimeout => ex.map_or(0, |e| e.set.read_ms),
            Cause::QueueTimeout => ex.map_or(0, |e| e.set.queue_ms),
            _ => 0,
        };
        let cx = Context {
            node: ex.and_then(|e| self.shared.pool(e.node)).map(|p| p.addr),
            client: self.clients.get(cid.index()).map(|c| c.ip),
            body_sent: ex.map_or(0, |e| e.wrote.saturating_sub(e.head_len)),
            answered: ex.is_some_and(Exchange::started),
            limit_ms,
        };
        let now_ms = self.now;
        let clock = match ex {
            Some(e) if cause.upstream() => self.ups.node(e.node).map(|n| &n.budget().warned),
            _ => None,
        }
        .unwrap_or(&self.process.warned);
        // A client leaving is the ordinary life of a proxy, not something to warn about.
        if cause != Cause::ClientAbort && clock.may_warn(cause, now_ms) {
            warn!("{} [{}]", cause.describe(&cx), cause.token());
        } else {
            debug!("{} [{}]", cause.describe(&cx), cause.token());
        }
    }

    /// Ends client `cid`'s access log entry, if one is in progress. `cause`: why hearth answered
    /// or cut the request itself, if it did.
    pub(super) fn log_end(
        &mut self,
        cid: ClientId,
        status: u16,
        bytes_sent: u64,
        up: Option<(&Exchange, u64)>,
        cause: Option<Cause>,
    ) {
        let Some(p) = self.logs.get_mut(cid.index()).and_then(Option::take) else {
            return;
        };
        let Some(a) = self.access.as_mut() else {
            return;
        };
        let (upstream, connect_ms, reused, started) = match up {
            Some((ex, connect_ms)) => (
                self.shared.pool(ex.node).map(|p| p.addr),
                connect_ms,
                ex.reused,
                ex.started,
            ),
            None => (None, 0, false, self.now),
        };
        let o = Outcome {
            status,
            bytes_sent,
            upstream,
            connect_ms,
            reused,
            total_ms: self.now.saturating_sub(started),
            cause: cause.map(Cause::token),
        };
        a.finish(p, &o, self.now);
    }

    pub(super) fn step_head(&mut self, cid: ClientId) -> (Phase, Step) {
        if self.flush_client(cid).is_err() {
            self.close_client(cid);
            return (Phase::Closing, Step::Closed);
        }
        let shutting = self.shutdown_at.is_some();
        let upgrading = self.export.is_some();
        let max_requests = self.cfg().client.max_requests;
        let c = self
            .clients
            .get_mut(cid.index())
            .expect("driven client exists");
        let has_bytes = c.rbuf.as_ref().is_some_and(|b| !b.is_empty());
        if has_bytes {
            let buf = c.rbuf.as_ref().expect("checked above");
            match head::parse_request(buf.filled(), &self.limits, &mut self.headers) {
                Ok(Some(h)) => return self.begin_exchange(cid, h),
                Ok(None) => {}
                Err(e) => return self.answer(cid, Cause::of_head_error(e), false),
            }
        } else {
            c.head_started = None;
            // Draining for an upgrade, a client between requests is not closed under its
            // feet (its next request could be on the way): that request is answered, with
            // `Connection: close`, unless the idle timeout or the grace period ends first.
            if (shutting && !upgrading) || (max_requests > 0 && c.served >= max_requests) {
                return (Phase::Closing, Step::Continue);
            }
        }
        if c.eof {
            // EOF between requests is a normal close; inside a head it cuts the request. Either
            // way, what is queued for the client still goes out first.
            return (Phase::Closing, Step::Continue);
        }
        if !c.readable {
            self.bufs.release_if_empty(&mut c.rbuf);
            return (Phase::Head, Step::Wait);
        }
        if c.rbuf.is_none() {
            match self.bufs.checkout() {
                Some(b) => c.rbuf = Some(b),
                None => return self.answer(cid, Cause::NoBuffer, false),
            }
        }
        let buf = c.rbuf.as_mut().expect("checked out above");
        match end!(c).read_into(buf) {
            ReadOutcome::Data => {
                if c.head_started.is_none() {
                    c.head_started = Some(self.now);
                }
                c.last_active = self.now;
                (Phase::Head, Step::Continue)
            }
            ReadOutcome::Blocked => {
                self.bufs.release_if_empty(&mut c.rbuf);
                (Phase::Head, Step::Wait)
            }
            ReadOutcome::Eof => {
                c.eof = true;
                (Phase::Head, Step::Continue)
            }
            ReadOutcome::Failed => {
                self.close_client(cid);
                (Phase::Closing, Step::Closed)
            }
        }
    }

    fn step_tunnel(&mut self, cid: ClientId, mut t: Tunnel) -> (Phase, Step) {
        let mut progress = match self.flush_client(cid) {
            Ok(p) => p,
            Err(()) => return self.end_tunnel(cid, t),
        };
        let Some(c) = self.clients.get_mut(cid.index()) else {
            return (Phase::Closing, Step::Closed);
        };
        let Some(u) = self.ups.conn_mut(t.up).map(|u| &mut u.io) else {
            return self.end_tunnel(cid, t);
        };
        let up = pump(&mut end!(c), &mut c.rbuf, &mut end!(u), &mut self.bufs);
        let down = pump(&mut end!(u), &mut t.from_up, &mut end!(c), &mut self.bufs);
        match (up, down) {
            (Ok(a), Ok(b)) => progress |= a || b,
            _ => return self.end_tunnel(cid, t),
        }
        if progress {
            c.last_active = self.now;
        }
        (
            Phase::Tunnel(t),
            if progress { Step::Continue } else { Step::Wait },
        )
    }

    fn end_tunnel(&mut self, cid: ClientId, mut t: Tunnel) -> (Phase, Step) {
        // Deliver what the upstream already sent before closing.
        if let (Some(c), Some(fb)) = (self.clients.get_mut(cid.index()), t.from_up.as_mut()) {
            let mut end = end!(c);
            let _ = end.write_from(fb.filled());
            let _ = end.flush_tls();
        }
        self.bufs.release(&mut t.from_up);
        self.close_up(t.up, CloseReason::NotReusable);
        self.close_client(cid);
        (Phase::Closing, Step::Closed)
    }

    fn step_closing(&mut self, cid: ClientId) -> (Phase, Step) {
        if self.flush_client(cid).is_err() {
            self.close_client(cid);
            return (Phase::Closing, Step::Closed);
        }
        let Some(c) = self.clients.get_mut(cid.index()) else {
            return (Phase::Closing, Step::Closed);
        };
        if c.wbuf.as_ref().is_some_and(|w| !w.is_empty()) {
            return (Phase::Closing, Step::Wait);
        }
        if c.eof {
            // The client already closed its side: nothing to linger for.
            self.close_client(cid);
            return (Phase::Closing, Step::Closed);
        }
        if let Some(tls) = c.tls.as_deref_mut() {
            // Say we are done at the TLS level too (rustls sends it once however often asked),
            // and wait until it is out before shutting the write side.
            tls.send_close_notify();
            let mut end = end!(c);
            if end.flush_tls().is_err() {
                self.close_client(cid);
                return (Phase::Closing, Step::Closed);
            }
            if end.tls_pending() {
                return (Phase::Closing, Step::Wait);
            }
        }
        let _ = c.sock.shutdown(Shutdown::Write);
        c.last_write = self.now;
        (Phase::Lingering, Step::Continue)
    }

    fn step_lingering(&mut self, cid: ClientId) -> (Phase, Step) {
        let Some(c) = self.clients.get_mut(cid.index()) else {
            return (Phase::Closing, Step::Closed);
        };
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !c.readable {
                return (Phase::Lingering, Step::Wait);
            }
            match c.sock.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return (Phase::Lingering, Step::Wait);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close_client(cid);
        (Phase::Closing, Step::Closed)
    }

    /// Counts one more client connection against the process cap; false at the cap.
    fn reserve_client_slot(&self, cap: usize) -> bool {
        self.process
            .clients_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Accepting resumes only below 90% of `max_client_connections`, so a process at its cap
    /// does not flap between accepting one connection and pausing.
    fn below_resume_mark(&self) -> bool {
        let cap = self.shared.cfg.max_client_connections;
        cap == 0 || self.process.clients_open.load(Ordering::Acquire) < cap - cap / 10
    }

    pub(super) fn close_client(&mut self, cid: ClientId) {
        // One client fewer may need an idle connection.
        self.export_due |= self.export.is_some();
        self.log_end(cid, 499, 0, None, Some(Cause::ClientAbort));
        let Some(mut c) = self.clients.remove(cid.index()) else {
            return;
        };
        if self.shared.cfg.max_client_connections > 0 {
            self.process.clients_open.fetch_sub(1, Ordering::AcqRel);
        }
        self.bufs.release(&mut c.rbuf);
        self.bufs.release(&mut c.wbuf);
        match mem::replace(&mut c.phase, Phase::Closing) {
            Phase::Exchange(mut ex) => {
                if let Some(uid) = ex.leg.take_up() {
                    self.close_up(uid, CloseReason::NotReusable);
                } else {
                    self.ups.forget_waiter(ex.node, cid);
                }
                self.retire(ex);
            }
            Phase::Tunnel(mut t) => {
                self.bufs.release(&mut t.from_up);
                self.close_up(t.up, CloseReason::NotReusable);
            }
            _ => {}
        }
        // Dropping the socket closes it, which also takes it out of epoll: no epoll_ctl needed.
    }

    // ---------------------------------------------------------------- upstream connections

    // ---------------------------------------------------------------- timers

    pub(super) fn arm(&mut self, key: TimerKey, deadline: u64) {
        let slot = match key {
            TimerKey::Client(i) => self.clients.get_mut(i.index()).map(|c| &mut c.timer_at),
            TimerKey::Up(i) => self.ups.conn_mut(i).map(|u| &mut u.timer_at),
        };
        let Some(timer_at) = slot else { return };
        if deadline == 0 {
            return;
        }
        // An entry already armed at or before this deadline will fire and re-arm lazily.
        if *timer_at != 0 && *timer_at <= deadline {
            return;
        }
        *timer_at = deadline;
        self.timers.insert(deadline, (key, deadline));
    }

    fn rearm_client(&mut self, cid: ClientId) {
        let ms = &self.client_ms;
        let Some(c) = self.clients.get(cid.index()) else {
            return;
        };
        let deadline = match &c.phase {
            Phase::Head => match c.head_started {
                Some(t) => t + ms.header,
                None if c.served == 0 => c.accepted_at + ms.header,
                None => c.last_active + ms.idle,
            },
            // The upstream's read timeout starts over once a client that was behind has caught
            // up (`step_exchange`).
            Phase::Exchange(ex) => clocks(c, ex, ms).deadline(),
            Phase::Tunnel(t) => c.last_active + t.idle_ms,
            Phase::Closing => c.last_write + ms.send,
            Phase::Lingering => c.last_write + LINGER.as_millis() as u64,
        };
        if let Some(c) = self.clients.get_mut(cid.index()) {
            c.deadline = deadline;
        }
        self.arm(TimerKey::Client(cid), deadline);
    }

    fn expire_timers(&mut self) {
        let mut fired = mem::take(&mut self.fired);
        self.timers.poll(self.now, &mut fired);
        for (key, armed) in fired.drain(..) {
            match key {
                TimerKey::Client(cid) => {
                    let Some(c) = self.clients.get_mut(cid.index()) else {
                        continue;
                    };
                    if c.timer_at == armed {
                        c.timer_at = 0;
                    }
                    if c.deadline != 0 && self.now >= c.deadline {
                        self.client_timed_out(cid);
                    } else {
                        let d = c.deadline;
                        self.arm(key, d);
                    }
                }
                TimerKey::Up(uid) => {
                    let Some(u) = self.ups.conn_mut(uid) else {
                        continue;
                    };
                    if u.timer_at == armed {
                        u.timer_at = 0;
                    }
                    let node = u.node;
                    match self.ups.expire(uid, self.now) {
                        Expiry::Keep => {}
                        Expiry::Rearm(d) => self.arm(key, d),
                        Expiry::Retire(why) => self.close_up(uid, why),
                        Expiry::ConnectTimedOut => {
                            self.close_up(uid, CloseReason::Error);
                            self.node_failed(node);
                        }
                    }
                }
            }
        }
        self.fired = fired;
    }

    fn client_timed_out(&mut self, cid: ClientId) {
        let Some(c) = self.clients.get_mut(cid.index()) else {
            return;
        };
        let phase = mem::replace(&mut c.phase, Phase::Closing);
        let (next, step) = match phase {
            Phase::Head => {
                if c.rbuf.as_ref().is_some_and(|b| !b.is_empty()) {
                    c.rbuf.as_mut().expect("checked").clear();
                    self.answer(cid, Cause::HeaderTimeout, false)
                } else {
                    self.close_client(cid);
                    (Phase::Closing, Step::Closed)
                }
            }
            Phase::Exchange(mut ex) => {
                let node = ex.node;
                match clocks(c, &ex, &self.client_ms).due(self.now) {
                    Due::Queue => {
                        self.node_counters(node, |c| c.queue_timeouts += 1);
                        self.ups.forget_waiter(node, cid);
                        let r = self.answer_for(cid, Cause::QueueTimeout, false, Some(&ex));
                        self.retire(ex);
                        r
                    }
                    Due::Send => {
                        ex.up_eof = false;
                        self.fail(cid, ex, Fault::ClientGone(Cause::SendTimeout))
                    }
                    // The answer is out; the rest of the request body did not come in time to
                    // keep the upstream connection.
                    Due::DrainEnd => self.finish_exchange(cid, ex, false),
                    Due::Body => self.fail(cid, ex, Fault::ClientBad(Cause::BodyTimeout)),
                    // The upstream went quiet in the middle of its answer: what arrived goes
                    // out, then the connection is cut.
                    Due::Upstream if ex.answered() => {
                        self.fail(cid, ex, Fault::UpstreamGone(Cause::ReadTimeout))
                    }
                    Due::Upstream => {
                        let leg = ex.leg;
                        if let Some(uid) = ex.leg.take_up() {
                            self.close_up(uid, CloseReason::Error);
                        }
                        // A connect timeout or a read timeout: either counts against the node,
                        // and a connect timeout moves the request on while tries are left.
                        self.node_failed(node);
                        let connecting = matches!(leg, Leg::Connecting(_));
                        if connecting && self.next_try(cid, &mut ex) {
                            self.start_exchange(cid, ex, false)
                        } else {
                            let cause = if connecting {
                                Cause::ConnectTimeout
                            } else {
                                Cause::ReadTimeout
                            };
                            let r = self.answer_for(cid, cause, false, Some(&ex));
                            self.retire(ex);
                            r
                        }
                    }
                }
            }
            Phase::Tunnel(t) => self.end_tunnel(cid, t),
            Phase::Closing | Phase::Lingering => {
                self.close_client(cid);
                (Phase::Closing, Step::Closed)
            }
        };
        if step == Step::Closed {
            return;
        }
        if let Some(c) = self.clients.get_mut(cid.index()) {
            c.phase = next;
        }
        self.drive(cid);
    }
}

/// What the pool needs to know of queued client `cid` when a connection to `node` frees: the SNI
/// tag of the connection it waits for, or None when it no longer waits.
pub(super) fn waiting_for(clients: &Slab<Client>, cid: ClientId, node: NodeId) -> Waiting {
    match clients.get(cid.index()).map(|c| &c.phase) {
        Some(Phase::Exchange(ex)) if ex.node == node && matches!(ex.leg, Leg::Queued { .. }) => {
            Some(ex.sni)
        }
        _ => None,
    }
}

/// The client timeouts in clock milliseconds, converted once per generation rather than each
/// time a client's timer is armed.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientMs {
    header: u64,
    idle: u64,
    body: u64,
    send: u64,
}

impl ClientMs {
    fn of(cfg: &ClientSettings) -> ClientMs {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        ClientMs {
            header: ms(cfg.header_timeout),
            idle: ms(cfg.idle_timeout),
            body: ms(cfg.body_timeout),
            send: ms(cfg.send_timeout),
        }
    }
}

/// What an exchange's timeouts count from, read off its client.
fn clocks(c: &Client, ex: &Exchange, ms: &ClientMs) -> Clocks {
    Clocks {
        leg: ex.leg,
        up_progress: ex.up_progress,
        queue_ms: ex.set.queue_ms,
        connect_ms: ex.set.connect_ms,
        read_ms: ex.set.read_ms,
        behind: c.wbuf.as_ref().is_some_and(|w| !w.is_empty()) || ex.piped == Piped::Response,
        last_write: c.last_write,
        send_ms: ms.send,
        body_waits: ex.body_pending()
            && c.rbuf.as_ref().is_none_or(Buf::is_empty)
            && ex.piped != Piped::Request,
        last_active: c.last_active,
        body_ms: ms.body,
    }
}

fn uses_ewma(cfg: &Config) -> bool {
    cfg.upstreams
        .iter()
        .any(|u| matches!(u.balance, Balance::Ewma))
}

/// One balancer per upstream of a generation, in upstream order.
fn balancers_of(cfg: &Config) -> Vec<Balancer> {
    cfg.upstreams
        .iter()
        .map(|u| {
            // The ring tells the addresses of one name apart by their labels.
            let labels: Vec<_> = u.nodes.iter().map(|n| n.label()).collect();
            Balancer::new(
                &u.balance,
                labels
                    .iter()
                    .map(|l| l.as_ref())
                    .zip(u.nodes.iter().map(|n| n.weight)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_reads_back_every_kind_of_token() {
        for i in [0, 1, 2, 7, 65_535, 1 << 20] {
            assert!(
                matches!(source(client_token(ClientId(i))), Source::Client(n) if n == ClientId(i))
            );
            assert!(matches!(source(up_token(UpId(i))), Source::Up(n) if n == UpId(i)));
        }
        assert!(matches!(source(Token(3)), Source::Listener(3)));
        assert!(matches!(source(WAKER), Source::Waker));
    }

    /// An idle keep-alive client must stay small: issue 4 allows 1 KiB of RSS per idle client
    /// connection, and its slab slot is all an idle client holds (buffers go back to the pool).
    /// 640 leaves room for the rest of the process's per-connection costs.
    #[test]
    fn idle_client_state_is_small() {
        let size = mem::size_of::<Option<Client>>();
        assert!(size <= 640, "Client slot is {size} bytes");
    }
}
