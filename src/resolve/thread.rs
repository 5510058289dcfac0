//! The resolver thread, "hearth-resolve": one for the process, it follows every DNS name among
//! the nodes of the running configuration, looks each up again when its [`Schedule`] says, and
//! hands a name whose addresses changed to `readdress` (the server's, which builds and sends a
//! generation exactly as a reload does). It gets every generation the cores get, to know which
//! names to follow.
//!
//! With `resolver` servers, lookups are [`Lookup`]s on non-blocking UDP sockets polled with the
//! thread's own `mio::Poll`, so lookups of different names run side by side and a stop is seen
//! at once; a truncated answer is asked again over TCP, blocking for at most `resolve.timeout`
//! (rare: hearth asks for A and AAAA, which fit a datagram unless a name has dozens of
//! addresses). Without servers, the system resolver is asked with `getaddrinfo`, which blocks:
//! the names are asked one after another, and a stop waits for the one being asked.
//!
//! Invariants:
//! - Nothing here runs on a core, and no core waits for it: cores see its work only as a new
//!   generation.
//! - A failed lookup never takes addresses away; the last good set stays until a lookup finds
//!   another (see `schedule`).
//! - Each change is logged with the old and new addresses; the first failure of a run is a
//!   warning naming why and what is kept, the following ones are debug lines, and the first
//!   success after them says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use log::{debug, error, info, warn};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

use super::dns::{Lookup, LookupError, Resolved, Step, MAX_DATAGRAM};
use super::names::names_of;
use super::net;
use super::schedule::{Outcome, Schedule, Timing};
use crate::config::types::Resolve;
use crate::runtime::generation::Shared;
use crate::slab::Slab;

const WAKER: Token = Token(usize::MAX);
/// Messages waiting for the resolver: generations and stop. Reloads are rare.
const CHANNEL_CAPACITY: usize = 64;

/// Messages to the resolver.
#[derive(Debug)]
pub enum Msg {
    /// A new configuration generation: the names to follow and how.
    Generation(Arc<Shared>),
    Stop,
}

/// Applies a name's new addresses (sorted, never empty) to the running configuration.
pub type Readdress = Box<dyn Fn(&str, &[IpAddr]) + Send>;

/// Per name, what `/metrics` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameStats {
    pub lookups: u64,
    pub failures: u64,
    pub changes: u64,
    /// Addresses the name has now; None once no node uses the name (its counters stay).
    pub addresses: Option<usize>,
}

/// The sending half of the resolver's channel, and its figures; cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
    stats: Arc<Mutex<BTreeMap<String, NameStats>>>,
}

impl Resolver {
    /// Sends and wakes the resolver; false if it is gone or its channel is full.
    pub fn send(&self, msg: Msg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                warn!("resolver channel full, dropped {m:?}");
                return false;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
        if let Err(e) = self.waker.wake() {
            warn!("waking the resolver failed: {e}");
        }
        true
    }

    /// The figures of every name followed so far.
    pub fn stats(&self) -> BTreeMap<String, NameStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The figures as Prometheus text; empty when no name was ever followed.
    pub fn render(&self) -> String {
        render(&self.stats())
    }
}

/// A metric family: name, type, help, and the value for one name (None: no series).
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&NameStats) -> Option<u64>,
);

/// `hearth_resolve_*` metric families, one series per name; nothing without names.
pub fn render(stats: &BTreeMap<String, NameStats>) -> String {
    let mut s = String::new();
    if stats.is_empty() {
        return s;
    }
    let families: [Family; 4] = [
        (
            "hearth_resolve_addresses",
            "gauge",
            "Addresses a node name has now: those of its last good lookup.",
            |n| n.addresses.map(|a| a as u64),
        ),
        (
            "hearth_resolve_lookups_total",
            "counter",
            "Lookups of a node name made in the background.",
            |n| Some(n.lookups),
        ),
        (
            "hearth_resolve_changes_total",
            "counter",
            "Lookups that found a set of addresses other than the last good one, applied as a reload.",
            |n| Some(n.changes),
        ),
        (
            "hearth_resolve_failures_total",
            "counter",
            "Lookups that found no address (no answer, NXDOMAIN, no record); the last good addresses stayed.",
            |n| Some(n.failures),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        for (host, n) in stats {
            if let Some(v) = value(n) {
                let _ = writeln!(s, "{name}{{host=\"{}\"}} {v}", escape(host));
            }
        }
    }
    s
}

/// Escapes a Prometheus label value (exposition format: backslash, quote and newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Starts the resolver on the first generation; `readdress` applies changes.
pub fn start(first: Arc<Shared>, readdress: Readdress) -> io::Result<(Resolver, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = bounded(CHANNEL_CAPACITY);
    let stats = Arc::new(Mutex::new(BTreeMap::new()));
    let settings = first.cfg.resolve.clone();
    let resolving = Resolving {
        poll,
        rx,
        schedule: Schedule::default(),
        timing: timing(&settings),
        settings,
        lookups: Slab::default(),
        stats: stats.clone(),
        readdress,
        clock: crate::clock::Clock,
    };
    let thread = std::thread::Builder::new()
        .name("hearth-resolve".into())
        .spawn(move || resolving.run(first))?;
    Ok((Resolver { tx, waker, stats }, thread))
}

fn timing(r: &Resolve) -> Timing {
    Timing {
        min: r.min,
        max: r.max,
        interval: r.interval,
        servers: !r.servers.is_empty(),
    }
}

/// A lookup in flight and the socket of its current try.
struct InFlight {
    lookup: Lookup,
    sock: Option<UdpSocket>,
}

struct Resolving {
    poll: Poll,
    rx: Receiver<Msg>,
    schedule: Schedule,
    settings: Resolve,
    timing: Timing,
    lookups: Slab<InFlight>,
    stats: Arc<Mutex<BTreeMap<String, NameStats>>>,
    readdress: Readdress,
    clock: crate::clock::Clock,
}

impl Resolving {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn run(mut self, first: Arc<Shared>) {
        self.apply(&first);
        drop(first);
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let now = self.now();
            for key in self.lookups.keys() {
                let due = self
                    .lookups
                    .get(key)
                    .is_some_and(|l| l.lookup.deadline() <= now);
                if due {
                    let step = match self.lookups.get_mut(key) {
                        Some(l) => l.lookup.expire(now),
                        None => continue,
                    };
                    self.step(key, step);
                }
            }
            for name in self.schedule.start_due(now) {
                self.start_lookup(name, now);
            }
            let timeout = self.poll_timeout(self.now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("resolver stopped: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    if !self.control() {
                        debug!("resolver stopped");
                        return;
                    }
                } else {
                    self.read(ev.token().0, &mut buf);
                }
            }
        }
    }

    /// Handles queued messages; false when it is time to stop.
    fn control(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Generation(shared)) => self.apply(&shared),
                Ok(Msg::Stop) => return false,
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, shared: &Shared) {
        self.settings = shared.cfg.resolve.clone();
        self.timing = timing(&self.settings);
        let names = names_of(&shared.cfg);
        if !names.is_empty() || !self.schedule.is_empty() {
            let via = if self.settings.servers.is_empty() {
                format!("the system resolver every {:?}", self.settings.interval)
            } else {
                let list: Vec<String> = self
                    .settings
                    .servers
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                format!(
                    "{} (TTLs within {:?}..{:?})",
                    list.join(", "),
                    self.settings.min,
                    self.settings.max
                )
            };
            info!("resolve: following {} name(s) through {via}", names.len());
        }
        let now = self.now();
        self.schedule.follow(names, &self.timing, now);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        for (name, s) in stats.iter_mut() {
            s.addresses = self.schedule.addrs(name).map(<[IpAddr]>::len);
        }
        for name in self.schedule.names() {
            let addresses = self.schedule.addrs(&name).map(<[IpAddr]>::len);
            stats.entry(name).or_insert_with(|| NameStats {
                addresses,
                ..NameStats::default()
            });
        }
    }

    fn poll_timeout(&self, now: u64) -> Option<Duration> {
        let lookups = self.lookups.iter().map(|(_, l)| l.lookup.deadline());
        let next = lookups.chain(self.schedule.next_due()).min()?;
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    fn start_lookup(&mut self, name: String, now: u64) {
        if self.settings.servers.is_empty() {
            let result = net::system_lookup(&name);
            let now = self.now();
            self.finish(&name, result, now);
            return;
        }
        let mut lookup = Lookup::new(
            &name,
            &self.settings.servers,
            self.settings.timeout,
            net::query_ids(),
        );
        let step = lookup.start(now);
        let key = self.lookups.insert(InFlight { lookup, sock: None });
        self.step(key, step);
    }

    /// Carries out what lookup `key` asks for, until it waits or is done.
    fn step(&mut self, key: usize, mut step: Step) {
        loop {
            match step {
                Step::Wait => return,
                Step::Done(result) => {
                    let Some(mut l) = self.lookups.remove(key) else {
                        return;
                    };
                    if let Some(s) = &mut l.sock {
                        let _ = self.poll.registry().deregister(s);
                    }
                    let now = self.now();
                    self.finish(l.lookup.host(), result, now);
                    return;
                }
                Step::Send { server, packets } => {
                    let Some(l) = self.lookups.get_mut(key) else {
                        return;
                    };
                    if let Some(mut old) = l.sock.take() {
                        let _ = self.poll.registry().deregister(&mut old);
                    }
                    // A socket that cannot be made or a datagram that cannot leave ends this
                    // try at its deadline, as silence would.
                    match UdpSocket::bind(net::local_for(server)) {
                        Ok(mut s) => {
                            match self.poll.registry().register(
                                &mut s,
                                Token(key),
                                Interest::READABLE,
                            ) {
                                Ok(()) => {
                                    for p in &packets {
                                        if let Err(e) = s.send_to(p, server) {
                                            debug!(
                                                "resolve: {}: sending to {server}: {e}",
                                                l.lookup.host()
                                            );
                                        }
                                    }
                                    l.sock = Some(s);
                                }
                                Err(e) => debug!(
                                    "resolve: {}: registering a socket: {e}",
                                    l.lookup.host()
                                ),
                            }
                        }
                        Err(e) => debug!("resolve: {}: opening a socket: {e}", l.lookup.host()),
                    }
                    return;
                }
                Step::Tcp {
                    server,
                    family,
                    packet,
                } => {
                    let answer = net::tcp_exchange(server, &packet, self.settings.timeout);
                    let now = self.now();
                    step = match self.lookups.get_mut(key) {
                        Some(l) => l.lookup.tcp_reply(family, answer, now),
                        None => return,
                    };
                }
            }
        }
    }

    /// Reads every datagram waiting on lookup `key`'s socket.
    fn read(&mut self, key: usize, buf: &mut [u8]) {
        loop {
            let Some(l) = self.lookups.get_mut(key) else {
                return;
            };
            let Some(s) = &l.sock else { return };
            let (n, from) = match s.recv_from(buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error reported on the socket: the deadline moves the lookup on.
                Err(_) => continue,
            };
            let now = self.clock.now_ms();
            let step = l.lookup.datagram(from, &buf[..n], now);
            self.step(key, step);
        }
    }

    fn finish(&mut self, name: &str, result: Result<Resolved, LookupError>, now: u64) {
        let was_failing = self.schedule.failing(name) > 0;
        let outcome = self.schedule.finish(name, result, &self.timing, now);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let s = stats.entry(name.to_owned()).or_default();
        match outcome {
            Outcome::Gone => {}
            Outcome::Same { next } => {
                s.lookups += 1;
                if was_failing {
                    info!("resolve: {name} resolves again, to the same addresses; next lookup in {next:?}");
                }
            }
            Outcome::Changed { old, new, next } => {
                s.lookups += 1;
                s.changes += 1;
                s.addresses = Some(new.len());
                if was_failing {
                    info!("resolve: {name} resolves again");
                }
                info!(
                    "resolve: {name} changed: {} -> {}; applying it as a reload; next lookup in {next:?}",
                    list(&old),
                    list(&new)
                );
                drop(stats);
                (self.readdress)(name, &new);
            }
            Outcome::Failed {
                why,
                kept,
                streak,
                next,
            } => {
                s.lookups += 1;
                s.failures += 1;
                let line = format!(
                    "resolve: {name}: {why}; keeping its {} last good address(es) ({}); retrying in {next:?}",
                    kept.len(),
                    list(&kept)
                );
                if streak == 1 {
                    warn!("{line}");
                } else {
                    debug!("{line} (failure {streak} in a row)");
                }
            }
        }
    }
}

fn list(addrs: &[IpAddr]) -> String {
    let v: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_each_host_and_drop_the_gauge_of_names_no_longer_used() {
        assert_eq!(render(&BTreeMap::new()), "", "nothing without names");
        let stats = BTreeMap::from([
            (
                "api.internal".to_owned(),
                NameStats {
                    lookups: 7,
                    failures: 2,
                    changes: 1,
                    addresses: Some(3),
                },
            ),
            (
                "old.internal".to_owned(),
                NameStats {
                    lookups: 1,
                    addresses: None,
                    ..NameStats::default()
                },
            ),
        ]);
        let text = render(&stats);
        for line in [
            "# HELP hearth_resolve_addresses ",
            "# TYPE hearth_resolve_addresses gauge\nhearth_resolve_addresses{host=\"api.internal\"} 3\n# HELP",
            "# TYPE hearth_resolve_lookups_total counter\n",
            "hearth_resolve_lookups_total{host=\"old.internal\"} 1\n",
            "hearth_resolve_changes_total{host=\"api.internal\"} 1\n",
            "# TYPE hearth_resolve_failures_total counter\n",
            "hearth_resolve_failures_total{host=\"api.internal\"} 2\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(!text.contains("hearth_resolve_addresses{host=\"old.internal\"}"));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
