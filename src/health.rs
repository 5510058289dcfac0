//! Active health checks (APISIX `checks.active`): one thread for the whole process,
//! "hearth-health", probes the nodes of every upstream that configures checks and tells every
//! core, by control message, when a node goes down or comes back.
//!
//! The module is split like the rest of hearth. The leaves are sans-io and take `now` in
//! milliseconds: [`judge`] turns what a probe saw into a [`Verdict`], [`NodeState`] counts
//! consecutive verdicts against the thresholds, and [`Schedule`] keeps, per pool id, the checks,
//! the state and when the next probe is due. The [`Checker`] at the edge owns the sockets.
//!
//! A probe is a non-blocking `GET {http_path} HTTP/1.1` with `Connection: close`, polled with `mio`
//! on the checker thread until its response head arrives or its `timeout` passes. The head is read
//! by [`http::read`](crate::http::read) to the rules and default bounds the data path applies to
//! upstream responses, so a node whose answers hearth could not relay does not pass its checks; its
//! status decides, and the probe closes before any body. One poll for every probe keeps probes of
//! different nodes from waiting for each other's timeouts while staying on one thread whatever the
//! number of nodes: no thread per probe to spawn, bound or join at shutdown.
//!
//! Invariants:
//! - At most one probe per pool is in flight, and each ends within its `timeout`.
//! - A pool is probed once however many upstreams list its node; the first listing with checks
//!   supplies them.
//! - Nodes start healthy. Only a crossed threshold changes a node's state, and every change is
//!   sent to every core and logged with the upstream, the node and the reason.
//! - A pool that stops being checked (node or checks removed by a reload) while down is
//!   announced healthy, so no core keeps out a node that nobody probes any more.
//! - Nothing here is on the request path: cores only read their own `down` flags.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use log::{debug, error, info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::ActiveChecks;
use crate::http::head::Limits;
use crate::http::read::{Event, MessageError, ResponseDecoder};
use crate::id::NodeId;
use crate::metrics::HealthCounters;
pub use crate::probe::Verdict;
use crate::runtime::control::Control;
use crate::runtime::generation::Shared;
use crate::runtime::process::Process;
use crate::slab::Slab;

/// Bytes asked of a probe's socket at a time: most response heads fit.
const READ_BYTES: usize = 2048;
/// Messages waiting for the checker: generations, stats requests, stop. Reloads are rare.
const CHANNEL_CAPACITY: usize = 64;
const WAKER: Token = Token(usize::MAX);

// ---------------------------------------------------------------- sans-io: judging and counting

/// How a probe ended, before the node's checks judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived.
    Status(u16),
    /// Refused, reset, or closed before a whole response head.
    Tcp(io::ErrorKind),
    /// No response head within `timeout`.
    Timeout,
    /// Bytes that are not an HTTP/1.x response head hearth accepts.
    Garbled,
}

/// Healthy statuses are looked at first, so a status listed twice counts as a success.
pub fn judge(checks: &ActiveChecks, outcome: Outcome) -> Verdict {
    match outcome {
        Outcome::Status(s) if checks.healthy_statuses.contains(&s) => Verdict::Success,
        Outcome::Status(s) if checks.unhealthy_statuses.contains(&s) => Verdict::HttpFailure,
        Outcome::Status(_) => Verdict::Neither,
        Outcome::Garbled => Verdict::HttpFailure,
        Outcome::Tcp(_) => Verdict::TcpFailure,
        Outcome::Timeout => Verdict::Timeout,
    }
}

/// One node's state and its consecutive counts. A success clears the failure counts and any
/// failure clears the success count, so thresholds are crossed only by unbroken runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub healthy: bool,
    successes: u32,
    http_failures: u32,
    tcp_failures: u32,
    timeouts: u32,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            healthy: true,
            successes: 0,
            http_failures: 0,
            tcp_failures: 0,
            timeouts: 0,
        }
    }
}

impl NodeState {
    /// Counts one verdict. When it crosses a threshold the state flips, the counts restart, and
    /// the new state is returned with the length of the run that crossed.
    pub fn record(&mut self, checks: &ActiveChecks, v: Verdict) -> Option<(bool, u32)> {
        let run = match v {
            Verdict::Neither => return None,
            Verdict::Success => {
                (self.http_failures, self.tcp_failures, self.timeouts) = (0, 0, 0);
                self.successes = self.successes.saturating_add(1);
                self.successes
            }
            Verdict::HttpFailure | Verdict::TcpFailure | Verdict::Timeout => {
                self.successes = 0;
                let count = match v {
                    Verdict::HttpFailure => &mut self.http_failures,
                    Verdict::TcpFailure => &mut self.tcp_failures,
                    _ => &mut self.timeouts,
                };
                *count = count.saturating_add(1);
                *count
            }
        };
        let flip = if self.healthy {
            self.http_failures >= checks.unhealthy_failures
                || self.tcp_failures >= checks.tcp_failures
                || self.timeouts >= checks.timeouts
        } else {
            self.successes >= checks.healthy_successes
        };
        if !flip {
            return None;
        }
        *self = NodeState {
            healthy: !self.healthy,
            ..NodeState::default()
        };
        Some((self.healthy, run))
    }
}

/// What a probe's answer says once its head is complete or can no longer become one (RFC 9112
/// §4 and §5, through [`ResponseDecoder`]); `None` while more bytes are needed.
fn answer_outcome(answer: &mut ResponseDecoder) -> Option<Outcome> {
    match answer.next_event() {
        Ok(Event::NeedMore) => None,
        // The head comes first, so any other event means there is one.
        Ok(_) => Some(
            answer
                .head()
                .map_or(Outcome::Garbled, |h| Outcome::Status(h.status)),
        ),
        Err(MessageError::Closed | MessageError::HeadCut) => {
            Some(Outcome::Tcp(io::ErrorKind::UnexpectedEof))
        }
        Err(_) => Some(Outcome::Garbled),
    }
}

// ---------------------------------------------------------------- sans-io: the schedule

/// One checked pool, as a generation describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub pool: NodeId,
    pub addr: SocketAddr,
    /// For logs: the upstream that supplied the checks, and the node as written.
    pub upstream: String,
    pub node: String,
    pub checks: ActiveChecks,
}

impl TargetSpec {
    /// The probe's request. The Host is `checks.host` or the node as written (`host:port`).
    pub fn request(&self) -> Vec<u8> {
        let host = self.checks.host.as_deref().unwrap_or(&self.node);
        format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hearth-health\r\nConnection: close\r\n\r\n",
            self.checks.http_path
        )
        .into_bytes()
    }
}

/// The pools a generation asks to check, each once, in pool id order.
pub fn targets_of(shared: &Shared) -> Vec<TargetSpec> {
    let mut out: Vec<TargetSpec> = Vec::new();
    for (ui, u) in shared.cfg.upstreams.iter().enumerate() {
        let Some(checks) = &u.checks else { continue };
        for (node, &pool) in u.nodes.iter().zip(&shared.up_nodes[ui]) {
            if out.iter().any(|t| t.pool == pool) {
                continue;
            }
            out.push(TargetSpec {
                pool,
                addr: node.addr,
                upstream: u.name.clone(),
                node: node.host.clone(),
                checks: checks.clone(),
            });
        }
    }
    out.sort_by_key(|t| t.pool);
    out
}

/// A node changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub pool: NodeId,
    pub healthy: bool,
    pub upstream: String,
    pub node: String,
    pub reason: String,
}

#[derive(Debug)]
struct Target {
    spec: TargetSpec,
    state: NodeState,
    /// When the next probe may start (ms on the checker's clock).
    due: u64,
    /// Tells a finished probe from one started for an earlier incarnation of the pool.
    epoch: u64,
    in_flight: bool,
}

/// Every checked pool by id, with its state and when it is due.
#[derive(Debug, Default)]
pub struct Schedule {
    targets: Vec<Option<Target>>,
    epochs: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Schedule {
    /// Takes a generation's targets. Pools that stay keep their state and schedule under the
    /// new checks; new pools start healthy and are due at once; pools that are gone stop being
    /// probed, and those that were down are returned as changes to healthy.
    pub fn apply(&mut self, specs: Vec<TargetSpec>, now: u64) -> Vec<Change> {
        let mut listed = vec![false; self.targets.len()];
        for spec in specs {
            let pool = spec.pool.index();
            if self.targets.len() <= pool {
                self.targets.resize_with(pool + 1, || None);
                listed.resize(pool + 1, false);
            }
            listed[pool] = true;
            match &mut self.targets[pool] {
                Some(t) => {
                    // A shorter interval takes effect now rather than after the old one.
                    let interval = if t.state.healthy {
                        spec.checks.healthy_interval
                    } else {
                        spec.checks.unhealthy_interval
                    };
                    t.due = t.due.min(now.saturating_add(ms(interval)));
                    t.spec = spec;
                }
                slot @ None => {
                    self.epochs += 1;
                    *slot = Some(Target {
                        spec,
                        state: NodeState::default(),
                        due: now,
                        epoch: self.epochs,
                        in_flight: false,
                    });
                }
            }
        }
        let mut changes = Vec::new();
        for (pool, slot) in self.targets.iter_mut().enumerate() {
            if listed[pool] {
                continue;
            }
            if let Some(t) = slot.take() {
                if !t.state.healthy {
                    changes.push(Change {
                        pool: NodeId(pool),
                        healthy: true,
                        upstream: t.spec.upstream,
                        node: t.spec.node,
                        reason: "it is no longer checked".into(),
                    });
                }
            }
        }
        changes
    }

    /// Pools whose probe is due, marked in flight; each with the epoch `finish` wants back.
    pub fn start_due(&mut self, now: u64) -> Vec<(NodeId, u64)> {
        let mut out = Vec::new();
        for (pool, slot) in self.targets.iter_mut().enumerate() {
            if let Some(t) = slot {
                if !t.in_flight && t.due <= now {
                    t.in_flight = true;
                    out.push((NodeId(pool), t.epoch));
                }
            }
        }
        out
    }

    /// When the next probe is due; None while nothing is checked or everything is in flight.
    pub fn next_due(&self) -> Option<u64> {
        self.targets
            .iter()
            .flatten()
            .filter(|t| !t.in_flight)
            .map(|t| t.due)
            .min()
    }

    pub fn target(&self, pool: NodeId) -> Option<&TargetSpec> {
        self.targets.get(pool.index())?.as_ref().map(|t| &t.spec)
    }

    /// None for pools that are not checked.
    pub fn healthy(&self, pool: NodeId) -> Option<bool> {
        self.targets
            .get(pool.index())?
            .as_ref()
            .map(|t| t.state.healthy)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.iter().all(Option::is_none)
    }

    /// Counts a finished probe and schedules the next. Returns the verdict (None when the
    /// probe belonged to a pool that has since left) and the change it caused, if any.
    pub fn finish(
        &mut self,
        pool: NodeId,
        epoch: u64,
        outcome: Outcome,
        now: u64,
    ) -> (Option<Verdict>, Option<Change>) {
        let Some(t) = self.targets.get_mut(pool.index()).and_then(Option::as_mut) else {
            return (None, None);
        };
        if t.epoch != epoch || !t.in_flight {
            return (None, None);
        }
        t.in_flight = false;
        let checks = &t.spec.checks;
        let verdict = judge(checks, outcome);
        let flipped = t.state.record(checks, verdict);
        let interval = if t.state.healthy {
            checks.healthy_interval
        } else {
            checks.unhealthy_interval
        };
        t.due = now.saturating_add(ms(interval));
        let change = flipped.map(|(healthy, run)| Change {
            pool,
            healthy,
            upstream: t.spec.upstream.clone(),
            node: t.spec.node.clone(),
            reason: reason(&t.spec, outcome, run),
        });
        (Some(verdict), change)
    }
}

/// Why a node changed state, for the log line.
fn reason(spec: &TargetSpec, outcome: Outcome, run: u32) -> String {
    let path = &spec.checks.http_path;
    match outcome {
        Outcome::Status(s) => format!("{run} probe(s) of {path} in a row answered {s}"),
        Outcome::Garbled => {
            format!("{run} probe(s) of {path} in a row got no valid HTTP/1.x response head")
        }
        Outcome::Tcp(kind) => format!("{run} tcp failure(s) in a row, the last: {kind}"),
        Outcome::Timeout => format!(
            "{run} probe(s) of {path} in a row timed out after {:?}",
            spec.checks.timeout
        ),
    }
}

// ---------------------------------------------------------------- the checker thread

/// Messages to the checker.
#[derive(Debug)]
pub enum Msg {
    /// A new configuration generation (also the first one).
    Generation(Arc<Shared>),
    /// Send a snapshot of the probe counters and node states.
    Stats(Sender<HealthCounters>),
    Stop,
}

/// The sending half of the checker's channel; cheap to clone.
#[derive(Clone)]
pub struct Health {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
}

impl Health {
    /// Sends and wakes the checker; false if it is gone or its channel is full.
    pub fn send(&self, msg: Msg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                warn!("health checker channel full, dropped {m:?}");
                return false;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
        if let Err(e) = self.waker.wake() {
            warn!("waking the health checker failed: {e}");
        }
        true
    }

    /// Probe counters and node states; empty if the checker does not answer within 2 s.
    pub fn stats(&self) -> HealthCounters {
        let (tx, rx) = bounded(1);
        if !self.send(Msg::Stats(tx)) {
            return HealthCounters::default();
        }
        rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
    }
}

/// Starts the checker thread on the first generation.
pub fn start(process: Arc<Process>, first: Arc<Shared>) -> io::Result<(Health, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = bounded(CHANNEL_CAPACITY);
    let checker = Checker {
        poll,
        rx,
        process,
        schedule: Schedule::default(),
        probes: Slab::default(),
        results: Vec::new(),
        clock: crate::clock::Clock,
    };
    let thread = std::thread::Builder::new()
        .name("hearth-health".into())
        .spawn(move || checker.run(first))?;
    Ok((Health { tx, waker }, thread))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbePhase {
    Connecting,
    Sending,
    Reading,
}

struct Probe {
    pool: NodeId,
    epoch: u64,
    sock: TcpStream,
    phase: ProbePhase,
    request: Vec<u8>,
    sent: usize,
    answer: ResponseDecoder,
    deadline: u64,
}

impl Probe {
    /// Moves the probe on as far as the socket allows; Some when it is over. Edge-triggered
    /// readiness means each step runs until `WouldBlock`.
    fn advance(&mut self) -> Option<Outcome> {
        loop {
            match self.phase {
                ProbePhase::Connecting => {
                    match self.sock.take_error() {
                        Ok(Some(e)) | Err(e) => return Some(Outcome::Tcp(e.kind())),
                        Ok(None) => {}
                    }
                    match self.sock.peer_addr() {
                        Ok(_) => self.phase = ProbePhase::Sending,
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                        Err(e) => return Some(Outcome::Tcp(e.kind())),
                    }
                }
                ProbePhase::Sending => match self.sock.write(&self.request[self.sent..]) {
                    Ok(0) => return Some(Outcome::Tcp(io::ErrorKind::WriteZero)),
                    Ok(n) => {
                        self.sent += n;
                        if self.sent == self.request.len() {
                            self.phase = ProbePhase::Reading;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Some(Outcome::Tcp(e.kind())),
                },
                ProbePhase::Reading => {
                    let mut chunk = [0u8; READ_BYTES];
                    match self.sock.read(&mut chunk) {
                        Ok(0) => self.answer.end_input(),
                        Ok(n) => self.answer.feed(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Some(Outcome::Tcp(e.kind())),
                    }
                    // Never None once the input has ended: the head is then whole or cut.
                    if let Some(outcome) = answer_outcome(&mut self.answer) {
                        return Some(outcome);
                    }
                }
            }
        }
    }
}

/// The checker's event loop: its own `mio::Poll`, one socket per probe in flight.
struct Checker {
    poll: Poll,
    rx: Receiver<Msg>,
    process: Arc<Process>,
    schedule: Schedule,
    probes: Slab<Probe>,
    /// Probe verdicts by pool id, indexed by `Verdict::index`.
    results: Vec<[u64; Verdict::ALL.len()]>,
    clock: crate::clock::Clock,
}

impl Checker {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn run(mut self, first: Arc<Shared>) {
        self.apply(&first);
        drop(first);
        let mut events = Events::with_capacity(256);
        loop {
            let now = self.now();
            self.expire(now);
            for (pool, epoch) in self.schedule.start_due(now) {
                self.start_probe(pool, epoch, now);
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("health checker stopped: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    if !self.control() {
                        debug!("health checker stopped");
                        return;
                    }
                } else {
                    self.drive(ev.token().0);
                }
            }
        }
    }

    /// Handles queued messages; false when it is time to stop.
    fn control(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Generation(shared)) => self.apply(&shared),
                Ok(Msg::Stats(reply)) => {
                    let _ = reply.send(self.snapshot());
                }
                Ok(Msg::Stop) => return false,
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, shared: &Shared) {
        let targets = targets_of(shared);
        if !targets.is_empty() || !self.schedule.is_empty() {
            info!("health: checking {} node(s)", targets.len());
        }
        for change in self.schedule.apply(targets, self.now()) {
            self.publish(&change);
        }
    }

    fn poll_timeout(&self, now: u64) -> Option<Duration> {
        let deadlines = self.probes.keys().into_iter().filter_map(|k| {
            let p = self.probes.get(k)?;
            Some(p.deadline)
        });
        let next = deadlines.chain(self.schedule.next_due()).min()?;
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    fn start_probe(&mut self, pool: NodeId, epoch: u64, now: u64) {
        let Some(spec) = self.schedule.target(pool) else {
            return;
        };
        let (addr, request) = (spec.addr, spec.request());
        let deadline = now.saturating_add(ms(spec.checks.timeout));
        let mut sock = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => return self.finish(pool, epoch, Outcome::Tcp(e.kind()), now),
        };
        let key = self.probes.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.finish(pool, epoch, Outcome::Tcp(e.kind()), now);
        }
        self.probes.insert(Probe {
            pool,
            epoch,
            sock,
            phase: ProbePhase::Connecting,
            request,
            sent: 0,
            // No body is read, so none may be.
            answer: ResponseDecoder::new(Limits::default(), 0),
            deadline,
        });
    }

    fn drive(&mut self, key: usize) {
        let Some(p) = self.probes.get_mut(key) else {
            return; // a stale event for a probe already over
        };
        if let Some(outcome) = p.advance() {
            self.end_probe(key, outcome);
        }
    }

    fn expire(&mut self, now: u64) {
        for key in self.probes.keys() {
            if self.probes.get(key).is_some_and(|p| p.deadline <= now) {
                self.end_probe(key, Outcome::Timeout);
            }
        }
    }

    /// Closes the probe's socket (dropping it also takes it out of the poll) and counts it.
    fn end_probe(&mut self, key: usize, outcome: Outcome) {
        if let Some(p) = self.probes.remove(key) {
            let now = self.now();
            self.finish(p.pool, p.epoch, outcome, now);
        }
    }

    fn finish(&mut self, pool: NodeId, epoch: u64, outcome: Outcome, now: u64) {
        let (verdict, change) = self.schedule.finish(pool, epoch, outcome, now);
        if let Some(v) = verdict {
            debug!("health: pool {pool}: {outcome:?} counts as {}", v.name());
            let i = pool.index();
            if self.results.len() <= i {
                self.results.resize(i + 1, [0; Verdict::ALL.len()]);
            }
            self.results[i][v.index()] += 1;
        }
        if let Some(c) = change {
            self.publish(&c);
        }
    }

    /// Logs a change and tells every core.
    fn publish(&self, c: &Change) {
        if c.healthy {
            info!(
                "health: upstream {:?} node {} is up: {}",
                c.upstream, c.node, c.reason
            );
        } else {
            warn!(
                "health: upstream {:?} node {} is down: {}",
                c.upstream, c.node, c.reason
            );
        }
        for (i, peer) in self.process.peers.iter().enumerate() {
            let msg = Control::NodeHealth {
                node: c.pool,
                healthy: c.healthy,
            };
            if peer.send(msg).is_err() {
                warn!(
                    "health: core {i} did not take the new state of node {}",
                    c.node
                );
            }
        }
    }

    fn snapshot(&self) -> HealthCounters {
        let n = self.results.len().max(self.schedule.len());
        let mut out = HealthCounters::with_nodes(n);
        for (pool, node) in out.nodes.iter_mut().enumerate() {
            if let Some(r) = self.results.get(pool) {
                node.probes = *r;
            }
            node.healthy = self.schedule.healthy(NodeId(pool)).unwrap_or(true);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn checks(successes: u32, failures: u32) -> ActiveChecks {
        ActiveChecks {
            healthy_successes: successes,
            unhealthy_failures: failures,
            tcp_failures: failures,
            timeouts: failures,
            healthy_interval: Duration::from_millis(1000),
            unhealthy_interval: Duration::from_millis(300),
            ..ActiveChecks::default()
        }
    }

    const REFUSED: Outcome = Outcome::Tcp(io::ErrorKind::ConnectionRefused);

    #[test]
    fn statuses_are_judged_by_both_lists() {
        let c = ActiveChecks::default();
        let table: &[(Outcome, Verdict)] = &[
            (Outcome::Status(200), Verdict::Success),
            (Outcome::Status(302), Verdict::Success),
            (Outcome::Status(500), Verdict::HttpFailure),
            (Outcome::Status(404), Verdict::HttpFailure),
            (Outcome::Status(429), Verdict::HttpFailure),
            (Outcome::Status(301), Verdict::Neither),
            (Outcome::Status(403), Verdict::Neither),
            (Outcome::Garbled, Verdict::HttpFailure),
            (REFUSED, Verdict::TcpFailure),
            (Outcome::Timeout, Verdict::Timeout),
        ];
        for (o, want) in table {
            assert_eq!(judge(&c, *o), *want, "{o:?}");
        }
    }

    /// Feeds verdicts one by one; `flips` lists the index of each verdict that must flip the
    /// state, and to what.
    #[test]
    fn thresholds_count_unbroken_runs() {
        use Verdict::*;
        type Case = (
            &'static str,
            u32,
            u32,
            &'static [Verdict],
            &'static [(usize, bool)],
        );
        let table: &[Case] = &[
            (
                "two failures take it out",
                2,
                2,
                &[HttpFailure, HttpFailure],
                &[(1, false)],
            ),
            (
                "one failure is not enough",
                2,
                2,
                &[HttpFailure, Success, HttpFailure],
                &[],
            ),
            (
                "each kind counts on its own",
                2,
                2,
                &[HttpFailure, TcpFailure, Timeout, TcpFailure],
                &[(3, false)],
            ),
            (
                "neither breaks no run",
                2,
                2,
                &[HttpFailure, Neither, HttpFailure],
                &[(2, false)],
            ),
            (
                "back after successes, not before",
                3,
                1,
                &[Timeout, Success, Success, Success, Success],
                &[(0, false), (3, true)],
            ),
            (
                "a failure restarts the climb back",
                2,
                1,
                &[TcpFailure, Success, HttpFailure, Success, Success],
                &[(0, false), (4, true)],
            ),
            (
                "successes while healthy change nothing",
                1,
                3,
                &[Success, Success],
                &[],
            ),
        ];
        for (name, successes, failures, verdicts, flips) in table {
            let c = checks(*successes, *failures);
            let mut s = NodeState::default();
            let mut got = Vec::new();
            for (i, v) in verdicts.iter().enumerate() {
                if let Some((healthy, _)) = s.record(&c, *v) {
                    got.push((i, healthy));
                }
            }
            assert_eq!(&got, flips, "{name}");
        }
    }

    #[test]
    fn separate_thresholds_per_kind() {
        let c = ActiveChecks {
            unhealthy_failures: 5,
            tcp_failures: 1,
            timeouts: 3,
            ..ActiveChecks::default()
        };
        let mut s = NodeState::default();
        for _ in 0..4 {
            assert_eq!(s.record(&c, Verdict::HttpFailure), None);
        }
        assert_eq!(s.record(&c, Verdict::TcpFailure), Some((false, 1)));
    }

    fn spec(pool: NodeId, c: ActiveChecks) -> TargetSpec {
        TargetSpec {
            pool,
            addr: "127.0.0.1:9".parse().unwrap(),
            upstream: "u".into(),
            node: format!("127.0.0.1:{pool}"),
            checks: c,
        }
    }

    /// A virtual clock run: probes come due at the node's interval, failures take it down and
    /// switch to the unhealthy interval, and successes bring it back.
    #[test]
    fn schedule_follows_intervals_and_reports_changes() {
        let mut s = Schedule::default();
        assert!(s.apply(vec![spec(NodeId(0), checks(2, 2))], 0).is_empty());
        assert_eq!(s.next_due(), Some(0), "new targets are probed at once");
        let mut changes = Vec::new();
        // Each step: the probe starts when due and ends 10 ms later with the outcome.
        let script = [
            Outcome::Status(200),
            Outcome::Status(500),
            Outcome::Status(500),
            Outcome::Status(200),
            Outcome::Status(200),
        ];
        let mut starts = Vec::new();
        for o in script {
            let now = s.next_due().expect("something is due");
            let started = s.start_due(now);
            assert_eq!(started.len(), 1);
            assert_eq!(s.next_due(), None, "in flight, so not due again");
            assert!(s.start_due(now).is_empty(), "one probe per pool at a time");
            starts.push(now);
            let end = now + 10;
            let (pool, epoch) = started[0];
            let (v, c) = s.finish(pool, epoch, o, end);
            assert!(v.is_some());
            changes.extend(c.map(|c| (end, c.healthy, c.reason)));
        }
        // Healthy interval 1000 after the first two probes, 300 while down.
        assert_eq!(starts, [0, 1010, 2020, 2330, 2640]);
        assert_eq!(
            changes,
            [
                (
                    2030,
                    false,
                    "2 probe(s) of / in a row answered 500".to_owned()
                ),
                (
                    2650,
                    true,
                    "2 probe(s) of / in a row answered 200".to_owned()
                ),
            ]
        );
        assert_eq!(s.healthy(NodeId(0)), Some(true));
    }

    #[test]
    fn pools_that_leave_stop_and_come_back_up() {
        let mut s = Schedule::default();
        s.apply(
            vec![spec(NodeId(0), checks(1, 1)), spec(NodeId(2), checks(1, 1))],
            0,
        );
        let started = s.start_due(0);
        assert_eq!(started.len(), 2);
        for (pool, epoch) in started {
            s.finish(pool, epoch, REFUSED, 5);
        }
        assert_eq!(
            (s.healthy(NodeId(0)), s.healthy(NodeId(2))),
            (Some(false), Some(false))
        );
        // Pool 0 leaves while down: announced healthy. Pool 2 stays down, pool 1 is new.
        let changes = s.apply(
            vec![spec(NodeId(1), checks(1, 1)), spec(NodeId(2), checks(1, 1))],
            10,
        );
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].pool, changes[0].healthy), (NodeId(0), true));
        assert_eq!(s.healthy(NodeId(0)), None);
        assert_eq!(s.healthy(NodeId(2)), Some(false));
        // A probe of a pool that left is not counted, nor is one of an earlier incarnation.
        assert_eq!(
            s.finish(NodeId(0), 1, Outcome::Status(200), 20),
            (None, None)
        );
        let started = s.start_due(1000);
        assert_eq!(
            started.iter().map(|p| p.0).collect::<Vec<_>>(),
            [1, 2],
            "pool 0 is no longer probed"
        );
        s.apply(vec![], 1001);
        s.apply(vec![spec(NodeId(1), checks(1, 1))], 1002);
        let stale = started[0];
        assert_eq!(s.finish(stale.0, stale.1, REFUSED, 1003), (None, None));
        assert_eq!(s.healthy(NodeId(1)), Some(true));
    }

    #[test]
    fn a_shorter_interval_applies_at_once() {
        let mut s = Schedule::default();
        s.apply(vec![spec(NodeId(0), checks(1, 1))], 0);
        let (pool, epoch) = s.start_due(0)[0];
        s.finish(pool, epoch, Outcome::Status(200), 0);
        assert_eq!(s.next_due(), Some(1000));
        let mut fast = checks(1, 1);
        fast.healthy_interval = Duration::from_millis(50);
        s.apply(vec![spec(NodeId(0), fast)], 10);
        assert_eq!(s.next_due(), Some(60));
    }

    /// What a probe makes of `parts` read in turn, then, if `eof`, of the peer closing.
    fn outcome_of(parts: &[&[u8]], eof: bool) -> Option<Outcome> {
        let mut answer = ResponseDecoder::new(Limits::default(), 0);
        for part in parts {
            answer.feed(part);
            if let Some(o) = answer_outcome(&mut answer) {
                return Some(o);
            }
        }
        if eof {
            answer.end_input();
            return answer_outcome(&mut answer);
        }
        None
    }

    #[test]
    fn answers_become_outcomes() {
        use Outcome::{Garbled, Status};
        const CUT: Outcome = Outcome::Tcp(io::ErrorKind::UnexpectedEof);
        let huge = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; 17_000], b"\r\n\r\n"].concat();
        let table: &[(&[u8], bool, Option<Outcome>)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                false,
                Some(Status(200)),
            ),
            (
                b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                false,
                Some(Status(503)),
            ),
            (b"HTTP/1.1 204\r\n\r\n", false, Some(Status(204))),
            (b"HTTP/1.1 302 \nLocation: /\n\n", false, Some(Status(302))),
            // The head must be whole: the status line alone is not enough.
            (b"HTTP/1.1 200 OK\r\n", false, None),
            (b"HTTP/1.1 200 OK\r\n", true, Some(CUT)),
            (b"HTT", false, None),
            (b"HTT", true, Some(CUT)),
            (b"", true, Some(CUT)),
            (b"SSH-2.0-OpenSSH\r\n", false, Some(Garbled)),
            (b"SSH", false, Some(Garbled)),
            (b"HTTP/2 200\r\n", false, Some(Garbled)),
            (b"HTTP/1.1 20\r\n", false, Some(Garbled)),
            (b"HTTP/1.1 2000 OK\r\n", false, Some(Garbled)),
            (b"HTTP/1.1 abc OK\r\n", false, Some(Garbled)),
            (b"HTTP/1.1  200 OK\r\n", false, Some(Garbled)),
            // Heads the data path would refuse from this node.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                Some(Garbled),
            ),
            (&huge, false, Some(Garbled)),
        ];
        for (bytes, eof, want) in table {
            let name = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]);
            assert_eq!(outcome_of(&[bytes], *eof), *want, "{name:?}");
            for k in 0..=bytes.len().min(200) {
                let (a, b) = bytes.split_at(k);
                assert_eq!(outcome_of(&[a, b], *eof), *want, "{name:?} split at {k}");
            }
        }
    }

    #[test]
    fn each_pool_is_checked_once_with_the_first_listing() {
        let text = r#"
[[listen]]
addr = "127.0.0.1:0"
[upstreams.a]
nodes = { "127.0.0.1:9001" = 1, "127.0.0.1:9002" = 1 }
checks.active = { http_path = "/a", host = "a.example" }
[upstreams.b]
nodes = { "127.0.0.1:9002" = 1, "127.0.0.1:9003" = 1 }
checks.active = { http_path = "/b" }
[upstreams.c]
nodes = { "127.0.0.1:9004" = 1 }
[[routes]]
uris = ["/*"]
upstream = "a"
[[routes]]
uris = ["/b"]
upstream = "b"
[[routes]]
uris = ["/c"]
upstream = "c"
"#;
        let cfg = Arc::new(Config::parse(text, "t.toml").expect("valid").0);
        let shared = Process::new(Vec::new()).generation(cfg);
        let t = targets_of(&shared);
        let got: Vec<_> = t
            .iter()
            .map(|t| (t.pool, t.upstream.as_str(), t.checks.http_path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (NodeId(0), "a", "/a"),
                (NodeId(1), "a", "/a"),
                (NodeId(2), "b", "/b")
            ]
        );
        assert_eq!(
            String::from_utf8(t[0].request()).unwrap(),
            "GET /a HTTP/1.1\r\nHost: a.example\r\nUser-Agent: hearth-health\r\nConnection: close\r\n\r\n"
        );
        assert!(String::from_utf8(t[2].request())
            .unwrap()
            .contains("Host: 127.0.0.1:9003\r\n"));
    }
}
