//! Configuration generations and the process-wide pool registry.
//!
//! A `Shared` is one configuration generation as the cores read it: the config, the router, and
//! for each upstream its settings and the pool ids of its nodes. It is immutable; a reload builds
//! a new one and sends it to every core, which swaps it in. Requests already in flight are not
//! affected because an exchange copies its upstream's `UpSettings` when it starts.
//!
//! Pools outlive generations. A pool is identified by its `PoolKey` (address and scheme: what
//! makes two upstream connections interchangeable) and the `Registry` gives each key a `PoolId`
//! once, for the life of the process. Cores index their idle lists, waiters and counters by that
//! id, so a node that stays in the new configuration keeps its pooled connections, whatever else
//! changed. The registry's lock is taken only when a generation is built, never per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use crate::config::{Config, PassHost, PoolSettings, Scheme};
use crate::route::Router;
use crate::runtime::control::Peer;
use crate::upstream::pool::NodeBudget;

/// A pool's identity for the life of the process (an index into per-core pool tables).
pub type PoolId = usize;

/// What makes two upstream connections interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub scheme: Scheme,
}

#[derive(Debug)]
struct Entry {
    label: String,
    budget: Arc<NodeBudget>,
}

/// Every pool key ever configured, with its id, metric label and process-wide budget.
#[derive(Debug, Default)]
pub struct Registry {
    ids: HashMap<PoolKey, PoolId>,
    entries: Vec<Entry>,
}

/// What lives for the whole process, across generations.
pub struct Process {
    pub peers: Vec<Peer>,
    /// Client connections open, for `max_client_connections` (touched per connection).
    pub clients_open: AtomicUsize,
    registry: Mutex<Registry>,
}

impl Process {
    pub fn new(peers: Vec<Peer>) -> Process {
        Process {
            peers,
            clients_open: AtomicUsize::new(0),
            registry: Mutex::new(Registry::default()),
        }
    }

    /// Metric labels by pool id.
    pub fn labels(&self) -> Vec<String> {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.entries.iter().map(|e| e.label.clone()).collect()
    }

    /// Budgets by pool id (cores keep a copy, refreshed with each generation).
    pub fn budgets(&self) -> Vec<Arc<NodeBudget>> {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.entries.iter().map(|e| e.budget.clone()).collect()
    }

    /// Builds a generation from a validated configuration, registering new pool keys.
    pub fn generation(&self, cfg: Arc<Config>) -> Shared {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut up_nodes = Vec::with_capacity(cfg.upstreams.len());
        let mut pools: Vec<Option<PoolInfo>> = Vec::new();
        for (ui, u) in cfg.upstreams.iter().enumerate() {
            let mut ids = Vec::with_capacity(u.nodes.len());
            for n in &u.nodes {
                let key = PoolKey {
                    addr: n.addr,
                    scheme: u.scheme,
                };
                let next = reg.entries.len();
                let id = *reg.ids.entry(key).or_insert(next);
                if id == next {
                    reg.entries.push(Entry {
                        label: format!(
                            "upstream=\"{}\",node=\"{}\"",
                            label_value(&u.name),
                            label_value(&n.host)
                        ),
                        budget: Arc::new(NodeBudget::new(self.peers.len())),
                    });
                }
                if pools.len() <= id {
                    pools.resize_with(id + 1, || None);
                }
                // A node listed by several upstreams is one pool; the first listing names it.
                if pools[id].is_none() {
                    pools[id] = Some(PoolInfo {
                        addr: n.addr,
                        host: n.host.clone(),
                        upstream: ui,
                    });
                }
                ids.push(id);
            }
            up_nodes.push(ids);
        }
        pools.resize_with(reg.entries.len(), || None);
        let up_settings = cfg.upstreams.iter().map(UpSettings::of).collect();
        Shared {
            router: Router::new(&cfg.routes),
            up_settings,
            up_nodes,
            pools,
            cfg,
        }
    }
}

/// Escapes a Prometheus label value (exposition format: backslash, quote and newline).
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
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
}

/// One configuration generation.
#[derive(Debug)]
pub struct Shared {
    pub cfg: Arc<Config>,
    pub router: Router,
    /// By upstream index.
    pub up_settings: Vec<UpSettings>,
    /// By upstream index: the pool id of each node, in the config's order.
    pub up_nodes: Vec<Vec<PoolId>>,
    /// By pool id: None for pools no upstream of this generation lists.
    pub pools: Vec<Option<PoolInfo>>,
}

impl Shared {
    pub fn pool(&self, id: PoolId) -> Option<&PoolInfo> {
        self.pools.get(id).and_then(Option::as_ref)
    }

    /// The settings that govern pool `id` outside any exchange.
    pub fn settings_of_pool(&self, id: PoolId) -> Option<UpSettings> {
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
    fn of(u: &crate::config::Upstream) -> UpSettings {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Arc<Config> {
        Arc::new(Config::parse(text, "t.toml").expect("valid").0)
    }

    const A: &str = r#"
[[listen]]
addr = "127.0.0.1:0"
[upstreams.a]
nodes = { "127.0.0.1:9001" = 1, "127.0.0.1:9002" = 1 }
[upstreams.b]
nodes = { "127.0.0.1:9002" = 1 }
[[routes]]
uris = ["/*"]
upstream = "a"
"#;

    #[test]
    fn pool_ids_are_stable_across_generations_and_shared_by_address() {
        let p = Process::new(Vec::new());
        let g1 = p.generation(cfg(A));
        assert_eq!(
            g1.up_nodes,
            vec![vec![0, 1], vec![1]],
            "one pool per address"
        );
        // Node 9001 removed, 9003 added, 9002 kept: 9002 keeps its id, 9001's id is not reused.
        let b = A.replace("\"127.0.0.1:9001\" = 1, ", "").replace(
            "[upstreams.b]\nnodes = { \"127.0.0.1:9002\" = 1 }",
            "[upstreams.b]\nnodes = { \"127.0.0.1:9003\" = 1 }",
        );
        let g2 = p.generation(cfg(&b));
        assert_eq!(g2.up_nodes, vec![vec![1], vec![2]]);
        assert!(
            g2.pool(0).is_none(),
            "removed node has no pool in the new generation"
        );
        assert_eq!(g2.pool(1).map(|i| i.upstream), Some(0));
        assert_eq!(p.budgets().len(), 3);
        assert_eq!(p.labels()[1], "upstream=\"a\",node=\"127.0.0.1:9002\"");
    }
}
