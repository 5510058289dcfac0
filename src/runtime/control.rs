//! Control messages to cores: a bounded crossbeam channel per core plus its `mio::Waker`.
//! Only control travels this way (shutdown, stats, budget hand-over, node health); requests
//! never do. In a binary upgrade, cores also send the connections they give up ([`Export`]) to
//! the thread that passes them to the new hearth.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use log::warn;

use crate::id::NodeId;
use crate::metrics::Counters;
use crate::runtime::generation::Shared;
use crate::runtime::io::UpHandover;
use crate::upstream::pool::KeepAliveHint;

pub const CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug)]
pub enum Control {
    /// Stop accepting, finish what is in flight for up to `grace`, close the pools, exit.
    Shutdown { grace: Duration },
    /// Send a copy of this core's counters.
    Stats(Sender<Counters>),
    /// Core `from` has requests waiting for this node's budget: hand it an idle connection.
    ShedIdle { node: NodeId, from: usize },
    /// Budget for this node was freed: retry the requests waiting for it.
    Freed(NodeId),
    /// A live, idle upstream connection handed over by another core for its waiters, with its
    /// place in the node's caps.
    Adopt(Box<UpHandover>),
    /// A new configuration generation, already validated.
    Reload(Arc<Shared>),
    /// Active health checks took this node out (close its pooled connections, skip it) or
    /// brought it back.
    NodeHealth { node: NodeId, healthy: bool },
    /// The access log file was rotated away (SIGUSR1): open the configured path afresh.
    ReopenLog,
    /// A new hearth is about to take over (binary upgrade): give the idle plain upstream
    /// connections this core's clients cannot use now to `export`, then `Export::Flushed`.
    /// Serving goes on as before; the new hearth has them before any client is sent its way.
    Export { export: Sender<Export> },
    /// A new hearth has taken over the listening sockets (binary upgrade): stop accepting and
    /// drain as for `Shutdown`, except that a client idle between requests is not closed but
    /// answered once more (with `Connection: close`); give the idle plain upstream connections
    /// this core's remaining clients cannot use to `export`, as they come free, and close the
    /// TLS ones. The core's last word on `export` is `Export::Finished`.
    Upgrade {
        grace: Duration,
        export: Sender<Export>,
    },
    /// The hearth this one replaces sends its clients this way now, and its connections follow
    /// as its clients leave it: until `until` (on the process clock), a request that finds no
    /// idle connection to a plain node waits for one rather than open one, asking the other
    /// cores for one they have idle, and a core that pools a connection gives it to a core
    /// where requests wait.
    Expect { until: u64 },
    /// The hearth this one replaced has handed over all its connections: requests still
    /// waiting ask the other cores once more, and the pools are warmed from now on (not
    /// before: that would open connections that those handed over make unneeded).
    Inherited,
}

/// An idle plain upstream connection on its way between two hearths in a binary upgrade: the
/// socket, its node's address (plain http, no TLS identity: its pool key) and what the pool
/// knows of it.
#[derive(Debug)]
pub struct PassedConn {
    pub sock: std::net::TcpStream,
    pub addr: SocketAddr,
    /// Time since it was opened.
    pub age_ms: u64,
    /// Requests it has carried.
    pub served: u64,
    /// What the upstream last said about keeping it.
    pub hint: KeepAliveHint,
}

/// What a core gives up in a binary upgrade.
#[derive(Debug)]
pub enum Export {
    Conn(PassedConn),
    /// The core has given what `Control::Export` asked for.
    Flushed {
        core: usize,
    },
    /// The core has finished: nothing more comes from it. `closed`: TLS connections it closed.
    Finished {
        core: usize,
        closed: u64,
    },
}

/// The sending half of a core's control path.
#[derive(Clone)]
pub struct Peer {
    pub tx: Sender<Control>,
    pub waker: Arc<mio::Waker>,
}

impl Peer {
    /// Sends and wakes the core. A full or closed channel gives the message back, so a sender
    /// that handed over a connection can close it and return its budget.
    pub fn send(&self, msg: Control) -> Result<(), Control> {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                warn!("control channel full, dropped {m:?}");
                return Err(m);
            }
            Err(TrySendError::Disconnected(m)) => return Err(m),
        }
        if let Err(e) = self.waker.wake() {
            warn!("waking a core failed: {e}");
        }
        Ok(())
    }
}
