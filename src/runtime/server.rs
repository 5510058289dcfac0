//! Starting and stopping the cores: listening sockets, one thread per core, control channels,
//! signals, the one health-checker thread and the one resolver thread, which get every
//! generation the cores get, and the advisor thread.
//!
//! A generation is built and sent in one place for each cause, both under `Process::applied`:
//! a reload ([`Handle::reload`]) and a node name whose addresses changed (`readdress`, which the
//! resolver calls), so both keep the pools of every address that stays.
//!
//! Listening sockets come one of two ways, kept apart so that each can have its own rules:
//! [`Listeners::bind`] binds every `[[listen]]` address, one socket per core with `SO_REUSEPORT`
//! (the kernel spreads connections across them); [`Listeners::inherit`] takes over the sockets
//! of the hearth a binary upgrade replaces, for the addresses both configurations have, and binds
//! only the others. The [`Server`] keeps every socket it started with (the cores work on copies
//! of them), so that a later upgrade can pass them all on, accept queues and all.
//!
//! `SO_REUSEPORT` would also let a second hearth (or anything else of the same user) join an
//! address hearth listens on and silently take part of its connections, so before binding an
//! address itself hearth checks that nothing listens there (`claim`): a socket bound without
//! `SO_REUSEPORT` cannot share the address with a listener, whoever owns it, so its bind failing
//! with `EADDRINUSE` means another process is there. That check belongs to binding: the sockets
//! a binary upgrade's new side inherits are the old hearth's, listening already, and enter
//! through [`Server::start_with`] without it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use log::{info, warn};
use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, Listen, Scheme};
use crate::health::{self, Health};
use crate::metrics::Counters;
use crate::resolve::thread::{self as resolver, Resolver};
use crate::runtime::advisor::{self, Board, Named};
use crate::runtime::control::{Control, Export, PassedConn, Peer, CHANNEL_CAPACITY};
use crate::runtime::core::Core;
use crate::runtime::generation::Shared;
use crate::runtime::io::{UpHandover, UpIo};
use crate::runtime::process::{PoolKey, Process};
use crate::upstream::advice::Kind;
use crate::upstream::Reservation;

const LISTEN_BACKLOG: i32 = 4_096;

/// The listening sockets of one `[[listen]]` address.
#[derive(Debug)]
pub struct ListenSet {
    /// The address as configured (port 0 included).
    pub addr: SocketAddr,
    /// The address bound.
    pub bound: SocketAddr,
    /// Bound here: one per core, in one `SO_REUSEPORT` group; inherited: as many as the old
    /// hearth had. Each has an accept queue of its own.
    pub socks: Vec<std::net::TcpListener>,
}

impl ListenSet {
    /// Copies of the sockets (the same sockets, new descriptors).
    pub fn try_clone(&self) -> io::Result<ListenSet> {
        Ok(ListenSet {
            addr: self.addr,
            bound: self.bound,
            socks: self
                .socks
                .iter()
                .map(std::net::TcpListener::try_clone)
                .collect::<io::Result<_>>()?,
        })
    }
}

/// Every listening socket of a configuration, by `[[listen]]` entry, before the cores take them.
#[derive(Debug)]
pub struct Listeners {
    sets: Vec<ListenSet>,
}

fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

/// Binds `addr` once per core. The first socket fixes the port (port 0 picks one), the others
/// join it through SO_REUSEPORT.
fn bind_set(addr: SocketAddr, workers: usize) -> io::Result<ListenSet> {
    claim(addr)?;
    let first = listener(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let bound = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..workers {
        socks.push(
            listener(bound)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {bound}: {e}")))?,
        );
    }
    info!("listening on {bound}");
    Ok(ListenSet { addr, bound, socks })
}

impl Listeners {
    /// Binds every address of `listen`, one socket per core.
    pub fn bind(listen: &[Listen], workers: usize) -> io::Result<Listeners> {
        let sets = listen
            .iter()
            .map(|l| bind_set(l.addr, workers.max(1)))
            .collect::<io::Result<_>>()?;
        Ok(Listeners { sets })
    }

    /// Takes over `passed`, the sockets of the hearth that a binary upgrade replaces, for the
    /// entries of `listen` they match (the same address as configured, or an entry naming the
    /// address the old hearth bound); binds, as [`Listeners::bind`] does, only the entries that
    /// nothing matches; closes, saying so, the sockets of addresses `listen` no longer has. An
    /// inherited address is never bound again: its sockets, and the connections waiting in
    /// their accept queues, are the old hearth's own.
    pub fn inherit(
        listen: &[Listen],
        workers: usize,
        mut passed: Vec<ListenSet>,
    ) -> io::Result<Listeners> {
        let mut sets = Vec::with_capacity(listen.len());
        for l in listen {
            let found = passed
                .iter()
                .position(|p| p.addr == l.addr || p.bound == l.addr);
            let set = match found {
                Some(i) => {
                    let p = passed.remove(i);
                    for s in &p.socks {
                        s.set_nonblocking(true)?;
                        let at = s.local_addr()?;
                        if at != p.bound {
                            return Err(io::Error::other(format!(
                                "a socket passed for {} is bound to {at}",
                                p.bound
                            )));
                        }
                    }
                    info!(
                        "listening on {} (taken over: {} socket(s))",
                        p.bound,
                        p.socks.len()
                    );
                    ListenSet {
                        addr: l.addr,
                        bound: p.bound,
                        socks: p.socks,
                    }
                }
                None => bind_set(l.addr, workers.max(1))?,
            };
            sets.push(set);
        }
        for p in passed {
            info!(
                "{} is not in the configuration any more: closing its {} listening socket(s)",
                p.bound,
                p.socks.len()
            );
        }
        Ok(Listeners { sets })
    }

    /// The bound address of each entry, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.sets.iter().map(|s| s.bound).collect()
    }

    /// Gives each of `workers` cores its sockets, as (entry index, socket): every socket goes to
    /// at least one core, and every core gets at least one socket of each entry, so with fewer
    /// sockets than cores some are shared (each core accepts from it) and with more a core takes
    /// several.
    fn spread(&self, workers: usize) -> io::Result<Vec<Vec<(usize, TcpListener)>>> {
        let mut per_core: Vec<Vec<(usize, TcpListener)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for (li, set) in self.sets.iter().enumerate() {
            let k = set.socks.len();
            if k == 0 {
                continue;
            }
            for i in 0..k.max(workers) {
                let sock = set.socks[i % k].try_clone()?;
                sock.set_nonblocking(true)?;
                per_core[i % workers].push((li, TcpListener::from_std(sock)));
            }
        }
        Ok(per_core)
    }
}

/// The listening sockets a running hearth started with, kept for a binary upgrade to pass on;
/// shared with whoever passes them (the upgrade socket's thread), and closed when the server
/// stops, so that an address stops accepting once its cores stop instead of queueing
/// connections nobody will take.
#[derive(Debug, Clone)]
pub struct Sockets(Arc<Mutex<Option<Listeners>>>);

impl Sockets {
    /// Copies of every socket, by `[[listen]]` entry; None once the server stopped.
    pub fn copies(&self) -> io::Result<Option<Vec<ListenSet>>> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match kept.as_ref() {
            None => Ok(None),
            Some(l) => Ok(Some(
                l.sets
                    .iter()
                    .map(ListenSet::try_clone)
                    .collect::<io::Result<_>>()?,
            )),
        }
    }

    fn close(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A running set of cores.
pub struct Server {
    process: Arc<Process>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    addrs: Vec<SocketAddr>,
    /// Every socket the cores listen on, kept for a binary upgrade to pass on.
    sockets: Sockets,
    /// The configured listen addresses (before port 0 was resolved), to spot changes on reload.
    listen: Vec<SocketAddr>,
    /// The generation in force, for those outside the cores that act on it.
    current: Arc<Mutex<Arc<Shared>>>,
    health: Health,
    health_thread: JoinHandle<()>,
    board: Board,
    advisor: (Sender<()>, JoinHandle<()>),
    resolver: Resolver,
    resolver_thread: JoinHandle<()>,
}

/// Fails with `ADDR is already in use by another process` when a socket listens on `addr`
/// (a fixed port; port 0 always gets a fresh one). The probe has SO_REUSEADDR, as hearth's
/// listeners do, so the connections of a hearth that just stopped, lingering in TIME_WAIT, do
/// not count; it lacks SO_REUSEPORT, so a listener with or without it makes the bind fail. It
/// is closed before the real sockets bind: a process that starts listening in the few system
/// calls between the two is not seen (two hearths would have to start in the same instant).
fn claim(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!(
                "{addr} is already in use by another process (another hearth?); stop it or \
                 choose another [[listen]] addr"
            ),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}"),
        )),
    }
}

/// Each core opens its own access log handle; one try before anything starts makes a bad path
/// one clear error.
fn check_access_log(cfg: &Config) -> io::Result<()> {
    if let Some(a) = &cfg.access_log {
        crate::accesslog::AccessLog::open(&a.path, a.format).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open access log {}: {e}", a.path.display()),
            )
        })?;
    }
    Ok(())
}

impl Server {
    /// Binds every listener on every core ([`Listeners::bind`]) and starts the core threads.
    pub fn start(cfg: Config) -> io::Result<Server> {
        check_access_log(&cfg)?;
        let listeners = Listeners::bind(&cfg.listen, cfg.workers.max(1))?;
        Server::run_cores(cfg, listeners, false)
    }

    /// Starts the core threads on `listeners` made elsewhere than by [`Server::start`]: taken
    /// over from the hearth a binary upgrade replaces ([`Listeners::inherit`]). `inheriting`:
    /// that hearth is about to hand over its idle upstream connections, so no pool is warmed
    /// until [`Handle::inherited_all`].
    pub fn start_with(cfg: Config, listeners: Listeners, inheriting: bool) -> io::Result<Server> {
        check_access_log(&cfg)?;
        Server::run_cores(cfg, listeners, inheriting)
    }

    fn run_cores(cfg: Config, listeners: Listeners, inheriting: bool) -> io::Result<Server> {
        let workers = cfg.workers.max(1);
        let per_core = listeners.spread(workers)?;
        let mut polls = Vec::new();
        let mut peers = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), mio::Token(usize::MAX))?);
            let (tx, rx) = bounded(CHANNEL_CAPACITY);
            polls.push(poll);
            peers.push(Peer { tx, waker });
            receivers.push(rx);
        }
        let pin = cfg.pin_cores;
        let listen: Vec<SocketAddr> = cfg.listen.iter().map(|l| l.addr).collect();
        let process = Arc::new(Process::new(peers));
        let shared = {
            let mut applied = process.applied();
            Arc::new(process.generation(Arc::new(applied.configure(cfg))))
        };
        // Started for every configuration: idle, it only waits for a reload that adds checks.
        let (health, health_thread) = health::start(process.clone(), shared.clone())?;
        let board = Board::new(process.clone(), shared.clone());
        // The same: idle until a configuration has node names.
        let current = Arc::new(Mutex::new(shared.clone()));
        let apply = {
            let (process, health, board) = (process.clone(), health.clone(), board.clone());
            let current = current.clone();
            Box::new(move |name: &str, ips: &[IpAddr]| {
                readdress(&process, &current, &health, &board, name, ips)
            })
        };
        let (resolver, resolver_thread) = match resolver::start(shared.clone(), apply) {
            Ok(r) => r,
            Err(e) => {
                health.send(health::Msg::Stop);
                return Err(e);
            }
        };
        let advisor = advisor::start(board.clone())?;
        let mut threads = Vec::new();
        for (i, ((poll, mine), rx)) in polls.into_iter().zip(per_core).zip(receivers).enumerate() {
            let shared = shared.clone();
            let process = process.clone();
            let t = std::thread::Builder::new()
                .name(format!("hearth-core-{i}"))
                .spawn(move || {
                    if pin {
                        if let Err(e) = crate::sys::pin_current_thread(i) {
                            warn!("core {i}: pinning to CPU {i} failed: {e}");
                        }
                    }
                    let mut core = Core::new(i, poll, mine, shared, process, rx, inheriting)?;
                    core.run()
                })?;
            threads.push(t);
        }
        Ok(Server {
            process,
            threads,
            addrs: listeners.addrs(),
            sockets: Sockets(Arc::new(Mutex::new(Some(listeners)))),
            listen,
            current,
            health,
            health_thread,
            board,
            advisor,
            resolver,
            resolver_thread,
        })
    }

    /// Applies a new, already validated configuration to every core (see `Handle::reload`).
    pub fn reload(&self, cfg: Config) {
        self.handle().reload(cfg);
    }

    /// The bound address of each `[[listen]]` entry, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A handle to the running cores (counters, reload); cheap to clone, usable from any thread.
    pub fn handle(&self) -> Handle {
        Handle {
            process: self.process.clone(),
            listen: self.listen.clone(),
            current: self.current.clone(),
            health: self.health.clone(),
            board: self.board.clone(),
            resolver: self.resolver.clone(),
        }
    }

    /// Asks every core to reopen its access log at the configured path (after log rotation).
    pub fn reopen_logs(&self) {
        for p in &self.process.peers {
            let _ = p.send(Control::ReopenLog);
        }
    }

    /// The listening sockets, for a binary upgrade to pass on.
    pub fn sockets(&self) -> Sockets {
        self.sockets.clone()
    }

    /// Asks every core to stop (finishing requests in flight for up to `grace`).
    pub fn shutdown(&self, grace: Duration) {
        for p in &self.process.peers {
            let _ = p.send(Control::Shutdown { grace });
        }
        self.sockets.close();
        self.health.send(health::Msg::Stop);
        self.resolver.send(resolver::Msg::Stop);
    }
}

/// Applies a node name's new addresses as a reload does: a generation from the configuration
/// applied last, sent to every core and the health checker (the resolver, which asked, knows).
fn readdress(
    process: &Process,
    current: &Mutex<Arc<Shared>>,
    health: &Health,
    board: &Board,
    name: &str,
    ips: &[IpAddr],
) {
    let mut applied = process.applied();
    let Some(cfg) = applied.readdress(name, ips) else {
        return;
    };
    let shared = Arc::new(process.generation(Arc::new(cfg)));
    *current.lock().unwrap_or_else(|e| e.into_inner()) = shared.clone();
    for p in &process.peers {
        if p.send(Control::Reload(shared.clone())).is_err() {
            warn!("resolve: a core did not take the new addresses of {name}");
        }
    }
    board.generation(shared.clone());
    if !health.send(health::Msg::Generation(shared)) {
        warn!("resolve: the health checker did not take the new addresses of {name}");
    }
}

/// Talks to the running cores by control message: counters, reload.
#[derive(Clone)]
pub struct Handle {
    process: Arc<Process>,
    listen: Vec<SocketAddr>,
    current: Arc<Mutex<Arc<Shared>>>,
    health: Health,
    board: Board,
    resolver: Resolver,
}

impl Handle {
    /// Applies a new, already validated configuration to every core. Pools of nodes that stay
    /// keep their connections; requests in flight finish on the settings they started with.
    /// Listen addresses, `workers` and buffer sizes are fixed at start; changes to them are
    /// reported and take a restart.
    pub fn reload(&self, cfg: Config) {
        let listen: Vec<SocketAddr> = cfg.listen.iter().map(|l| l.addr).collect();
        if listen != self.listen {
            warn!("reload: [[listen]] changes take effect only after a restart");
        }
        let socket_now = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cfg
            .upgrade_socket
            .clone();
        if cfg.upgrade_socket != socket_now {
            warn!("reload: an upgrade_socket change takes effect only after a restart");
        }
        // Held until every thread has the generation, so a change of addresses cannot slip a
        // generation of the old configuration in after it.
        let mut applied = self.process.applied();
        let cfg = applied.configure(cfg);
        let shared = Arc::new(self.process.generation(Arc::new(cfg)));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = shared.clone();
        for p in &self.process.peers {
            if p.send(Control::Reload(shared.clone())).is_err() {
                warn!("reload: a core did not take the new configuration");
            }
        }
        self.board.generation(shared.clone());
        // After the cores: a node state the checker sends for a new pool finds the pool known.
        if !self.health.send(health::Msg::Generation(shared.clone())) {
            warn!("reload: the health checker did not take the new configuration");
        }
        if !self.resolver.send(resolver::Msg::Generation(shared)) {
            warn!("reload: the resolver did not take the new configuration");
        }
        drop(applied);
        info!("configuration reloaded");
    }

    /// How many cores there are.
    pub fn cores(&self) -> usize {
        self.process.peers.len()
    }

    /// A new hearth is about to take over (binary upgrade): every core gives `export` the idle
    /// plain upstream connections its clients cannot use now, then `Export::Flushed` (see
    /// `Control::Export`). Returns how many cores took the message.
    pub fn export_idle(&self, export: &Sender<Export>) -> usize {
        self.process
            .peers
            .iter()
            .filter(|p| {
                p.send(Control::Export {
                    export: export.clone(),
                })
                .is_ok()
            })
            .count()
    }

    /// Returns once every core has handled every message sent to it before (a stats request
    /// is answered in turn, after them).
    pub fn settle(&self) {
        let _ = self.process.stats();
    }

    /// A new hearth has taken over the listening sockets (binary upgrade): every core stops
    /// accepting, drains for up to `grace`, and gives its idle plain upstream connections to
    /// `export` (see `Control::Upgrade`). False if a core did not take the message.
    pub fn upgrade(&self, grace: Duration, export: &Sender<Export>) -> bool {
        let mut all = true;
        for p in &self.process.peers {
            all &= p
                .send(Control::Upgrade {
                    grace,
                    export: export.clone(),
                })
                .is_ok();
        }
        all
    }

    /// Files an idle upstream connection that the hearth this one replaced handed over, with
    /// core `core` (any: it goes to the right one as usual when requests wait elsewhere), as
    /// an idle connection of the pool its address names (plain http). Err says why it was
    /// closed instead: no pool of this configuration has that key, the pool is at its
    /// `max_connections`, or the socket is not what it was said to be.
    pub fn adopt_passed(&self, c: PassedConn, core: usize) -> Result<(), &'static str> {
        let key = PoolKey {
            addr: c.addr,
            scheme: Scheme::Http,
            tls: None,
        };
        let node = self.process.node_of(&key).ok_or("no such node")?;
        let shared = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let set = shared.settings_of_pool(node).ok_or("no such node")?;
        let budget = self
            .process
            .budgets()
            .get(node.index())
            .cloned()
            .ok_or("no such node")?;
        // An open connection holds no connect slot: only max_connections applies.
        let reservation = Reservation::take(&budget, set.max_connections, 0)
            .map_err(|_| "the node is at its max_connections")?;
        if c.sock.peer_addr().ok() != Some(c.addr) {
            return Err("the socket is not connected to the node");
        }
        c.sock
            .set_nonblocking(true)
            .map_err(|_| "the socket is unusable")?;
        let _ = c.sock.set_nodelay(true);
        let h = UpHandover {
            io: UpIo {
                sock: mio::net::TcpStream::from_std(c.sock),
                tls: None,
                handshaking: false,
                readable: false,
                writable: false,
                hup: false,
            },
            node,
            addr: c.addr,
            age_ms: c.age_ms,
            served: c.served,
            hint: c.hint,
            sni: 0,
            reservation,
        };
        // A core where requests wait for this node gets it first: the old hearth's clients
        // reach this one on any core, and a connection idle on another core would not move to
        // them (only capped nodes hand idle connections between cores).
        let mut to = core % self.process.peers.len();
        if !budget.waiting_at(to) {
            to = budget.waiting_core(to).unwrap_or(to);
        }
        self.process.peers[to]
            .send(Control::Adopt(Box::new(h)))
            .map_err(|_| "the core did not take it")
    }

    /// The hearth this one replaces sends its clients this way from now: until `until` (on the
    /// process clock), a request that finds no idle connection waits for one it hands over
    /// rather than open one (see `Control::Expect`).
    pub fn expect_passed(&self, until: u64) {
        for p in &self.process.peers {
            let _ = p.send(Control::Expect { until });
        }
    }

    /// The hearth this one replaced has handed over all it had: the cores warm their pools
    /// from now on.
    pub fn inherited_all(&self) {
        for p in &self.process.peers {
            let _ = p.send(Control::Inherited);
        }
    }

    /// Counters summed over every core, asked of each core by message.
    pub fn stats(&self) -> Counters {
        self.process.stats()
    }

    /// The metric label (`upstream="..",node=".."`) and learned idle timeout in milliseconds
    /// (None until learned) of every pool, indexed by pool id like `stats().nodes`.
    pub fn pools(&self) -> Vec<(String, Option<u64>)> {
        let budgets = self.process.budgets();
        self.process
            .labels()
            .into_iter()
            .zip(budgets)
            .map(|(label, budget)| (label, budget.learned_idle_ms()))
            .collect()
    }

    /// The advice in force, after showing the advisor fresh counters (at most once a second).
    pub fn advice(&self, stats: &Counters) -> Vec<Named> {
        self.board.observe(stats, false);
        self.board.list()
    }

    /// Prometheus text of `stats()`, and of the advice in force: one series per node and kind,
    /// 1 while the advice holds.
    pub fn metrics_text(&self) -> String {
        let labels = self.process.labels();
        let stats = self.stats();
        let advice = self.advice(&stats);
        let mut text = stats.render(&labels);
        crate::metrics::family(
            &mut text,
            "hearth_upstream_advice",
            "gauge",
            "1 while the advice of this kind holds for the node (see /status for its text), 0 otherwise.",
        );
        for (i, label) in labels.iter().enumerate().take(stats.nodes.len()) {
            for kind in Kind::ALL {
                let on = advice
                    .iter()
                    .any(|a| a.advice.node == i && a.advice.kind == kind);
                text.push_str(&format!(
                    "hearth_upstream_advice{{{label},kind=\"{}\"}} {}\n",
                    kind.token(),
                    u8::from(on)
                ));
            }
        }
        text.push_str(&self.health.stats().render(&labels));
        text.push_str(&self.resolver.render());
        crate::metrics::family(
            &mut text,
            "hearth_upstream_learned_idle_timeout_seconds",
            "gauge",
            "The node's idle timeout as hearth learned it from the ages at which it closed idle connections.",
        );
        for (label, budget) in labels.iter().zip(self.process.budgets()) {
            if let Some(ms) = budget.learned_idle_ms() {
                text.push_str(&format!(
                    "hearth_upstream_learned_idle_timeout_seconds{{{label}}} {}\n",
                    ms as f64 / 1000.0
                ));
            }
        }
        text
    }
}

impl Server {
    /// Waits for every core to stop. Err names the first core that failed.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for (i, t) in self.threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if result.is_ok() {
                        result = Err(io::Error::new(e.kind(), format!("core {i}: {e}")));
                    }
                }
                Err(_) => {
                    if result.is_ok() {
                        result = Err(io::Error::other(format!("core {i} panicked")));
                    }
                }
            }
        }
        // Also when a core failed on its own and nobody asked to stop.
        self.health.send(health::Msg::Stop);
        let (stop, advisor) = self.advisor;
        drop(stop);
        if advisor.join().is_err() {
            warn!("the advisor panicked");
        }
        if self.health_thread.join().is_err() {
            warn!("the health checker panicked");
        }
        self.resolver.send(resolver::Msg::Stop);
        if self.resolver_thread.join().is_err() {
            warn!("the resolver panicked");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(addr: &str) -> Listen {
        Listen {
            addr: addr.parse().expect("literal address"),
            tls: None,
        }
    }

    /// Accepts one connection on any of `socks` (non-blocking), within a second.
    fn accepts(socks: &[std::net::TcpListener]) -> bool {
        for _ in 0..200 {
            if socks.iter().any(|s| s.accept().is_ok()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn inherited_sockets_are_taken_not_bound_and_spread_over_the_cores() {
        let old = Listeners::bind(&[entry("127.0.0.1:0"), entry("127.0.0.1:0")], 2).unwrap();
        let (kept, dropped) = (old.sets[0].bound, old.sets[1].bound);
        let mut passed: Vec<ListenSet> = old.sets.iter().map(|s| s.try_clone().unwrap()).collect();
        drop(old);
        // As if the old configuration had named the second address with its port.
        passed[1].addr = dropped;
        // A connection waiting in the old accept queue is still there for the new hearth.
        let waiting = std::net::TcpStream::connect(kept).unwrap();
        // The new configuration names the kept address by its port (the old one said port 0),
        // drops the other and adds one.
        let new = Listeners::inherit(&[entry(&kept.to_string()), entry("127.0.0.1:0")], 3, passed)
            .unwrap();
        assert_eq!(new.sets[0].bound, kept);
        assert_eq!(new.sets[0].socks.len(), 2, "both of the old cores' sockets");
        assert_eq!(
            new.sets[1].socks.len(),
            3,
            "a new address is bound per core"
        );
        assert!(
            accepts(&new.sets[0].socks),
            "the waiting connection is accepted"
        );
        drop(waiting);
        assert!(
            std::net::TcpStream::connect(dropped).is_err(),
            "the address left out is closed"
        );
        // Three cores, two sockets of the first entry: every socket is used, every core has one.
        let cores = new.spread(3).unwrap();
        for (i, mine) in cores.iter().enumerate() {
            assert_eq!(
                mine.iter().filter(|(e, _)| *e == 0).count(),
                1,
                "core {i} accepts on the inherited address"
            );
            assert_eq!(mine.iter().filter(|(e, _)| *e == 1).count(), 1);
        }
        // One core, two sockets: it takes both.
        let one = new.spread(1).unwrap();
        assert_eq!(one[0].iter().filter(|(e, _)| *e == 0).count(), 2);
    }
}
