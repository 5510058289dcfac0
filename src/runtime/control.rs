//! Control messages to cores: a bounded crossbeam channel per core plus its `mio::Waker`.
//! Only control travels this way (shutdown, stats, budget hand-over); requests never do.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use log::warn;

use crate::metrics::Counters;

pub const CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug)]
pub enum Control {
    /// Stop accepting, finish what is in flight for up to `grace`, close the pools, exit.
    Shutdown { grace: Duration },
    /// Send a copy of this core's counters.
    Stats(Sender<Counters>),
    /// A core has requests waiting for this node's budget: close one idle connection to it.
    ShedIdle(usize),
    /// Budget for this node was freed: retry the requests waiting for it.
    Freed(usize),
}

/// The sending half of a core's control path.
#[derive(Clone)]
pub struct Peer {
    pub tx: Sender<Control>,
    pub waker: Arc<mio::Waker>,
}

impl Peer {
    /// Sends and wakes the core. A full channel drops the message with a warning: every message
    /// here is either retried by its sender's timers or is advisory.
    pub fn send(&self, msg: Control) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => warn!("control channel full, dropped {m:?}"),
            Err(TrySendError::Disconnected(_)) => return,
        }
        if let Err(e) = self.waker.wake() {
            warn!("waking a core failed: {e}");
        }
    }
}
