//! Starting and stopping the cores: listeners bound once per core with `SO_REUSEPORT` (the
//! kernel spreads connections across them), one thread per core, control channels, signals,
//! the one health-checker thread and the one resolver thread, which get every generation the
//! cores get.
//!
//! A generation is built and sent in one place for each cause, both under `Process::applied`:
//! a reload ([`Handle::reload`]) and a node name whose addresses changed (`readdress`, which the
//! resolver calls), so both keep the pools of every address that stays.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::bounded;
use log::{info, warn};
use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::health::{self, Health};
use crate::metrics::Counters;
use crate::resolve::thread::{self as resolver, Resolver};
use crate::runtime::control::{Control, Peer, CHANNEL_CAPACITY};
use crate::runtime::core::Core;
use crate::runtime::process::Process;

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
    resolver: Resolver,
    resolver_thread: JoinHandle<()>,
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
    /// Binds every listener on every core and starts the core threads.
    pub fn start(cfg: Config) -> io::Result<Server> {
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
        // Per core, one listener per listen address. The first socket of an address fixes its
        // port (port 0 picks one), the others join it through SO_REUSEPORT.
        let mut per_core: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for l in &cfg.listen {
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
        // The same: idle until a configuration has node names.
        let apply = {
            let (process, health) = (process.clone(), health.clone());
            Box::new(move |name: &str, ips: &[IpAddr]| readdress(&process, &health, name, ips))
        };
        let (resolver, resolver_thread) = match resolver::start(shared.clone(), apply) {
            Ok(r) => r,
            Err(e) => {
                health.send(health::Msg::Stop);
                return Err(e);
            }
        };
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
fn readdress(process: &Process, health: &Health, name: &str, ips: &[IpAddr]) {
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
        let mut total = Counters::default();
        let (tx, rx) = bounded(self.process.peers.len());
        for p in &self.process.peers {
            let _ = p.send(Control::Stats(tx.clone()));
        }
        for _ in 0..self.process.peers.len() {
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(c) => total.merge(&c),
                Err(_) => break,
            }
        }
        total
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

    /// Prometheus text of `stats()`.
    pub fn metrics_text(&self) -> String {
        let labels = self.process.labels();
        let mut text = self.stats().render(&labels);
        text.push_str(&self.health.stats().render(&labels));
        text.push_str(&self.resolver.render());
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
