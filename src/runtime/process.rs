//! What lives for the whole process, across configuration generations: the cores' control
//! peers, the count of client connections, the pool registry, which builds each generation, and
//! what was applied last ([`Applied`]: the configuration as loaded and the addresses its node
//! names have now), from which both a reload and a change of addresses build the next one.
//!
//! Pools outlive generations. A pool is identified by its `PoolKey` (address, scheme and TLS
//! identity: what makes two upstream connections interchangeable) and the `Registry` gives each
//! key a `NodeId` once, for the life of the process. Cores index their idle lists, waiters and
//! counters by that id, so a node that stays in the new configuration keeps its pooled
//! connections, whatever else changed. The registry's lock is taken only when a generation is
//! built, never per request.
//!
//! TLS: an https pool's rustls `ClientConfig` is made once, when its key is first registered,
//! and kept with the key, so its session cache survives reloads that keep the key (a changed CA
//! or client certificate is a new key, hence a new pool and a new cache). Listener
//! `ServerConfig`s are made anew with each generation, so certificates reload with the
//! configuration; connections already open keep the config they were accepted with.

use std::collections::HashMap;
use std::hash::RandomState;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use log::{error, warn};
use rustls::{ClientConfig, ServerConfig};

use crate::config::{Config, Scheme};
use crate::id::NodeId;
use crate::metrics::Counters;
use crate::resolve::names::{names_of, readdressed};
use crate::route::Router;
use crate::runtime::control::{Control, Peer};
use crate::runtime::generation::{ListenTls, PoolInfo, Shared, UpSettings, UpTls};
use crate::tls::{self, ClientIdentity};
use crate::upstream::NodeBudget;

/// What makes two upstream connections interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub scheme: Scheme,
    /// For https: SNI, verification, CA and client certificate. None for http, and for an
    /// https node whose files could not be read (such a pool never connects).
    pub tls: Option<ClientIdentity>,
}

#[derive(Debug)]
struct Entry {
    label: String,
    budget: Arc<NodeBudget>,
    /// The rustls configuration of an https pool, made once for the key.
    tls: Option<Arc<ClientConfig>>,
}

/// Every pool key ever configured, with its id, metric label and process-wide budget.
#[derive(Debug, Default)]
pub struct Registry {
    ids: HashMap<PoolKey, NodeId>,
    entries: Vec<Entry>,
    /// By listener index: the last TLS configuration made, kept for a reload whose
    /// certificate files vanished between validation and use.
    listen_tls: Vec<Option<Arc<ServerConfig>>>,
}

/// The configuration last applied, as loaded, and the addresses each of its node names has now.
/// A reload and a change of a name's addresses both go through it, under its lock, so the
/// generations they build reach the cores in the order they were made, and a reload keeps what
/// the names resolve to now rather than what they resolved to when its file was read.
#[derive(Debug, Default)]
pub struct Applied {
    /// As loaded (each name with the addresses it had then); None before the first.
    cfg: Option<Arc<Config>>,
    /// By name (without port): the addresses followed now; exactly the names of `cfg`.
    addrs: HashMap<String, Vec<IpAddr>>,
}

impl Applied {
    /// Takes `cfg` as the configuration, and returns it readdressed: names it shares with the
    /// last one keep their current addresses, new names start from those `cfg` was loaded with,
    /// and names it no longer has are forgotten.
    pub fn configure(&mut self, cfg: Config) -> Config {
        let names = names_of(&cfg);
        self.addrs.retain(|name, _| names.contains_key(name));
        for (name, ips) in names {
            self.addrs.entry(name).or_insert(ips);
        }
        let out = readdressed(&cfg, &self.addrs);
        self.cfg = Some(Arc::new(cfg));
        out
    }

    /// `name` has `ips` now (sorted, never empty): the configuration readdressed, or None when
    /// nothing changes (no node uses the name any more, or it already has these addresses).
    pub fn readdress(&mut self, name: &str, ips: &[IpAddr]) -> Option<Config> {
        let cfg = self.cfg.as_ref()?;
        let current = self.addrs.get_mut(name)?;
        if current.as_slice() == ips || ips.is_empty() {
            return None;
        }
        *current = ips.to_vec();
        Some(readdressed(cfg, &self.addrs))
    }
}

/// What lives for the whole process, across generations.
pub struct Process {
    pub peers: Vec<Peer>,
    /// Client connections open, for `max_client_connections` (touched per connection).
    pub clients_open: AtomicUsize,
    registry: Mutex<Registry>,
    /// Keys the tags of upstream SNI names (`tls::sni_tag`); one per process, because
    /// connections move between cores and pools outlive generations.
    pub sni_key: RandomState,
    /// When each cause that concerns no node (the clients' doing) was last logged as a warning.
    pub warned: crate::cause::WarnClock,
    applied: Mutex<Applied>,
}

impl Process {
    pub fn new(peers: Vec<Peer>) -> Process {
        Process {
            peers,
            clients_open: AtomicUsize::new(0),
            registry: Mutex::new(Registry::default()),
            sni_key: RandomState::new(),
            warned: crate::cause::WarnClock::default(),
            applied: Mutex::new(Applied::default()),
        }
    }

    /// What was applied last; hold it while building and sending a generation.
    pub fn applied(&self) -> MutexGuard<'_, Applied> {
        // Nothing panics while holding it; if something did, the value is still whole.
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Metric labels by pool id.
    pub fn labels(&self) -> Vec<String> {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.entries.iter().map(|e| e.label.clone()).collect()
    }

    /// Counters summed over every core, asked of each core by control message (each answers
    /// between two passes of its loop; a core that does not within 2 s is left out).
    pub fn stats(&self) -> Counters {
        let mut total = Counters::default();
        let (tx, rx) = crossbeam_channel::bounded(self.peers.len());
        for p in &self.peers {
            let _ = p.send(Control::Stats(tx.clone()));
        }
        for _ in 0..self.peers.len() {
            match rx.recv_timeout(std::time::Duration::from_secs(2)) {
                Ok(c) => total.merge(&c),
                Err(_) => break,
            }
        }
        total
    }

    /// The pool id of `key`, if it was ever configured.
    pub fn node_of(&self, key: &PoolKey) -> Option<NodeId> {
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.ids.get(key).copied()
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
                // Files were checked when the configuration was validated; one that changed
                // since is logged and leaves the pool unable to connect (502), never half-keyed.
                let mut material = u.tls.as_ref().and_then(|t| {
                    let sni = tls::sni_for(t, &u.pass_host, &n.host);
                    tls::load_client(t, sni)
                        .map_err(|e| error!("upstream {} node {}: {e}", u.name, n.host))
                        .ok()
                });
                let from_request = u
                    .tls
                    .as_ref()
                    .is_some_and(|t| tls::sni_from_request(t, &u.pass_host));
                // The node's own name, for connections made without a request.
                let node_sni = material.as_ref().and_then(|m| m.identity.sni.clone());
                if let (true, Some(m)) = (from_request, material.as_mut()) {
                    // Per-request names share a pool (connections are told apart by tag), but
                    // not with a fixed name on the same address.
                    m.identity.sni = None;
                }
                let key = PoolKey {
                    addr: n.addr,
                    scheme: u.scheme,
                    tls: material.as_ref().map(|m| m.identity.clone()),
                };
                let next = NodeId(reg.entries.len());
                let id = *reg.ids.entry(key).or_insert(next);
                if id == next {
                    let tls = material.as_ref().and_then(|m| {
                        tls::client_config(m, u.nodes.len())
                            .map_err(|e| error!("upstream {} node {}: {e}", u.name, n.host))
                            .ok()
                    });
                    reg.entries.push(Entry {
                        label: format!(
                            "upstream=\"{}\",node=\"{}\"",
                            label_value(&u.name),
                            label_value(&n.label())
                        ),
                        budget: Arc::new(NodeBudget::new(self.peers.len())),
                        tls,
                    });
                }
                if pools.len() <= id.index() {
                    pools.resize_with(id.index() + 1, || None);
                }
                // A node listed by several upstreams is one pool; the first listing names it.
                if pools[id.index()].is_none() {
                    let tls = match (&material, &reg.entries[id.index()].tls) {
                        (Some(_), Some(config)) => node_sni
                            .as_deref()
                            .and_then(|sni| tls::server_name(sni).ok().map(|name| (sni, name)))
                            .map(|(sni, name)| UpTls {
                                config: config.clone(),
                                name,
                                from_request,
                                node_tag: if from_request {
                                    tls::sni_tag(&self.sni_key, sni)
                                } else {
                                    0
                                },
                            }),
                        _ => None,
                    };
                    pools[id.index()] = Some(PoolInfo {
                        addr: n.addr,
                        host: n.host.clone(),
                        upstream: ui,
                        https: u.scheme == Scheme::Https,
                        tls,
                    });
                }
                ids.push(id);
            }
            up_nodes.push(ids);
        }
        pools.resize_with(reg.entries.len(), || None);
        let up_settings = cfg.upstreams.iter().map(UpSettings::of).collect();
        let listen_tls = listener_tls(&cfg, &mut reg.listen_tls);
        Shared {
            router: Router::new(&cfg.routes),
            up_settings,
            up_nodes,
            pools,
            listen_tls,
            cfg,
        }
    }
}

/// Makes each TLS listener's configuration. A failure (a file changed after validation) keeps
/// the previous one, or, at start, leaves a listener whose handshakes fail.
fn listener_tls(cfg: &Config, last: &mut Vec<Option<Arc<ServerConfig>>>) -> Vec<ListenTls> {
    last.resize(cfg.listen.len().max(last.len()), None);
    let mut out = Vec::with_capacity(cfg.listen.len());
    for (i, l) in cfg.listen.iter().enumerate() {
        let Some(t) = &l.tls else {
            out.push(ListenTls::Plain);
            continue;
        };
        match tls::server_config(t) {
            Ok(c) => {
                last[i] = Some(c.clone());
                out.push(ListenTls::Tls(c));
            }
            Err(e) => match &last[i] {
                Some(old) => {
                    warn!(
                        "listener {}: {e}; keeping its previous certificates",
                        l.addr
                    );
                    out.push(ListenTls::Tls(old.clone()));
                }
                None => {
                    error!("listener {}: {e}; its TLS handshakes will fail", l.addr);
                    out.push(ListenTls::Broken);
                }
            },
        }
    }
    out
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
            g2.pool(NodeId(0)).is_none(),
            "removed node has no pool in the new generation"
        );
        assert_eq!(g2.pool(NodeId(1)).map(|i| i.upstream), Some(0));
        assert_eq!(p.budgets().len(), 3);
        assert_eq!(p.labels()[1], "upstream=\"a\",node=\"127.0.0.1:9002\"");
    }

    /// A change of a name's addresses builds a generation as a reload does: the address that
    /// stays keeps its pool id (so its pooled connections), the one that goes has no pool in
    /// the new generation, and a reload afterwards keeps the addresses the name has now rather
    /// than those the file was loaded with.
    #[test]
    fn a_change_of_addresses_keeps_the_pools_of_addresses_that_stay() {
        let text = A.replace("\"127.0.0.1:9002\" = 1 }", "\"localhost:9002\" = 1 }");
        let p = Process::new(Vec::new());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let pool_of = |g: &Shared, addr: &str| {
            let addr: SocketAddr = addr.parse().unwrap();
            g.pools
                .iter()
                .position(|i| i.as_ref().is_some_and(|i| i.addr == addr))
        };
        let mut applied = p.applied();
        let first = applied.configure((*cfg(&text)).clone());
        assert!(first.upstreams[0].nodes[1..]
            .iter()
            .all(|n| n.host == "localhost:9002"));
        let two = applied
            .readdress("localhost", &[ip("10.0.0.1"), ip("10.0.0.2")])
            .expect("a change");
        let g1 = p.generation(Arc::new(two));
        assert_eq!(
            g1.up_nodes[0].len(),
            3,
            "127.0.0.1:9001 and the name's two addresses"
        );
        let kept = pool_of(&g1, "10.0.0.2:9002").expect("a pool");
        let gone = pool_of(&g1, "10.0.0.1:9002").expect("a pool");
        assert!(
            applied
                .readdress("localhost", &[ip("10.0.0.1"), ip("10.0.0.2")])
                .is_none(),
            "same set"
        );
        assert!(
            applied.readdress("elsewhere", &[ip("10.0.0.9")]).is_none(),
            "not a name of the configuration"
        );
        let moved = applied
            .readdress("localhost", &[ip("10.0.0.2"), ip("10.0.0.3")])
            .expect("a change");
        let g2 = p.generation(Arc::new(moved));
        assert_eq!(
            pool_of(&g2, "10.0.0.2:9002"),
            Some(kept),
            "the kept address keeps its pool"
        );
        assert!(
            g2.pool(NodeId(gone)).is_none(),
            "the vanished address has no pool"
        );
        assert!(pool_of(&g2, "10.0.0.3:9002").is_some_and(|id| id != gone));
        assert_eq!(
            p.labels()[kept],
            "upstream=\"a\",node=\"localhost:9002 (10.0.0.2)\"",
            "the name and the address"
        );
        // A reload of the same file keeps what the name resolves to now.
        let reloaded = applied.configure((*cfg(&text)).clone());
        let addrs: Vec<String> = reloaded.upstreams[0]
            .nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect();
        assert_eq!(addrs, ["127.0.0.1:9001", "10.0.0.2:9002", "10.0.0.3:9002"]);
    }
}
