//! Starting and stopping the cores: listening sockets, one thread per core, control channels,
//! signals, and the one health-checker thread, which gets every generation the cores get.
//!
//! Listening sockets come one of two ways, kept apart so that each can have its own rules:
//! [`Listeners::bind`] binds every `[[listen]]` address, one socket per core with `SO_REUSEPORT`
//! (the kernel spreads connections across them); [`Listeners::inherit`] takes over the sockets
//! of the hearth a binary upgrade replaces, for the addresses both configurations have, and binds
//! only the others. The [`Server`] keeps every socket it started with (the cores work on copies
//! of them), so that a later upgrade can pass them all on, accept queues and all.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
use crate::runtime::advisor::{self, Board, Named};
use crate::runtime::control::{Control, Peer, CHANNEL_CAPACITY};
use crate::runtime::core::Core;
use crate::runtime::process::Process;
use crate::upstream::advice::Kind;

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
    health: Health,
    health_thread: JoinHandle<()>,
    board: Board,
    advisor: (Sender<()>, JoinHandle<()>),
}

impl Server {
    /// Starts the core threads on `listeners` (bound or inherited for `cfg.listen`).
    pub fn start(cfg: Config, listeners: Listeners) -> io::Result<Server> {
        let workers = cfg.workers.max(1);
        if let Some(a) = &cfg.access_log {
            // Each core opens its own handle; try once here so a bad path is one clear error.
            crate::accesslog::AccessLog::open(&a.path, a.format).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open access log {}: {e}", a.path.display()),
                )
            })?;
        }
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
        let shared = Arc::new(process.generation(Arc::new(cfg)));
        // Started for every configuration: idle, it only waits for a reload that adds checks.
        let (health, health_thread) = health::start(process.clone(), shared.clone())?;
        let board = Board::new(process.clone(), shared.clone());
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
                    let mut core = Core::new(i, poll, mine, shared, process, rx)?;
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
            health,
            health_thread,
            board,
            advisor,
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
    }
}

/// Talks to the running cores by control message: counters, reload.
#[derive(Clone)]
pub struct Handle {
    process: Arc<Process>,
    listen: Vec<SocketAddr>,
    health: Health,
    board: Board,
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
        let shared = Arc::new(self.process.generation(Arc::new(cfg)));
        for p in &self.process.peers {
            if p.send(Control::Reload(shared.clone())).is_err() {
                warn!("reload: a core did not take the new configuration");
            }
        }
        self.board.generation(shared.clone());
        // After the cores: a node state the checker sends for a new pool finds the pool known.
        if !self.health.send(health::Msg::Generation(shared)) {
            warn!("reload: the health checker did not take the new configuration");
        }
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
        text.push_str("# TYPE hearth_upstream_advice gauge\n");
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
        text.push_str("# TYPE hearth_upstream_learned_idle_timeout_seconds gauge\n");
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
        result
    }
}
