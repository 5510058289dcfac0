//! The names a configuration follows, and the configuration with each name's nodes replaced by
//! the addresses the name has now. Pure functions over [`Config`].
//!
//! A node written with a name stands in a loaded configuration as one node per address, all
//! with the name as written (`Node::host`), consecutive (see `config::Node`). Readdressing keeps
//! that shape: the group of a name is replaced, where it stood, by one node per new address, each
//! with the group's port and weight, so the order of the other nodes, hence the balancers'
//! tie-breaking, is unchanged. Names are followed without their port: `api.internal:8080` and
//! `api.internal:9090` are one lookup.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, Node};

/// Every name among `cfg`'s nodes, with the addresses its nodes have in `cfg` (the first
/// listing of a name counts), sorted.
pub fn names_of(cfg: &Config) -> BTreeMap<String, Vec<IpAddr>> {
    let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for u in &cfg.upstreams {
        for group in groups(&u.nodes) {
            let first = &group[0];
            if !first.is_named() {
                continue;
            }
            out.entry(first.hostname().to_owned()).or_insert_with(|| {
                let mut ips: Vec<IpAddr> = group.iter().map(|n| n.addr.ip()).collect();
                ips.sort_unstable();
                ips.dedup();
                ips
            });
        }
    }
    out
}

/// `cfg` with the nodes of each name found in `addrs` replaced by one node per address; names
/// not in `addrs` keep the nodes they have, and so do nodes written with an address.
pub fn readdressed(cfg: &Config, addrs: &HashMap<String, Vec<IpAddr>>) -> Config {
    let mut out = cfg.clone();
    for u in &mut out.upstreams {
        let mut nodes = Vec::with_capacity(u.nodes.len());
        for group in groups(&u.nodes) {
            let first = &group[0];
            match addrs.get(first.hostname()).filter(|_| first.is_named()) {
                Some(ips) if !ips.is_empty() => nodes.extend(ips.iter().map(|&ip| Node {
                    addr: SocketAddr::new(ip, first.addr.port()),
                    host: first.host.clone(),
                    weight: first.weight,
                })),
                _ => nodes.extend_from_slice(group),
            }
        }
        u.nodes = nodes;
    }
    out
}

/// The nodes in runs of one written node each: a node written with an address alone, the
/// addresses of a name together.
fn groups(nodes: &[Node]) -> impl Iterator<Item = &[Node]> {
    nodes.chunk_by(|a, b| a.is_named() && a.host == b.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let text = r#"
[[listen]]
addr = "127.0.0.1:0"
[upstreams.u]
nodes = { "127.0.0.1:9001" = 1, "localhost:9002" = 3, "127.0.0.1:9003" = 2 }
[upstreams.v]
nodes = { "localhost:7000" = 1 }
[[routes]]
uris = ["/*"]
upstream = "u"
[[routes]]
uris = ["/v"]
upstream = "v"
"#;
        Config::parse(text, "t.toml").expect("valid").0
    }

    fn nodes(c: &Config, u: usize) -> Vec<(String, String, u32)> {
        c.upstreams[u]
            .nodes
            .iter()
            .map(|n| (n.host.clone(), n.addr.to_string(), n.weight))
            .collect()
    }

    #[test]
    fn a_name_is_replaced_in_place_by_its_addresses() {
        let c = cfg();
        let names = names_of(&c);
        assert_eq!(
            names.keys().collect::<Vec<_>>(),
            ["localhost"],
            "one lookup per name"
        );
        assert!(names["localhost"].iter().all(IpAddr::is_loopback));
        let table = HashMap::from([(
            "localhost".to_owned(),
            vec!["10.0.0.1".parse().unwrap(), "fd00::2".parse().unwrap()],
        )]);
        let r = readdressed(&c, &table);
        assert_eq!(
            nodes(&r, 0),
            [
                ("127.0.0.1:9001".into(), "127.0.0.1:9001".into(), 1),
                ("localhost:9002".into(), "10.0.0.1:9002".into(), 3),
                ("localhost:9002".into(), "[fd00::2]:9002".into(), 3),
                ("127.0.0.1:9003".into(), "127.0.0.1:9003".into(), 2),
            ]
        );
        assert_eq!(nodes(&r, 1)[0].1, "10.0.0.1:7000", "every port of the name");
        assert_eq!(r.upstreams[0].nodes[2].label(), "localhost:9002 (fd00::2)");
        assert_eq!(r.upstreams[0].nodes[0].label(), "127.0.0.1:9001");
        // Readdressing again finds the groups it made; a shorter set shrinks them.
        let fewer = HashMap::from([("localhost".to_owned(), vec!["10.0.0.3".parse().unwrap()])]);
        let r2 = readdressed(&r, &fewer);
        assert_eq!(r2.upstreams[0].nodes.len(), 3);
        assert_eq!(nodes(&r2, 0)[1].1, "10.0.0.3:9002");
        assert_eq!(
            names_of(&r2)["localhost"],
            ["10.0.0.3".parse::<IpAddr>().unwrap()]
        );
        // Names not in the table, and an empty set, leave the nodes as they are.
        assert_eq!(readdressed(&r2, &HashMap::new()), r2);
        let empty = HashMap::from([("localhost".to_owned(), Vec::new())]);
        assert_eq!(readdressed(&r2, &empty), r2);
    }
}
