//! The new hearth's side of a binary upgrade (`hearth --upgrade`): take the running hearth's
//! listening sockets ([`connect`]), start on them, say ready, and take in the idle upstream
//! connections it hands over ([`Taking::ready`]).
//!
//! Each connection is filed with a core, round-robin, as an idle connection of the pool its
//! address names (`Handle::adopt_passed`: plain http, no TLS identity), with the age and request
//! count it had, so `max_lifetime` and `keepalive_pool.requests` retire it when they would
//! have. One whose node this configuration does not have, or whose pool is at its
//! `max_connections`, is closed. Until the old hearth is done, no pool is warmed, so that no
//! connection is opened that one handed over would have made unneeded.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use log::{debug, info, warn};

use crate::runtime::control::PassedConn;
use crate::runtime::server::{Handle, ListenSet};
use crate::upgrade::socket;
use crate::upgrade::wire::{Addrs, Channel, Msg, VERSION};
use crate::upstream::pool::KeepAliveHint;

/// From the moment the old hearth sends its clients here, how long a request that finds no idle
/// connection waits for one it hands over (as its clients leave it, their connections follow)
/// rather than open one. Long enough for the old hearth's requests in flight to finish at
/// ordinary latencies; short enough that a request that waits in vain still connects well
/// within its queue timeout (1 s by default; a shorter one is not held back at all).
const EXPECT_WINDOW_MS: u64 = 250;

/// How long the running hearth has to answer hello with its sockets.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// The running hearth's sockets, taken; it serves on until [`Taking::ready`].
pub struct Taking {
    ch: Channel,
    /// The running hearth's pid.
    pub old_pid: u32,
    /// Its listening sockets, by `[[listen]]` entry of its configuration.
    pub sets: Vec<ListenSet>,
    /// Its admin listener.
    pub admin: Option<(Addrs, std::net::TcpListener)>,
}

/// Connects to the hearth running on the upgrade socket at `path` and takes its listening
/// sockets. Err says why not; the running hearth is untouched then.
pub fn connect(path: &Path) -> Result<Taking, String> {
    let shown = path.display();
    let stream =
        UnixStream::connect(path).map_err(|e| format!("no running hearth on {shown}: {e}"))?;
    socket::check_peer(&stream).map_err(|e| format!("the hearth on {shown}: {e}"))?;
    let io = |e: io::Error| format!("the upgrade socket {shown}: {e}");
    stream.set_read_timeout(Some(ANSWER_WAIT)).map_err(io)?;
    stream.set_write_timeout(Some(WRITE_WAIT)).map_err(io)?;
    let mut ch = Channel::new(stream);
    ch.send(
        &Msg::Hello {
            version: VERSION,
            pid: std::process::id(),
        },
        &[],
    )
    .map_err(io)?;
    let (msg, mut fds) = ch
        .recv()
        .map_err(io)?
        .ok_or_else(|| format!("the hearth on {shown} closed the upgrade socket"))?;
    let (old_pid, listen, admin) = match msg {
        Msg::Listeners { pid, listen, admin } => (pid, listen, admin),
        Msg::Refused { reason } => return Err(format!("the hearth on {shown} refused: {reason}")),
        other => return Err(format!("the hearth on {shown} said {other:?}")),
    };
    let want = listen.iter().map(|l| l.sockets).sum::<usize>() + usize::from(admin.is_some());
    ch.recv_more(&mut fds, want).map_err(io)?;
    if fds.len() != want {
        return Err(format!(
            "the hearth on {shown} sent {} sockets for {want}",
            fds.len()
        ));
    }
    let mut fds = fds.into_iter();
    let mut take = |n: usize| -> Vec<std::net::TcpListener> {
        fds.by_ref()
            .take(n)
            .map(std::net::TcpListener::from)
            .collect()
    };
    let sets = listen
        .iter()
        .map(|l| ListenSet {
            addr: l.addrs.addr,
            bound: l.addrs.bound,
            socks: take(l.sockets),
        })
        .collect();
    let admin = admin.map(|a| (a, take(1).remove(0)));
    Ok(Taking {
        ch,
        old_pid,
        sets,
        admin,
    })
}

impl Taking {
    /// Tells the old hearth that this one serves, so that it stops accepting and drains; then,
    /// on a thread of its own, takes in the connections it hands over, filing them with the
    /// cores of `handle`, until it is done (or gone). Then the cores may warm their pools, and
    /// `done` is dropped.
    pub fn ready(mut self, handle: Handle, done: Sender<()>) -> Result<JoinHandle<()>, String> {
        let old = self.old_pid;
        self.ch
            .send(
                &Msg::Ready {
                    pid: std::process::id(),
                },
                &[],
            )
            .map_err(|e| {
                format!("telling the old hearth (pid {old}) that this one is ready: {e}")
            })?;
        // The old hearth's drain may take its whole grace period between two batches.
        let _ = self.ch.sock().set_read_timeout(None);
        std::thread::Builder::new()
            .name("hearth-upgrade-in".into())
            .spawn(move || {
                take_in(&mut self.ch, &handle, old);
                handle.inherited_all();
                drop(done);
            })
            .map_err(|e| format!("cannot start the thread that takes connections in: {e}"))
    }
}

fn take_in(ch: &mut Channel, handle: &Handle, old: u32) {
    let (mut taken, mut closed) = (0usize, 0usize);
    let mut why_closed: Vec<&'static str> = Vec::new();
    let mut next = 0usize;
    loop {
        let (conns, fds) = match ch.recv() {
            Ok(Some((Msg::Conns { conns }, fds))) => (conns, fds),
            Ok(Some((Msg::Done, _))) => break,
            Ok(Some((Msg::Settle, _))) => {
                // The connections filed so far are in the cores' lists once each core has
                // handled its messages; then clients may come.
                handle.settle();
                handle.expect_passed(crate::clock::Clock.now_ms() + EXPECT_WINDOW_MS);
                if let Err(e) = ch.send(&Msg::Taken, &[]) {
                    warn!("upgrade: telling the old hearth (pid {old}) the connections are taken: {e}");
                    break;
                }
                continue;
            }
            Ok(Some((other, _))) => {
                warn!("upgrade: the old hearth (pid {old}) said {other:?}; taking no more from it");
                break;
            }
            Ok(None) => {
                warn!("upgrade: the old hearth (pid {old}) went away before it was done; serving with what it handed over");
                break;
            }
            Err(e) => {
                warn!("upgrade: reading from the old hearth (pid {old}): {e}; serving with what it handed over");
                break;
            }
        };
        if conns.len() != fds.len() {
            warn!(
                "upgrade: the old hearth (pid {old}) sent {} connections for {}; closing them",
                fds.len(),
                conns.len()
            );
            closed += fds.len();
            continue;
        }
        for (info, fd) in conns.into_iter().zip(fds) {
            let result = if info.scheme == "http" {
                let c = PassedConn {
                    sock: std::net::TcpStream::from(fd),
                    addr: info.addr,
                    age_ms: info.age_ms,
                    served: info.served,
                    hint: KeepAliveHint {
                        timeout_secs: info.keepalive_timeout,
                        max: info.keepalive_max,
                    },
                };
                next += 1;
                handle.adopt_passed(c, next)
            } else {
                Err("not plain http")
            };
            match result {
                Ok(()) => taken += 1,
                Err(why) => {
                    debug!("upgrade: closed a connection to {}: {why}", info.addr);
                    closed += 1;
                    if !why_closed.contains(&why) {
                        why_closed.push(why);
                    }
                }
            }
        }
    }
    if closed == 0 {
        info!("upgrade: took over {taken} idle upstream connection(s) from the old hearth (pid {old})");
    } else {
        info!(
            "upgrade: took over {taken} idle upstream connection(s) from the old hearth (pid {old}); \
             closed {closed} ({})",
            why_closed.join("; ")
        );
    }
}
