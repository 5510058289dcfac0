//! Starting and stopping the cores: listeners bound once per core with `SO_REUSEPORT` (the
//! kernel spreads connections across them), one thread per core, control channels, signals,
//! the one health-checker thread and the one resolver thread, which get every generation the
//! cores get, and the advisor thread.
//!
//! A generation is built and sent in one place for each cause, both under `Process::applied`:
//! a reload ([`Handle::reload`]) and a node name whose addresses changed (`readdress`, which the
//! resolver calls), so both keep the pools of every address that stays.
//!
//! `SO_REUSEPORT` would also let a second hearth (or anything else of the same user) join an
//! address hearth listens on and silently take part of its connections, so before binding an
//! address itself hearth checks that nothing listens there ([`Listeners::bind`]): a socket bound
//! without `SO_REUSEPORT` cannot share the address with a listener, whoever owns it, so its bind
//! failing with `EADDRINUSE` means another process is there. That check belongs to binding:
//! sockets inherited from another process (a binary upgrade's new side, where that process is
//! the old hearth) would enter through [`Server::start_with`] and skip it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use log::{info, warn};
use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, Listen};
use crate::health::{self, Health};
use crate::metrics::Counters;
use crate::resolve::thread::{self as resolver, Resolver};
use crate::runtime::advisor::{self, Board, Named};
use crate::runtime::control::{Control, Peer, CHANNEL_CAPACITY};
use crate::runtime::core::Core;
use crate::runtime::process::Process;
use crate::upstream::advice::Kind;

const LISTEN_BACKLOG: i32 = 4_096;

/// A running set of cores.
pub struct Server {
    process: Arc<Process>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    addrs: Vec<SocketAddr>,
    /// The configured listen addresses (before port 0 was resolved), to spot changes on reload.
    listen: Vec<SocketAddr>,
    health: Health,
    health_thread: JoinHandle<()>,
    board: Board,
    advisor: (Sender<()>, JoinHandle<()>),
    resolver: Resolver,
    resolver_thread: JoinHandle<()>,
}

/// Every core's listening sockets: `per_core[i][j]` is core i's socket for `[[listen]]` entry j.
pub struct Listeners {
    per_core: Vec<Vec<TcpListener>>,
    /// The bound address of each entry (port 0 resolved).
    addrs: Vec<SocketAddr>,
}

impl Listeners {
    /// Binds each of `listen` once for each of `workers` cores. An address with a fixed port is
    /// first checked to be free of any other process's listener ([`claim`]); the first socket
    /// of an address fixes its port (port 0 picks one), the others join it through
    /// SO_REUSEPORT.
    pub fn bind(listen: &[Listen], workers: usize) -> io::Result<Listeners> {
        let mut per_core: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::with_capacity(listen.len());
        for l in listen {
            claim(l.addr)?;
            let first = listener(l.addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.addr))
            })?;
            let bound = first.local_addr()?;
            per_core[0].push(first);
            for core in per_core.iter_mut().skip(1) {
                core.push(listener(bound).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {bound}: {e}"))
                })?);
            }
            info!("listening on {bound}");
            addrs.push(bound);
        }
        Ok(Listeners { per_core, addrs })
    }
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

fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(sock.into()))
}

impl Server {
    /// Binds every listener on every core ([`Listeners::bind`]) and starts the core threads.
    pub fn start(cfg: Config) -> io::Result<Server> {
        check_access_log(&cfg)?;
        let listeners = Listeners::bind(&cfg.listen, cfg.workers.max(1))?;
        Server::run_cores(cfg, listeners)
    }

    /// Starts the core threads on `listeners`, one set per core (`cfg.workers` of them), made
    /// elsewhere than by [`Listeners::bind`].
    pub fn start_with(cfg: Config, listeners: Listeners) -> io::Result<Server> {
        check_access_log(&cfg)?;
        Server::run_cores(cfg, listeners)
    }

    fn run_cores(cfg: Config, listeners: Listeners) -> io::Result<Server> {
        let workers = cfg.workers.max(1);
        if listeners.per_core.len() != workers {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} set(s) of listeners for {workers} worker(s)",
                    listeners.per_core.len()
                ),
            ));
        }
        let Listeners { per_core, addrs } = listeners;
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
        let apply = {
            let (process, health, board) = (process.clone(), health.clone(), board.clone());
            Box::new(move |name: &str, ips: &[IpAddr]| {
                readdress(&process, &health, &board, name, ips)
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
        for (i, ((poll, listeners), rx)) in
            polls.into_iter().zip(per_core).zip(receivers).enumerate()
        {
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
                    let mut core = Core::new(i, poll, listeners, shared, process, rx)?;
                    core.run()
                })?;
            threads.push(t);
        }
        Ok(Server {
            process,
            threads,
            addrs,
            listen,
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

    /// Asks every core to stop (finishing requests in flight for up to `grace`).
    pub fn shutdown(&self, grace: Duration) {
        for p in &self.process.peers {
            let _ = p.send(Control::Shutdown { grace });
        }
        self.health.send(health::Msg::Stop);
        self.resolver.send(resolver::Msg::Stop);
    }
}

/// Applies a node name's new addresses as a reload does: a generation from the configuration
/// applied last, sent to every core and the health checker (the resolver, which asked, knows).
fn readdress(process: &Process, health: &Health, board: &Board, name: &str, ips: &[IpAddr]) {
    let mut applied = process.applied();
    let Some(cfg) = applied.readdress(name, ips) else {
        return;
    };
    let shared = Arc::new(process.generation(Arc::new(cfg)));
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
        // Held until every thread has the generation, so a change of addresses cannot slip a
        // generation of the old configuration in after it.
        let mut applied = self.process.applied();
        let cfg = applied.configure(cfg);
        let shared = Arc::new(self.process.generation(Arc::new(cfg)));
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
