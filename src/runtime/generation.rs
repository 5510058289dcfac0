//! Configuration generations.
//!
//! A `Shared` is one configuration generation as the cores read it: the config, the router, and
//! for each upstream its settings and the pool ids of its nodes. It is immutable; a reload builds
//! a new one (`process::Process::generation`) and sends it to every core, which swaps it in.
//! Requests already in flight are not affected because an exchange copies its upstream's
//! `UpSettings` when it starts.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};

use crate::config::{Config, PassHost, PoolSettings};
use crate::id::NodeId;
use crate::route::Router;

/// What a listener speaks, in this generation.
#[derive(Debug, Clone)]
pub enum ListenTls {
    Plain,
    Tls(Arc<ServerConfig>),
    /// Configured for TLS but without usable certificates: connections are closed at accept.
    Broken,
}

/// An https pool's TLS client side: its configuration and the name it sends and verifies.
#[derive(Debug, Clone)]
pub struct UpTls {
    pub config: Arc<ClientConfig>,
    /// The name of every connection, or with `from_request` of those made without a request.
    pub name: ServerName<'static>,
    /// The SNI is each request's Host (`pass_host = "pass"`, no `tls.sni`): connections are
    /// made per name and carry the name's tag (`tls::request_sni`).
    pub from_request: bool,
    /// With `from_request`, the tag of `name`; 0 otherwise (every connection fits).
    pub node_tag: u64,
}

/// A pool as the current generation sees it.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub addr: SocketAddr,
    /// The node as written (`host:port`), for `pass_host = "node"`.
    pub host: String,
    /// The first upstream listing this node, whose settings govern connections made for
    /// waiters and warm-up.
    pub upstream: usize,
    /// The upstream asked for https.
    pub https: bool,
    /// For https: how to connect (None when its files could not be loaded: connects fail).
    pub tls: Option<UpTls>,
}

/// One configuration generation.
#[derive(Debug)]
pub struct Shared {
    pub cfg: Arc<Config>,
    pub router: Router,
    /// By upstream index.
    pub up_settings: Vec<UpSettings>,
    /// By upstream index: the pool id of each node, in the config's order.
    pub up_nodes: Vec<Vec<NodeId>>,
    /// By pool id: None for pools no upstream of this generation lists.
    pub pools: Vec<Option<PoolInfo>>,
    /// By listener index (the order of `[[listen]]`).
    pub listen_tls: Vec<ListenTls>,
}

impl Shared {
    pub fn pool(&self, id: NodeId) -> Option<&PoolInfo> {
        self.pools.get(id.index()).and_then(Option::as_ref)
    }

    /// The settings that govern pool `id` outside any exchange.
    pub fn settings_of_pool(&self, id: NodeId) -> Option<UpSettings> {
        self.pool(id).map(|p| self.up_settings[p.upstream])
    }
}

/// What an exchange needs of its upstream's configuration, copied when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpSettings {
    pub connect_ms: u64,
    pub send_ms: u64,
    pub read_ms: u64,
    pub queue_size: usize,
    pub queue_ms: u64,
    pub pool: PoolSettings,
    pub max_connections: u32,
    pub max_connecting: u32,
}

impl UpSettings {
    pub(super) fn of(u: &crate::config::Upstream) -> UpSettings {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        UpSettings {
            connect_ms: ms(u.timeout.connect),
            send_ms: ms(u.timeout.send),
            read_ms: ms(u.timeout.read),
            queue_size: u.queue.size,
            queue_ms: ms(u.queue.timeout),
            pool: u.keepalive_pool,
            max_connections: u.max_connections,
            max_connecting: u.max_connecting,
        }
    }
}

/// The Host an upstream is sent, per `pass_host`: None keeps the client's.
pub fn host_override<'a>(pass: &'a PassHost, pool: &'a PoolInfo) -> Option<&'a [u8]> {
    match pass {
        PassHost::Pass => None,
        PassHost::Node => Some(pool.host.as_bytes()),
        PassHost::Rewrite(h) => Some(h.as_bytes()),
    }
}
