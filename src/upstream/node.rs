//! Everything one core keeps about one node, in one record: its pool lists, how many
//! connections it has open and connecting, its share of the process-wide caps, its passive
//! health and recent latency, whether active checks took it out, and its counters.
//!
//! The counts here are changed only by [`super::Upstreams`], so that what it reports
//! (`open`, `connecting`, idle and waiters) is always what its connection slab holds.

use std::sync::Arc;

use crate::balance::{Latency, Passive};
use crate::metrics::NodeCounters;

use super::budget::NodeBudget;
use super::pool::NodePool;

#[derive(Debug)]
pub struct Node {
    pub(super) pool: NodePool,
    /// Connections open on this core to this node: idle, active or connecting.
    pub(super) open: u32,
    /// Of those, connects not yet completed.
    pub(super) connecting: u32,
    pub(super) budget: Arc<NodeBudget>,
    /// Passive health: failures take the node out for `fail_timeout`.
    pub health: Passive,
    /// Recent response time, for `ewma` balancing.
    pub latency: Latency,
    /// Active health checks took the node out.
    pub down: bool,
    pub counters: NodeCounters,
    /// Connections serving a request (with an owner) now, and the most at once since the last
    /// purge: the load's recent need, which purges keep.
    pub(super) in_use: usize,
    pub(super) peak_in_use: usize,
    /// When this node was last purged; None until the first interval starts.
    pub(super) purged_at: Option<u64>,
    /// The last purge kept fewer idle connections than the load had used, because of `size`;
    /// connects made in a request's path until the next purge are counted as the pool's.
    pub(super) size_limited: bool,
    /// The need of the last purge that `size` cut short (0 before any): the figure the
    /// pool-too-small advice names.
    pub(super) size_short_of: usize,
    /// When a failed TLS handshake was last logged as a warning (at most once a minute).
    pub tls_warned: u64,
}

impl Node {
    pub(super) fn new(budget: Arc<NodeBudget>) -> Node {
        Node {
            pool: NodePool::default(),
            open: 0,
            connecting: 0,
            budget,
            health: Passive::default(),
            latency: Latency::default(),
            down: false,
            counters: NodeCounters::default(),
            in_use: 0,
            peak_in_use: 0,
            purged_at: None,
            size_limited: false,
            size_short_of: 0,
            tls_warned: 0,
        }
    }

    pub fn open(&self) -> u32 {
        self.open
    }

    pub fn connecting(&self) -> u32 {
        self.connecting
    }

    pub fn idle(&self) -> usize {
        self.pool.idle_len()
    }

    pub fn waiters(&self) -> usize {
        self.pool.waiters_len()
    }

    /// Connections serving a request now.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// A request took a connection.
    pub(super) fn took(&mut self) {
        self.in_use += 1;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
    }

    /// A request let its connection go.
    pub(super) fn let_go(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
    }

    pub fn budget(&self) -> &Arc<NodeBudget> {
        &self.budget
    }

    /// Whether new requests may go to the node now: active checks have it in, and passive
    /// health has not taken it out.
    pub fn usable(&self, now: u64) -> bool {
        !self.down && self.health.usable(now)
    }

    /// The counters with the gauges filled in from the lists.
    pub fn snapshot(&self) -> NodeCounters {
        let mut c = self.counters.clone();
        c.idle_now = self.idle() as u64;
        c.open_now = u64::from(self.open);
        c.waiters_now = self.waiters() as u64;
        c.in_use_now = self.in_use as u64;
        c.in_use_peak = self.peak_in_use as u64;
        c.size_short_of = self.size_short_of as u64;
        c
    }
}
