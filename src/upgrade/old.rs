//! The running hearth's side of a binary upgrade: the upgrade socket's thread ([`Offer`]), which
//! answers a new hearth, and SIGUSR2's starting of one ([`Offer::spawn`]).
//!
//! The thread blocks in `accept` on the upgrade socket, never on a core. A peer must run as our
//! user; it says hello, gets every listening socket (`runtime::server::Sockets`: all cores'
//! sockets of each address, so that no accept queue is lost when this hearth closes its own)
//! and the admin listener, and this hearth goes on serving until the peer says it is ready.
//! Then the cores give it the idle plain upstream connections their clients cannot use now
//! (`Handle::export_idle`), and it says when it has filed them with its own cores. Only then is
//! this hearth committed: it removes its socket file (the path is the new hearth's now), asks
//! every core to drain for an upgrade (`Handle::upgrade`), tells the main thread
//! ([`HandedOff`]), and passes the connections the cores give up as their clients leave, in
//! batches, until every core has finished; then it says done. So the connections idle at the
//! hand-over are the new hearth's before any client is sent its way. A peer that goes away
//! before it has said both that it is ready and that it took the connections changes nothing
//! here but those connections: the failure is logged and this hearth keeps serving on all its
//! sockets.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};

use crate::runtime::control::{Export, PassedConn};
use crate::runtime::server::{Handle, Sockets};
use crate::upgrade::socket::{self, SocketFile};
use crate::upgrade::wire::{Addrs, Channel, ConnInfo, ListenInfo, Msg, MAX_FDS_PER_FRAME, VERSION};

/// How long a peer has to say hello before the thread turns to the next one.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// A write the new hearth does not take within this is given up (it has stopped reading).
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// What this hearth passes on.
pub struct Source {
    /// Every listening socket of the cores.
    pub sockets: Sockets,
    /// The admin listener, with its address as configured and as bound.
    pub admin: Option<(Addrs, std::net::TcpListener)>,
    pub handle: Handle,
    /// How long the drain after the hand-over may take (`shutdown_grace`).
    pub grace: Duration,
}

/// This hearth has handed over to the new one, whose pid this is: the main thread stops it.
#[derive(Debug)]
pub struct HandedOff {
    pub pid: u32,
}

/// Where an upgrade stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    /// SIGUSR2 started a new hearth with this pid; it has not said it is ready.
    Started(u32),
    /// A new hearth with this pid is on the socket.
    Talking(u32),
    HandedOff,
}

struct State {
    stage: Mutex<Stage>,
    file: Mutex<Option<SocketFile>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these; if something did, the value is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The upgrade socket's thread.
pub struct Offer {
    state: Arc<State>,
    thread: JoinHandle<()>,
}

impl Offer {
    /// Starts the thread: once `go` fires or is dropped (at once without one: a hearth that is
    /// itself taking over binds the path only when the old one has let go of it), it binds
    /// `path` and answers new hearths; the first that takes over ends it, after sending
    /// [`HandedOff`] on `handed`. A path it cannot bind leaves binary upgrade unavailable,
    /// which is logged.
    pub fn start(
        path: PathBuf,
        source: Source,
        handed: Sender<HandedOff>,
        go: Option<Receiver<()>>,
    ) -> io::Result<Offer> {
        let state = Arc::new(State {
            stage: Mutex::new(Stage::Idle),
            file: Mutex::new(None),
        });
        let st = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("hearth-upgrade".into())
            .spawn(move || {
                if let Some(go) = go {
                    let _ = go.recv();
                }
                serve(&path, &source, &st, &handed);
            })?;
        Ok(Offer { state, thread })
    }

    /// SIGUSR2: starts `exe --upgrade -c config` in a process group of its own (so that a
    /// Ctrl-C meant for this hearth does not reach it), with this hearth's environment, stdout
    /// and stderr, and watches it: if it exits before it is ready, says so; this hearth keeps
    /// serving either way until the new one is ready.
    pub fn spawn(&self, exe: &Path, config: &Path) {
        let mut stage = lock(&self.state.stage);
        match *stage {
            Stage::Idle => {}
            Stage::Started(pid) | Stage::Talking(pid) => {
                warn!("SIGUSR2: an upgrade is already under way (new hearth pid {pid})");
                return;
            }
            Stage::HandedOff => {
                warn!("SIGUSR2: this hearth has already handed over");
                return;
            }
        }
        let spawned = Command::new(exe)
            .arg("--upgrade")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                error!(
                    "upgrade failed: cannot start {}: {e}; still serving",
                    exe.display()
                );
                return;
            }
        };
        let pid = child.id();
        *stage = Stage::Started(pid);
        info!(
            "SIGUSR2: started {} --upgrade -c {} (pid {pid})",
            exe.display(),
            config.display()
        );
        let state = Arc::clone(&self.state);
        let watch = std::thread::Builder::new()
            .name("hearth-upgrade-watch".into())
            .spawn(move || {
                let status = child.wait();
                let mut stage = lock(&state.stage);
                if *stage != Stage::HandedOff {
                    let how = match status {
                        Ok(s) => describe(s),
                        Err(e) => format!("cannot tell how: {e}"),
                    };
                    error!(
                        "upgrade failed: the new hearth (pid {pid}) exited before it was ready \
                         ({how}); still serving"
                    );
                    *stage = Stage::Idle;
                }
            });
        if let Err(e) = watch {
            warn!("upgrade: cannot watch the new hearth (pid {pid}): {e}");
        }
    }

    /// At exit. After a hand-over, waits until the last connections went to the new hearth
    /// (the cores have stopped, so nothing more comes); otherwise removes the socket file, if
    /// it is still this hearth's.
    pub fn finish(self) {
        if *lock(&self.state.stage) == Stage::HandedOff {
            if self.thread.join().is_err() {
                warn!("the upgrade thread panicked");
            }
        } else if let Some(f) = lock(&self.state.file).take() {
            f.remove();
        }
    }
}

/// How a process ended, for the log: "exit status 1", "signal 9".
fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => s.to_string(),
    }
}

fn serve(path: &Path, source: &Source, state: &State, handed: &Sender<HandedOff>) {
    let (listener, file) = match socket::bind(path) {
        Ok(b) => b,
        Err(e) => {
            warn!("binary upgrade is unavailable: {e}");
            return;
        }
    };
    info!("upgrade socket on {}", path.display());
    *lock(&state.file) = Some(file);
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                warn!("upgrade socket: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peer = match socket::check_peer(&stream) {
            Ok(p) => p,
            Err(e) => {
                warn!("upgrade socket: {e}");
                continue;
            }
        };
        match session(Channel::new(stream), peer.pid, source, state, handed) {
            Ok(()) => return,
            Err(why) => {
                error!("upgrade failed: {why}; still serving");
                let mut stage = lock(&state.stage);
                if matches!(*stage, Stage::Talking(_)) {
                    *stage = Stage::Idle;
                }
            }
        }
    }
}

/// One new hearth on the socket; Ok once it has taken over.
fn session(
    mut ch: Channel,
    peer_pid: u32,
    source: &Source,
    state: &State,
    handed: &Sender<HandedOff>,
) -> Result<(), String> {
    let io = |e: io::Error| format!("the upgrade socket: {e}");
    ch.sock().set_read_timeout(Some(HELLO_WAIT)).map_err(io)?;
    ch.sock().set_write_timeout(Some(WRITE_WAIT)).map_err(io)?;
    let pid = match ch.recv() {
        Ok(Some((Msg::Hello { version, pid }, _))) if version == VERSION => pid,
        Ok(Some((Msg::Hello { version, pid }, _))) => {
            let reason = format!("upgrade protocol {version}, this hearth speaks {VERSION}");
            let _ = ch.send(
                &Msg::Refused {
                    reason: reason.clone(),
                },
                &[],
            );
            return Err(format!("the new hearth (pid {pid}) speaks {reason}"));
        }
        Ok(other) => {
            return Err(format!(
                "pid {peer_pid} connected but did not say hello ({other:?})"
            ))
        }
        Err(e) => {
            return Err(format!(
                "pid {peer_pid} connected but did not say hello: {e}"
            ))
        }
    };
    {
        let mut stage = lock(&state.stage);
        if *stage == Stage::HandedOff {
            let _ = ch.send(
                &Msg::Refused {
                    reason: "this hearth has already handed over".into(),
                },
                &[],
            );
            return Err(format!("pid {pid} asked after the hand-over"));
        }
        *stage = Stage::Talking(pid);
    }
    let sets = match source.sockets.copies().map_err(io)? {
        Some(sets) => sets,
        None => {
            let reason = "this hearth is stopping".to_string();
            let _ = ch.send(
                &Msg::Refused {
                    reason: reason.clone(),
                },
                &[],
            );
            return Err(reason);
        }
    };
    let admin = match &source.admin {
        Some((addrs, l)) => Some((*addrs, l.try_clone().map_err(io)?)),
        None => None,
    };
    let mut fds: Vec<RawFd> = Vec::new();
    let listen: Vec<ListenInfo> = sets
        .iter()
        .map(|s| {
            fds.extend(s.socks.iter().map(AsRawFd::as_raw_fd));
            ListenInfo {
                addrs: Addrs {
                    addr: s.addr,
                    bound: s.bound,
                },
                sockets: s.socks.len(),
            }
        })
        .collect();
    if let Some((_, l)) = &admin {
        fds.push(l.as_raw_fd());
    }
    let msg = Msg::Listeners {
        pid: std::process::id(),
        listen,
        admin: admin.as_ref().map(|(a, _)| *a),
    };
    ch.send(&msg, &fds)
        .map_err(|e| format!("passing the listening sockets to pid {pid}: {e}"))?;
    // Our copies close here; the new hearth has its own.
    drop((sets, admin));
    info!(
        "upgrade: the new hearth (pid {pid}) has this hearth's {} listening socket(s); \
         serving on until it is ready",
        fds.len()
    );
    // As long as it takes the new hearth to start (it may read etcd first): it is ready, or it
    // closes the socket by exiting.
    ch.sock().set_read_timeout(None).map_err(io)?;
    match ch.recv() {
        Ok(Some((Msg::Ready { .. }, _))) => {}
        Ok(Some((other, _))) => {
            return Err(format!(
                "the new hearth (pid {pid}) said {other:?} instead of ready"
            ))
        }
        Ok(None) => {
            return Err(format!(
                "the new hearth (pid {pid}) went away before it was ready"
            ))
        }
        Err(e) => {
            return Err(format!(
                "the new hearth (pid {pid}) went away before it was ready: {e}"
            ))
        }
    }
    // Before a client is sent its way, the new hearth gets the connections idle now, and has
    // filed them with its cores when it says so.
    let (tx, rx) = crossbeam_channel::unbounded();
    let asked = source.handle.export_idle(&tx);
    let mut relay = Relay::default();
    let mut flushed = 0;
    while flushed < asked {
        match rx.recv() {
            Ok(Export::Flushed { .. }) => flushed += 1,
            Ok(e) => relay.take(&mut ch, e, pid),
            Err(_) => break,
        }
    }
    relay.flush(&mut ch, pid);
    if relay.broken {
        return Err(format!(
            "the new hearth (pid {pid}) went away before it took this hearth's connections"
        ));
    }
    ch.sock().set_read_timeout(Some(HELLO_WAIT)).map_err(io)?;
    let settled = ch
        .send(&Msg::Settle, &[])
        .and_then(|()| ch.recv())
        .map_err(|e| e.to_string());
    match settled {
        Ok(Some((Msg::Taken, _))) => {}
        other => {
            return Err(format!(
            "the new hearth (pid {pid}) did not say it took this hearth's connections ({other:?})"
        ))
        }
    }
    *lock(&state.stage) = Stage::HandedOff;
    if let Some(f) = lock(&state.file).take() {
        f.remove();
    }
    info!(
        "upgrade: the new hearth (pid {pid}) serves and took {} idle upstream connection(s); \
         this hearth stops accepting, drains for up to {:?} and hands over the rest",
        relay.passed, source.grace
    );
    if !source.handle.upgrade(source.grace, &tx) {
        warn!("upgrade: a core did not take the hand-over; its connections close with it");
    }
    drop(tx);
    let _ = handed.send(HandedOff { pid });
    // Until every core has finished: each drops its sender then.
    while let Ok(e) = rx.recv() {
        relay.take(&mut ch, e, pid);
        if rx.is_empty() {
            relay.flush(&mut ch, pid);
        }
    }
    relay.flush(&mut ch, pid);
    if !relay.broken {
        if let Err(e) = ch.send(&Msg::Done, &[]) {
            debug!("upgrade: saying done to pid {pid}: {e}");
        }
    }
    info!(
        "upgrade: handed {} idle upstream connection(s) to the new hearth (pid {pid}); \
         closed {} TLS one(s){}",
        relay.passed,
        relay.closed,
        if relay.lost > 0 {
            format!(", and {} it did not take", relay.lost)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// What the cores give up, on its way to the new hearth in batches.
#[derive(Default)]
struct Relay {
    batch: Vec<PassedConn>,
    passed: usize,
    /// TLS connections the cores closed.
    closed: u64,
    /// Connections the new hearth did not take (it stopped reading).
    lost: usize,
    broken: bool,
}

impl Relay {
    fn take(&mut self, ch: &mut Channel, e: Export, pid: u32) {
        match e {
            Export::Conn(c) => self.batch.push(c),
            Export::Finished { closed, .. } => self.closed += closed,
            Export::Flushed { .. } => {}
        }
        if self.batch.len() >= MAX_FDS_PER_FRAME {
            self.flush(ch, pid);
        }
    }

    fn flush(&mut self, ch: &mut Channel, pid: u32) {
        if self.batch.is_empty() {
            return;
        }
        if !self.broken {
            match send_batch(ch, &self.batch) {
                Ok(()) => self.passed += self.batch.len(),
                Err(e) => {
                    warn!("upgrade: passing connections to the new hearth (pid {pid}): {e}; the rest close");
                    self.broken = true;
                }
            }
        }
        if self.broken {
            self.lost += self.batch.len();
        }
        // Our descriptors close here; the new hearth has its own.
        self.batch.clear();
    }
}

fn send_batch(ch: &mut Channel, batch: &[PassedConn]) -> io::Result<()> {
    let conns = batch
        .iter()
        .map(|c| ConnInfo {
            addr: c.addr,
            scheme: "http".into(),
            age_ms: c.age_ms,
            served: c.served,
            keepalive_timeout: c.hint.timeout_secs,
            keepalive_max: c.hint.max,
        })
        .collect();
    let fds: Vec<RawFd> = batch.iter().map(|c| c.sock.as_raw_fd()).collect();
    ch.send(&Msg::Conns { conns }, &fds)
}
