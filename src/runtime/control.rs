//! Control messages to cores: a bounded crossbeam channel per core plus its `mio::Waker`.
//! Only control travels this way (shutdown, stats, budget hand-over, node health); requests
//! never do.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use log::warn;

use crate::id::NodeId;
use crate::metrics::Counters;
use crate::runtime::generation::Shared;
use crate::runtime::io::UpHandover;

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
