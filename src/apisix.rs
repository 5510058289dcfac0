//! APISIX admin objects, as JSON, translated into the configuration model.
//!
//! This module owns the meaning of APISIX's route and upstream objects (the `value` of
//! `/apisix/routes/{id}` and `/apisix/upstreams/{id}`, whether it arrives through the admin API or,
//! later, from etcd) and their translation into [`config::Route`] and [`config::Upstream`]. It
//! keeps three promises:
//!
//! - Every field APISIX defines either takes effect with APISIX's meaning or is refused; nothing is
//!   silently ignored except what is informational by APISIX's own definition (`name`, `desc`,
//!   `labels`, the timestamps, an empty `plugins`, a node's `metadata`). Of the plugins, only
//!   `proxy-rewrite` is run ([`crate::proxy_rewrite`]); any other is refused by name.
//! - Every refusal names the field by its path in the JSON (`upstream.timeout.connect`,
//!   `vars[1]`, `plugins.limit-count`), so a user can find it in what they sent.
//! - Values are range-checked as the TOML file's are: a translated object is as trustworthy as a
//!   loaded file, and [`crate::dynamic`] only has to place it.
//!
//! It is a sans-io leaf apart from one thing: node names are looked up here (through the
//! configured `resolver`, else the system resolver), as the file loader does, so that a name that
//! does not resolve is refused with its path, and each address becomes a node (see
//! `config::Node`); `resolve` follows the names after that. This must not run on a core.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::balance::parse_balance;
use crate::config::{
    route_host, uri_pattern, ActiveChecks, Balance, Node, PassHost, PassiveHealth, PoolSettings,
    QueueSettings, Resolve, Route, Scheme, Upstream, UpstreamTimeouts, UpstreamTls, MAX_DURATION,
};
use crate::proxy_rewrite::{self, shown};
use crate::route::{parse_cond, Operand, QueueRank};

/// Longest accepted `id`, as APISIX's schema has it.
pub const MAX_ID_LEN: usize = 64;
/// Longest `name` and `desc`, in characters, as APISIX's schema has them.
const MAX_TEXT_CHARS: usize = 256;
/// APISIX's bound on health check counters.
const MAX_CHECK_COUNT: u64 = 254;

/// Route fields APISIX defines that hearth does not implement; refused as "not supported"
/// rather than "unknown", so the user knows the name was understood.
const ROUTE_UNSUPPORTED: &[&str] = &[
    "service_id",
    "plugin_config_id",
    "remote_addr",
    "remote_addrs",
    "filter_func",
    "script",
    "script_id",
    "timeout",
    "service_protocol",
];
const UPSTREAM_UNSUPPORTED: &[&str] = &[
    "service_name",
    "discovery_type",
    "discovery_args",
    "upstream_type",
];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// Why an object was refused: the field's path in the JSON and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApisixError {
    /// Dotted path such as `upstream.nodes."127.0.0.1:80"` or `vars[0]`; empty for the object
    /// itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ApisixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ApisixError {}

fn fail<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ApisixError> {
    Err(ApisixError {
        path: path.into(),
        message: message.into(),
    })
}

/// A route, translated, whose upstream is not yet placed in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// `upstream` is [`UNPLACED`] until [`crate::dynamic`] puts the route into a `Config`.
    pub route: Route,
    pub upstream: RouteUpstream,
}

/// The upstream index of a route that has not been placed in a configuration yet; out of range
/// on purpose, so a route that escapes placement fails validation instead of routing somewhere.
pub const UNPLACED: usize = usize::MAX;

/// Where a route's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteUpstream {
    /// `upstream`: its own upstream, named `routes/ID`.
    Inline(Box<Upstream>),
    /// `upstream_id`: an upstream object of the store.
    Id(String),
}

/// Checks an object id (from the path, the body, or an `upstream_id`) against APISIX's schema:
/// 1 to 64 characters from `[a-zA-Z0-9-_.]`. The set also keeps ids safe in a URL path, an etcd
/// key and a metric label.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!(
            "an id has 1 to {MAX_ID_LEN} characters, found {}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "an id may hold letters, digits, '-', '_' and '.', found {c:?} in {id:?}"
        ));
    }
    Ok(())
}

/// Translates the route object stored under `id`.
/// Node names are looked up with `resolve` (the file's `resolver` and `[resolve]`).
pub fn parse_route(id: &str, v: &Value, resolve: &Resolve) -> Result<RouteSpec, ApisixError> {
    let m = object(v, "")?;
    for k in m.keys() {
        match k.as_str() {
            "uri" | "uris" | "host" | "hosts" | "methods" | "priority" | "status" | "vars"
            | "upstream" | "upstream_id" | "id" | "name" | "desc" | "labels" | "create_time"
            | "update_time" | "enable_websocket" | "plugins" => {}
            k if ROUTE_UNSUPPORTED.contains(&k) => {
                return fail(k, "not supported by hearth");
            }
            k => return fail(key_path("", k), "unknown field"),
        }
    }
    informational(m, "", id)?;
    let uris = match (m.get("uri"), m.get("uris")) {
        (Some(_), Some(_)) => return fail("uris", "give uri or uris, not both"),
        (Some(u), None) => vec![uri_pattern(string(u, "uri")?).or_else(|e| fail("uri", e))?],
        (None, Some(list)) => {
            let list = array(list, "uris")?;
            if list.is_empty() {
                return fail(
                    "uris",
                    "at least one uri is required; \"/*\" matches every path",
                );
            }
            let mut uris = Vec::with_capacity(list.len());
            for (i, u) in list.iter().enumerate() {
                let at = format!("uris[{i}]");
                uris.push(uri_pattern(string(u, &at)?).or_else(|e| fail(at, e))?);
            }
            uris
        }
        (None, None) => {
            return fail(
                "",
                "a route needs \"uri\" or \"uris\", e.g. \"uris\": [\"/*\"]",
            )
        }
    };
    let hosts = match (m.get("host"), m.get("hosts")) {
        (Some(_), Some(_)) => return fail("hosts", "give host or hosts, not both"),
        (Some(h), None) => vec![route_host(string(h, "host")?).or_else(|e| fail("host", e))?],
        (None, Some(list)) => {
            let mut hosts = Vec::new();
            for (i, h) in array(list, "hosts")?.iter().enumerate() {
                let at = format!("hosts[{i}]");
                hosts.push(route_host(string(h, &at)?).or_else(|e| fail(at, e))?);
            }
            hosts
        }
        (None, None) => Vec::new(),
    };
    let mut methods = Vec::new();
    if let Some(list) = m.get("methods") {
        for (i, x) in array(list, "methods")?.iter().enumerate() {
            let at = format!("methods[{i}]");
            let name = string(x, &at)?;
            if !METHODS.contains(&name) {
                return fail(
                    at,
                    format!("expected one of {}, found {name:?}", METHODS.join(", ")),
                );
            }
            if !methods.iter().any(|m| m == name) {
                methods.push(name.to_owned());
            }
        }
    }
    let priority = match m.get("priority") {
        None => 0,
        Some(p) => match p.as_i64() {
            Some(n) => n,
            None => {
                return fail(
                    "priority",
                    format!("expected an integer, found {}", shown(p)),
                )
            }
        },
    };
    let enabled = match m.get("status") {
        None => true,
        Some(s) => match s.as_u64() {
            Some(1) => true,
            Some(0) => false,
            _ => {
                return fail(
                    "status",
                    format!("expected 1 (on) or 0 (off), found {}", shown(s)),
                )
            }
        },
    };
    let websocket = match m.get("enable_websocket") {
        None => None,
        Some(b) => match b.as_bool() {
            Some(on) => Some(on),
            None => {
                return fail(
                    "enable_websocket",
                    format!("expected true or false, found {}", shown(b)),
                )
            }
        },
    };
    let mut vars = Vec::new();
    if let Some(list) = m.get("vars") {
        for (i, cond) in array(list, "vars")?.iter().enumerate() {
            let at = format!("vars[{i}]");
            let parts = match cond {
                Value::Array(parts) => parts,
                Value::String(s) if matches!(s.as_str(), "AND" | "OR" | "!AND" | "!OR") => {
                    return fail(
                        "vars",
                        "AND/OR expressions are not supported; a list of conditions, all of \
                         which must hold, is",
                    )
                }
                other => {
                    return fail(
                        at,
                        format!(
                            "expected [variable, operator, value], found {}",
                            shown(other)
                        ),
                    )
                }
            };
            // lua-resty-expr reads a two-element condition as [variable, value] with `==`.
            let (var, op, value) = match parts.as_slice() {
                [var, value] => (var, "==", value),
                [var, op, value] => (var, string(op, &format!("{at}[1]"))?, value),
                _ => {
                    return fail(
                        at,
                        format!(
                            "expected [variable, operator, value], found {} elements",
                            parts.len()
                        ),
                    )
                }
            };
            let var = string(var, &format!("{at}[0]"))?;
            let operand = operand(value, &format!("{at}[{}]", parts.len() - 1))?;
            vars.push(parse_cond(var, op, operand).or_else(|e| fail(&at, e))?);
        }
    }
    let rewrite = match m.get("plugins") {
        None => None,
        Some(p) => proxy_rewrite::from_plugins(p)
            .map_err(|e| ApisixError {
                path: e.path_text("plugins"),
                message: e.message,
            })?
            .map(Box::new),
    };
    let upstream = match (m.get("upstream"), m.get("upstream_id")) {
        (Some(_), Some(_)) => return fail("upstream_id", "give upstream or upstream_id, not both"),
        (Some(u), None) => RouteUpstream::Inline(Box::new(parse_upstream(
            &format!("routes/{id}"),
            u,
            "upstream",
            resolve,
        )?)),
        (None, Some(uid)) => RouteUpstream::Id(id_value(uid, "upstream_id")?),
        (None, None) => {
            return fail(
                "",
                "a route needs \"upstream\" (an object) or \"upstream_id\"",
            )
        }
    };
    Ok(RouteSpec {
        route: Route {
            id: id.to_owned(),
            uris,
            hosts,
            methods,
            priority,
            enabled,
            vars,
            upstream: UNPLACED,
            websocket,
            rewrite,
            // APISIX has no queue ranks; routes from the admin API or etcd keep the default.
            queue: QueueRank::default(),
        },
        upstream,
    })
}

/// Translates an upstream object into an upstream called `name` (`upstreams/ID` or, inline in a
/// route, `routes/ID`). `at` is the object's own path (`""` or `"upstream"`), prefixed to every
/// error. A stored upstream's `id` field must match the id in `name`.
/// Node names are looked up with `resolve` (the file's `resolver` and `[resolve]`).
pub fn parse_upstream(
    name: &str,
    v: &Value,
    at: &str,
    resolve: &Resolve,
) -> Result<Upstream, ApisixError> {
    let m = object(v, at)?;
    for k in m.keys() {
        match k.as_str() {
            "nodes" | "type" | "hash_on" | "key" | "pass_host" | "upstream_host" | "scheme"
            | "timeout" | "keepalive_pool" | "retries" | "retry_timeout" | "checks" | "tls"
            | "id" | "name" | "desc" | "labels" | "create_time" | "update_time" => {}
            k if UPSTREAM_UNSUPPORTED.contains(&k) => {
                return fail(join(at, k), "not supported by hearth")
            }
            k => return fail(key_path(at, k), "unknown field"),
        }
    }
    // Inside a route the upstream's own id is informational; a stored upstream's id is checked
    // by the caller against its key.
    let own_id = if at.is_empty() {
        name.strip_prefix("upstreams/").unwrap_or(name)
    } else {
        ""
    };
    informational(m, at, own_id)?;
    let nodes = nodes(m.get("nodes"), at, resolve)?;
    let kind = match m.get("type") {
        None => "roundrobin",
        Some(t) => string(t, &join(at, "type"))?,
    };
    if !matches!(kind, "roundrobin" | "least_conn" | "chash" | "ewma") {
        return fail(
            join(at, "type"),
            format!(
                "expected \"roundrobin\", \"least_conn\", \"chash\" or \"ewma\", found {kind:?}"
            ),
        );
    }
    // APISIX's dashboard sends hash_on = "vars" whatever the type, so it is checked but only
    // used by chash.
    let hash_on = match m.get("hash_on") {
        None => None,
        Some(h) => Some(string(h, &join(at, "hash_on"))?),
    };
    match hash_on {
        None | Some("vars" | "header" | "cookie") => {}
        Some(other @ ("consumer" | "vars_combinations")) => {
            return fail(
                join(at, "hash_on"),
                format!("{other:?} is not supported; use \"vars\", \"header\" or \"cookie\""),
            )
        }
        Some(other) => {
            return fail(
                join(at, "hash_on"),
                format!("expected \"vars\", \"header\" or \"cookie\", found {other:?}"),
            )
        }
    }
    let key = match m.get("key") {
        None => None,
        Some(_) if kind != "chash" => {
            return fail(join(at, "key"), "key is only used with type \"chash\"")
        }
        Some(k) => Some(string(k, &join(at, "key"))?),
    };
    if kind == "chash" && key.is_none() {
        return fail(
            join(at, "key"),
            "type \"chash\" needs a key, e.g. \"remote_addr\"",
        );
    }
    let balance: Balance =
        parse_balance(kind, hash_on, key).or_else(|e| fail(join(at, e.field), e.message))?;
    let scheme = match m.get("scheme") {
        None => Scheme::Http,
        Some(s) => match string(s, &join(at, "scheme"))? {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return fail(
                    join(at, "scheme"),
                    format!("expected \"http\" or \"https\", found {other:?}"),
                )
            }
        },
    };
    let tls = upstream_tls(m.get("tls"), scheme, &join(at, "tls"))?;
    let pass_host = pass_host(m, at)?;
    let d = UpstreamTimeouts::default();
    let timeout = match m.get("timeout") {
        None => d,
        Some(t) => {
            let tp = join(at, "timeout");
            let t = object(t, &tp)?;
            only(t, &tp, &["connect", "send", "read"])?;
            let get = |k: &str, default: Duration| match t.get(k) {
                None => Ok(default),
                Some(v) => seconds(v, &join(&tp, k), false),
            };
            UpstreamTimeouts {
                connect: get("connect", d.connect)?,
                send: get("send", d.send)?,
                read: get("read", d.read)?,
            }
        }
    };
    let p = PoolSettings::default();
    let keepalive_pool = match m.get("keepalive_pool") {
        None => p,
        Some(k) => {
            let kp = join(at, "keepalive_pool");
            let k = object(k, &kp)?;
            only(k, &kp, &["size", "idle_timeout", "requests"])?;
            PoolSettings {
                size: match k.get("size") {
                    None => p.size,
                    Some(v) => {
                        let n = uint(v, &join(&kp, "size"), 0, u64::from(u32::MAX))?;
                        usize::try_from(n).unwrap_or(usize::MAX)
                    }
                },
                idle_timeout: match k.get("idle_timeout") {
                    None => p.idle_timeout,
                    Some(v) => seconds(v, &join(&kp, "idle_timeout"), true)?,
                },
                requests: match k.get("requests") {
                    None => p.requests,
                    Some(v) => uint(v, &join(&kp, "requests"), 1, u64::MAX)?,
                },
                ..p
            }
        }
    };
    let retries = match m.get("retries") {
        None => None,
        Some(v) => {
            let n = uint(v, &join(at, "retries"), 0, u64::from(u32::MAX))?;
            Some(u32::try_from(n).unwrap_or(u32::MAX))
        }
    };
    let retry_timeout = match m.get("retry_timeout") {
        None => Duration::ZERO,
        Some(v) => seconds(v, &join(at, "retry_timeout"), true)?,
    };
    let checks = match m.get("checks") {
        None => None,
        Some(c) => checks(c, &join(at, "checks"))?,
    };
    Ok(Upstream {
        name: name.to_owned(),
        nodes,
        scheme,
        pass_host,
        timeout,
        keepalive_pool,
        max_connections: 0,
        max_connecting: 0,
        queue: QueueSettings::default(),
        balance,
        retries,
        retry_timeout,
        passive: PassiveHealth::default(),
        checks,
        tls,
        upgrade: crate::config::default_upgrade(),
    })
}

/// `nodes`: `{"host:port": weight}` or `[{"host": .., "port": .., "weight": ..}]`.
fn nodes(v: Option<&Value>, at: &str, resolve: &Resolve) -> Result<Vec<Node>, ApisixError> {
    let np = join(at, "nodes");
    let Some(v) = v else {
        return fail(
            np,
            "at least one node is required, e.g. {\"127.0.0.1:9001\": 1}",
        );
    };
    let mut nodes: Vec<Node> = Vec::new();
    match v {
        Value::Object(map) => {
            for (host, w) in map {
                let path = key_path(&np, host);
                let weight = weight(w, &path)?;
                for addr in addresses(host, &path, resolve)? {
                    nodes.push(Node {
                        addr,
                        host: host.clone(),
                        weight,
                    });
                }
            }
        }
        Value::Array(list) => {
            for (i, n) in list.iter().enumerate() {
                let path = format!("{np}[{i}]");
                let n = object(n, &path)?;
                only(
                    n,
                    &path,
                    &["host", "port", "weight", "priority", "metadata"],
                )?;
                let Some(host) = n.get("host") else {
                    return fail(path, "missing field \"host\"");
                };
                let host = string(host, &join(&path, "host"))?;
                let Some(port) = n.get("port") else {
                    return fail(path, "missing field \"port\"");
                };
                let port = uint(port, &join(&path, "port"), 1, u64::from(u16::MAX))?;
                let Some(w) = n.get("weight") else {
                    return fail(path, "missing field \"weight\"");
                };
                let weight = weight(w, &join(&path, "weight"))?;
                if let Some(p) = n.get("priority") {
                    // Node priorities are APISIX's failover groups, which hearth lacks.
                    if p.as_i64() != Some(0) {
                        return fail(
                            join(&path, "priority"),
                            "node priorities (failover groups) are not supported; only 0",
                        );
                    }
                }
                if let Some(meta) = n.get("metadata") {
                    object(meta, &join(&path, "metadata"))?;
                }
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                if nodes.iter().any(|n| n.host == host) {
                    return fail(path, format!("{host} is listed twice"));
                }
                for addr in addresses(&host, &path, resolve)? {
                    nodes.push(Node {
                        addr,
                        host: host.clone(),
                        weight,
                    });
                }
            }
        }
        other => {
            return fail(
                np,
                format!(
                    "expected an object {{\"host:port\": weight}} or a list of \
                     {{host, port, weight}}, found {}",
                    shown(other)
                ),
            )
        }
    }
    if nodes.is_empty() {
        return fail(
            np,
            "at least one node is required, e.g. {\"127.0.0.1:9001\": 1}",
        );
    }
    Ok(nodes)
}

fn weight(v: &Value, path: &str) -> Result<u32, ApisixError> {
    let w = uint(v, path, 0, u64::from(u32::MAX))?;
    if w == 0 {
        return fail(
            path,
            "weight must be at least 1 (remove the node to take it out)",
        );
    }
    Ok(u32::try_from(w).unwrap_or(u32::MAX))
}

/// Every address a node stands for, as the file loader finds them.
fn addresses(host: &str, path: &str, resolve: &Resolve) -> Result<Vec<SocketAddr>, ApisixError> {
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !has_port {
        return fail(
            path,
            format!("expected \"host:port\" such as \"127.0.0.1:9001\", found {host:?}"),
        );
    }
    crate::resolve::net::addresses(resolve, host).or_else(|e| fail(path, e))
}

fn pass_host(m: &Map<String, Value>, at: &str) -> Result<PassHost, ApisixError> {
    let mode = match m.get("pass_host") {
        None => "pass",
        Some(p) => string(p, &join(at, "pass_host"))?,
    };
    let host = match m.get("upstream_host") {
        None => None,
        Some(h) => Some(string(h, &join(at, "upstream_host"))?),
    };
    match (mode, host) {
        ("pass", None) => Ok(PassHost::Pass),
        ("node", None) => Ok(PassHost::Node),
        ("rewrite", Some(h)) => {
            // Sent verbatim as the Host header (RFC 9110 section 7.2), so anything that could
            // break the header line is refused here.
            if h.is_empty() || h.bytes().any(|b| !b.is_ascii_graphic() || b == b'/') {
                return fail(
                    join(at, "upstream_host"),
                    format!("expected a host such as \"api.example.com\", found {h:?}"),
                );
            }
            Ok(PassHost::Rewrite(h.to_owned()))
        }
        ("rewrite", None) => fail(
            join(at, "pass_host"),
            "pass_host \"rewrite\" needs upstream_host, the Host to send",
        ),
        ("pass" | "node", Some(_)) => fail(
            join(at, "upstream_host"),
            "upstream_host is only used with pass_host \"rewrite\"",
        ),
        (other, _) => fail(
            join(at, "pass_host"),
            format!("expected \"pass\", \"node\" or \"rewrite\", found {other:?}"),
        ),
    }
}

/// `checks`: `active` only; hearth's passive health is nginx's `max_fails`/`fail_timeout`.
fn checks(v: &Value, at: &str) -> Result<Option<ActiveChecks>, ApisixError> {
    let m = object(v, at)?;
    if m.contains_key("passive") {
        return fail(
            join(at, "passive"),
            "not supported; hearth counts passive failures as nginx's max_fails/fail_timeout",
        );
    }
    only(m, at, &["active"])?;
    let Some(active) = m.get("active") else {
        return Ok(None);
    };
    let ap = join(at, "active");
    let a = object(active, &ap)?;
    for k in ["port", "req_headers", "https_verify_certificate"] {
        if a.contains_key(k) {
            return fail(join(&ap, k), "not supported by hearth");
        }
    }
    // `concurrency` bounds parallel probes in APISIX; hearth probes from one thread, so it is
    // accepted (and checked) but has nothing to bound.
    only(
        a,
        &ap,
        &[
            "type",
            "timeout",
            "http_path",
            "host",
            "healthy",
            "unhealthy",
            "concurrency",
        ],
    )?;
    match a
        .get("type")
        .map(|t| string(t, &join(&ap, "type")))
        .transpose()?
    {
        None | Some("http") => {}
        Some("https") => {
            return fail(
                join(&ap, "type"),
                "\"https\" checks come with TLS (issue 6); only \"http\" is supported now",
            )
        }
        Some(other) => {
            return fail(
                join(&ap, "type"),
                format!("expected \"http\", found {other:?}"),
            )
        }
    }
    if let Some(c) = a.get("concurrency") {
        uint(c, &join(&ap, "concurrency"), 1, u64::from(u32::MAX))?;
    }
    let timeout = match a.get("timeout") {
        None => Duration::from_secs(1),
        Some(t) => seconds(t, &join(&ap, "timeout"), false)?,
    };
    let http_path = match a.get("http_path") {
        None => "/".to_owned(),
        Some(p) => {
            let path = join(&ap, "http_path");
            let s = string(p, &path)?;
            if !s.starts_with('/') || s.bytes().any(|b| !b.is_ascii_graphic()) {
                return fail(
                    path,
                    format!("expected a path such as \"/health\", found {s:?}"),
                );
            }
            s.to_owned()
        }
    };
    let host = match a.get("host") {
        None => None,
        Some(h) => {
            let path = join(&ap, "host");
            let s = string(h, &path)?;
            if s.is_empty() || s.bytes().any(|b| !b.is_ascii_graphic() || b == b'/') {
                return fail(
                    path,
                    format!("expected a host such as \"api.example.com\", found {s:?}"),
                );
            }
            Some(s.to_owned())
        }
    };
    let mut checks = ActiveChecks {
        http_path,
        host,
        timeout,
        ..ActiveChecks::default()
    };
    if let Some(h) = a.get("healthy") {
        let hp = join(&ap, "healthy");
        let h = object(h, &hp)?;
        only(h, &hp, &["interval", "successes", "http_statuses"])?;
        if let Some(v) = h.get("interval") {
            checks.healthy_interval = seconds(v, &join(&hp, "interval"), false)?;
        }
        if let Some(v) = h.get("successes") {
            checks.healthy_successes = count(v, &join(&hp, "successes"))?;
        }
        if let Some(v) = h.get("http_statuses") {
            checks.healthy_statuses = statuses(v, &join(&hp, "http_statuses"))?;
        }
    }
    if let Some(u) = a.get("unhealthy") {
        let up = join(&ap, "unhealthy");
        let u = object(u, &up)?;
        only(
            u,
            &up,
            &[
                "interval",
                "http_failures",
                "tcp_failures",
                "timeouts",
                "http_statuses",
            ],
        )?;
        if let Some(v) = u.get("interval") {
            checks.unhealthy_interval = seconds(v, &join(&up, "interval"), false)?;
        }
        // Each kind of failure has its own threshold, as in APISIX.
        if let Some(v) = u.get("http_failures") {
            checks.unhealthy_failures = count(v, &join(&up, "http_failures"))?;
        }
        if let Some(v) = u.get("tcp_failures") {
            checks.tcp_failures = count(v, &join(&up, "tcp_failures"))?;
        }
        if let Some(v) = u.get("timeouts") {
            checks.timeouts = count(v, &join(&up, "timeouts"))?;
        }
        if let Some(v) = u.get("http_statuses") {
            checks.unhealthy_statuses = statuses(v, &join(&up, "http_statuses"))?;
        }
    }
    Ok(Some(checks))
}

/// `tls` of an https upstream: `verify` (APISIX's field; hearth verifies unless told not to, as
/// in its TOML) and `sni` (hearth's; by default the Host that `pass_host` sends). APISIX's
/// `client_cert` / `client_key` carry PEM text; mutual TLS to an upstream is configured in the
/// TOML file, which names certificate files, so they are refused here rather than ignored.
fn upstream_tls(
    v: Option<&Value>,
    scheme: Scheme,
    path: &str,
) -> Result<Option<UpstreamTls>, ApisixError> {
    if scheme != Scheme::Https {
        return match v {
            Some(_) => fail(path, "tls needs scheme \"https\""),
            None => Ok(None),
        };
    }
    let mut tls = UpstreamTls::default();
    let Some(v) = v else { return Ok(Some(tls)) };
    let m = object(v, path)?;
    for k in ["client_cert", "client_key", "client_cert_id"] {
        if m.contains_key(k) {
            return fail(
                join(path, k),
                "mutual TLS to an upstream is configured in the TOML file (tls.client_cert)",
            );
        }
    }
    only(m, path, &["verify", "sni"])?;
    if let Some(b) = m.get("verify") {
        tls.verify = b.as_bool().ok_or_else(|| ApisixError {
            path: join(path, "verify"),
            message: "expected true or false".into(),
        })?;
    }
    if let Some(s) = m.get("sni") {
        let p = join(path, "sni");
        let name = string(s, &p)?;
        crate::tls::server_name(name).or_else(|e| fail(&p, e))?;
        tls.sni = Some(name.to_owned());
    }
    Ok(Some(tls))
}

fn count(v: &Value, path: &str) -> Result<u32, ApisixError> {
    let n = uint(v, path, 1, MAX_CHECK_COUNT)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn statuses(v: &Value, path: &str) -> Result<Vec<u16>, ApisixError> {
    let list = array(v, path)?;
    if list.is_empty() {
        return fail(path, "at least one status is required");
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let n = uint(s, &format!("{path}[{i}]"), 200, 599)?;
        out.push(u16::try_from(n).unwrap_or(599));
    }
    Ok(out)
}

/// `id`, `name`, `desc`, `labels`, `create_time`, `update_time`: carried, never acted on, but
/// typed as APISIX types them.
fn informational(m: &Map<String, Value>, at: &str, expected_id: &str) -> Result<(), ApisixError> {
    if let Some(v) = m.get("id") {
        let path = join(at, "id");
        let id = id_value(v, &path)?;
        if !expected_id.is_empty() && id != expected_id {
            return fail(
                path,
                format!("{id:?} does not match the id in the key, {expected_id:?}"),
            );
        }
    }
    for k in ["name", "desc"] {
        if let Some(v) = m.get(k) {
            let path = join(at, k);
            let s = string(v, &path)?;
            if s.chars().count() > MAX_TEXT_CHARS {
                return fail(path, format!("at most {MAX_TEXT_CHARS} characters"));
            }
        }
    }
    if let Some(v) = m.get("labels") {
        let path = join(at, "labels");
        for (k, l) in object(v, &path)? {
            string(l, &key_path(&path, k))?;
        }
    }
    for k in ["create_time", "update_time"] {
        if let Some(v) = m.get(k) {
            uint(v, &join(at, k), 0, u64::MAX)?;
        }
    }
    Ok(())
}

/// An id as APISIX accepts it: a string or a non-negative integer, read as its digits.
fn id_value(v: &Value, path: &str) -> Result<String, ApisixError> {
    let id = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        other => {
            return fail(
                path,
                format!("expected a string or an integer, found {}", shown(other)),
            )
        }
    };
    check_id(&id).or_else(|e| fail(path, e))?;
    Ok(id)
}

fn operand(v: &Value, path: &str) -> Result<Operand, ApisixError> {
    match v {
        Value::String(s) => Ok(Operand::Str(s.clone())),
        Value::Number(n) => match n.as_f64() {
            Some(f) => Ok(Operand::Num(f)),
            None => fail(path, format!("{n} is not a usable number")),
        },
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => list.push(s.clone()),
                    Value::Number(n) => list.push(n.to_string()),
                    other => {
                        return fail(
                            format!("{path}[{i}]"),
                            format!("expected a string or a number, found {}", shown(other)),
                        )
                    }
                }
            }
            Ok(Operand::List(list))
        }
        other => fail(
            path,
            format!(
                "expected a string, a number or a list, found {}",
                shown(other)
            ),
        ),
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ApisixError> {
    match v {
        Value::Object(m) => Ok(m),
        other => fail(path, format!("expected an object, found {}", shown(other))),
    }
}

fn array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, ApisixError> {
    match v {
        Value::Array(a) => Ok(a),
        other => fail(path, format!("expected a list, found {}", shown(other))),
    }
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, ApisixError> {
    match v {
        Value::String(s) => Ok(s),
        other => fail(path, format!("expected a string, found {}", shown(other))),
    }
}

fn uint(v: &Value, path: &str, min: u64, max: u64) -> Result<u64, ApisixError> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == u64::MAX => fail(
            path,
            format!("expected an integer of at least {min}, found {}", shown(v)),
        ),
        _ => fail(
            path,
            format!(
                "expected an integer from {min} to {max}, found {}",
                shown(v)
            ),
        ),
    }
}

/// Seconds as APISIX writes them: a number, possibly fractional (`0.5`), at most
/// [`MAX_DURATION`]. Zero only where `zero_ok` (it means "off" there); otherwise at least 1 ms,
/// the runtime's resolution, so a tiny value cannot round down to "no time at all".
fn seconds(v: &Value, path: &str, zero_ok: bool) -> Result<Duration, ApisixError> {
    let Some(s) = v.as_f64().filter(|s| s.is_finite()) else {
        return fail(
            path,
            format!("expected a number of seconds, found {}", shown(v)),
        );
    };
    if s < 0.0 {
        return fail(path, format!("{s} is negative; durations cannot be"));
    }
    if s == 0.0 && zero_ok {
        return Ok(Duration::ZERO);
    }
    if s < 0.001 {
        return fail(
            path,
            format!("{s} is below the shortest accepted duration, 0.001 (1 ms)"),
        );
    }
    match Duration::try_from_secs_f64(s) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => fail(
            path,
            format!("{s} seconds is longer than the longest accepted duration (365 days)"),
        ),
    }
}

/// Refuses any key of `m` outside `allowed`.
fn only(m: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), ApisixError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => fail(key_path(at, k), "unknown field"),
        None => Ok(()),
    }
}

/// `prefix.key` for keys known to be plain words.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `prefix.key`, quoting a key that is not a plain word (`nodes."127.0.0.1:80"`), so the path
/// reads back unambiguously.
fn key_path(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        join(prefix, key)
    } else {
        join(prefix, &format!("{key:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostPattern, UriPattern};
    use crate::route::{Op, Var};
    use serde_json::json;

    /// The route of issue 5, verbatim apart from its node.
    pub(crate) const ISSUE_ROUTE: &str = include_str!("../tests/data/issue5_route.json");

    fn route(v: Value) -> Result<RouteSpec, ApisixError> {
        parse_route("r1", &v, &Resolve::default())
    }

    #[test]
    fn the_issue_route_is_accepted_verbatim() {
        let v: Value = serde_json::from_str(ISSUE_ROUTE).unwrap();
        let spec = parse_route("00000000000000000956", &v, &Resolve::default()).unwrap();
        let r = &spec.route;
        assert_eq!(r.id, "00000000000000000956");
        assert_eq!(r.uris, [UriPattern::Prefix("/pki/".into())]);
        assert!(r.enabled && r.hosts.is_empty() && r.methods.is_empty());
        assert_eq!(r.priority, 0);
        assert_eq!(r.upstream, UNPLACED);
        assert_eq!(r.vars.len(), 2);
        assert_eq!(
            r.vars[0].var,
            Var::Header("x-sw-authorization-tenantcode".into())
        );
        assert_eq!(r.vars[0].op, Op::Eq("tenant".into()));
        assert_eq!(r.vars[1].op, Op::In(vec!["".into(), "testapp".into()]));
        let RouteUpstream::Inline(u) = &spec.upstream else {
            panic!("inline upstream expected")
        };
        assert_eq!(u.name, "routes/00000000000000000956");
        assert_eq!(u.nodes.len(), 1);
        assert_eq!(u.nodes[0].host, "127.0.0.1:20001");
        assert_eq!(u.nodes[0].weight, 100);
        assert_eq!(u.pass_host, PassHost::Node);
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!(u.timeout.connect, Duration::from_secs(180));
        assert_eq!(u.keepalive_pool.size, 320);
        assert_eq!(u.keepalive_pool.requests, 1000);
        assert_eq!(u.keepalive_pool.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn every_upstream_field_is_read() {
        let v = json!({
            "nodes": [{"host": "127.0.0.1", "port": 9001, "weight": 3, "priority": 0,
                       "metadata": {"zone": "a"}},
                      {"host": "::1", "port": 9002, "weight": 1}],
            "type": "chash", "hash_on": "header", "key": "X_User",
            "pass_host": "rewrite", "upstream_host": "api.example.com", "scheme": "http",
            "timeout": {"connect": 0.5, "send": 2, "read": 3.25},
            "keepalive_pool": {"size": 0, "idle_timeout": 0, "requests": 7},
            "retries": 2, "retry_timeout": 1.5,
            "checks": {"active": {"type": "http", "timeout": 2, "http_path": "/health",
                "host": "probe.example", "concurrency": 10,
                "healthy": {"interval": 3, "successes": 4, "http_statuses": [200]},
                "unhealthy": {"interval": 1, "http_failures": 3, "tcp_failures": 5,
                              "timeouts": 1, "http_statuses": [500, 503]}}},
            "id": "u1", "name": "n", "desc": "d", "labels": {"k": "v"},
            "create_time": 1, "update_time": 2
        });
        let u = parse_upstream("upstreams/u1", &v, "", &Resolve::default()).unwrap();
        let nodes: Vec<_> = u
            .nodes
            .iter()
            .map(|n| (n.host.as_str(), n.weight))
            .collect();
        assert_eq!(nodes, [("127.0.0.1:9001", 3), ("[::1]:9002", 1)]);
        assert_eq!(
            u.balance,
            Balance::Chash {
                key: Var::Header("x-user".into())
            }
        );
        assert_eq!(u.pass_host, PassHost::Rewrite("api.example.com".into()));
        assert_eq!(u.timeout.connect, Duration::from_millis(500));
        assert_eq!(u.timeout.read, Duration::from_millis(3250));
        assert_eq!((u.keepalive_pool.size, u.keepalive_pool.requests), (0, 7));
        assert_eq!(u.keepalive_pool.idle_timeout, Duration::ZERO);
        assert_eq!(u.retries, Some(2));
        assert_eq!(u.retry_timeout, Duration::from_millis(1500));
        assert_eq!(
            u.checks,
            Some(ActiveChecks {
                http_path: "/health".into(),
                host: Some("probe.example".into()),
                timeout: Duration::from_secs(2),
                healthy_interval: Duration::from_secs(3),
                healthy_successes: 4,
                healthy_statuses: vec![200],
                unhealthy_interval: Duration::from_secs(1),
                unhealthy_failures: 3,
                unhealthy_statuses: vec![500, 503],
                tcp_failures: 5,
                timeouts: 1,
            })
        );
    }

    #[test]
    fn https_upstreams_verify_unless_told_not_to() {
        let u = parse_upstream(
            "upstreams/s",
            &json!({"nodes": {"127.0.0.1:443": 1}, "scheme": "https"}),
            "",
            &Resolve::default(),
        )
        .unwrap();
        assert_eq!(u.scheme, Scheme::Https);
        assert_eq!(u.tls, Some(UpstreamTls::default()));
        assert!(u.tls.unwrap().verify);
        let u = parse_upstream(
            "upstreams/s",
            &json!({"nodes": {"127.0.0.1:443": 1}, "scheme": "https",
                    "tls": {"verify": false, "sni": "api.example.com"}}),
            "",
            &Resolve::default(),
        )
        .unwrap();
        let tls = u.tls.unwrap();
        assert_eq!(
            (tls.verify, tls.sni.as_deref()),
            (false, Some("api.example.com"))
        );
    }

    #[test]
    fn defaults_when_fields_are_omitted() {
        let u = parse_upstream(
            "upstreams/x",
            &json!({"nodes": {"127.0.0.1:1": 1}}),
            "",
            &Resolve::default(),
        )
        .unwrap();
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!(u.pass_host, PassHost::Pass);
        assert_eq!(u.timeout, UpstreamTimeouts::default());
        assert_eq!(u.keepalive_pool, PoolSettings::default());
        assert_eq!(
            (u.retries, u.retry_timeout, u.checks),
            (None, Duration::ZERO, None)
        );
        let c = parse_upstream(
            "upstreams/x",
            &json!({"nodes": {"127.0.0.1:1": 1}, "checks": {"active": {}}}),
            "",
            &Resolve::default(),
        )
        .unwrap()
        .checks
        .unwrap();
        assert_eq!(
            (
                c.http_path.as_str(),
                c.healthy_successes,
                c.unhealthy_failures
            ),
            ("/", 2, 2)
        );
        assert_eq!(c.healthy_statuses, [200, 302]);
    }

    #[test]
    fn route_fields() {
        let spec = route(json!({
            "uri": "/a", "host": "*.Example.com", "methods": ["GET", "POST", "GET"],
            "priority": -3, "status": 0, "upstream_id": 7,
            "vars": [["arg_x", "5"], ["http_a", "!~~", "^b"]]
        }))
        .unwrap();
        let r = spec.route;
        assert_eq!(r.uris, [UriPattern::Exact("/a".into())]);
        assert_eq!(r.hosts, [HostPattern::Wildcard(".example.com".into())]);
        assert_eq!(r.methods, ["GET", "POST"]);
        assert_eq!((r.priority, r.enabled), (-3, false));
        assert_eq!(r.vars[0].op, Op::Eq("5".into()));
        assert!(r.vars[1].negate);
        assert_eq!(spec.upstream, RouteUpstream::Id("7".into()));
    }

    #[test]
    fn proxy_rewrite_is_read() {
        let spec = route(json!({
            "uri": "/a/*", "upstream_id": "u",
            "plugins": {"proxy-rewrite": {"regex_uri": ["^/a/(.*)", "/$1"], "method": "PUT"}}
        }))
        .unwrap();
        let r = spec.route.rewrite.expect("proxy-rewrite");
        assert_eq!(r.regex_uri[0].pattern, "^/a/(.*)");
        assert_eq!(r.method.map(|m| m.name), Some("PUT".to_owned()));
        let spec = route(json!({"uri": "/a", "upstream_id": "u", "plugins": {}})).unwrap();
        assert!(
            spec.route.rewrite.is_none(),
            "an empty plugins object is nothing"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let up = json!({"nodes": {"127.0.0.1:1": 1}});
        let with = |extra: Value| {
            let mut v = json!({"uris": ["/*"], "upstream": up.clone()});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        let with_up = |extra: Value| {
            let mut u = up.clone();
            for (k, x) in extra.as_object().unwrap() {
                u[k] = x.clone();
            }
            with(json!({ "upstream": u }))
        };
        let table: Vec<(Value, &str, &str)> = vec![
            (
                with(json!({"plugins": {"limit-count": {}}})),
                "plugins.limit-count",
                "plugins are not supported, except proxy-rewrite",
            ),
            (
                with(json!({"plugins": []})),
                "plugins",
                "expected an object",
            ),
            (
                with(json!({"plugins": {"proxy-rewrite": {"headers": {"set": {"Host": "x"}}}}})),
                "plugins.proxy-rewrite.headers.set.Host",
                "set with `host`",
            ),
            (
                with(json!({"plugins": {"proxy-rewrite": {"uri": "/a"}, "cors": {}}})),
                "plugins.cors",
                "plugins are not supported, except proxy-rewrite",
            ),
            (with(json!({"foo": 1})), "foo", "unknown field"),
            (
                with(json!({"service_id": "1"})),
                "service_id",
                "not supported",
            ),
            (with(json!({"uri": "/x"})), "uris", "not both"),
            (with(json!({"uris": []})), "uris", "at least one uri"),
            (with(json!({"uris": ["x"]})), "uris[0]", "must start with"),
            (
                with(json!({"hosts": ["a:80"]})),
                "hosts[0]",
                "without the port",
            ),
            (
                with(json!({"methods": ["get"]})),
                "methods[0]",
                "expected one of",
            ),
            (
                with(json!({"priority": 1.5})),
                "priority",
                "expected an integer",
            ),
            (
                with(json!({"status": 2})),
                "status",
                "expected 1 (on) or 0 (off)",
            ),
            (
                with(json!({"vars": [["http_a", "=~", "x"]]})),
                "vars[0]",
                "unknown operator",
            ),
            (
                with(json!({"vars": [["nope", "==", "x"]]})),
                "vars[0]",
                "unknown variable",
            ),
            (
                with(json!({"vars": [["http_a", "IN", "x"]]})),
                "vars[0]",
                "takes a list",
            ),
            (
                with(json!({"vars": [["http_a", "==", "x", 1]]})),
                "vars[0]",
                "4 elements",
            ),
            (with(json!({"vars": ["OR", ["a", "b"]]})), "vars", "AND/OR"),
            (
                with(json!({"vars": [["http_a", "==", true]]})),
                "vars[0][2]",
                "expected a string",
            ),
            (with(json!({"upstream_id": "1"})), "upstream_id", "not both"),
            (with(json!({"id": "other"})), "id", "does not match"),
            (with(json!({"name": 5})), "name", "expected a string"),
            (
                with(json!({"labels": {"a": 1}})),
                "labels.a",
                "expected a string",
            ),
            (
                with(json!({"create_time": -1})),
                "create_time",
                "at least 0",
            ),
            (json!({"upstream": up.clone()}), "", "needs \"uri\""),
            (json!({"uris": ["/"]}), "", "needs \"upstream\""),
            (json!([1]), "", "expected an object"),
            (with_up(json!({"foo": 1})), "upstream.foo", "unknown field"),
            (with_up(json!({"tls": {}})), "upstream.tls", "needs scheme"),
            (
                with_up(json!({"scheme": "https", "tls": {"client_cert": "PEM"}})),
                "upstream.tls.client_cert",
                "TOML",
            ),
            (
                with_up(json!({"nodes": {}})),
                "upstream.nodes",
                "at least one node",
            ),
            (
                with_up(json!({"nodes": {"127.0.0.1:1": 0}})),
                "upstream.nodes.\"127.0.0.1:1\"",
                "at least 1",
            ),
            (
                with_up(json!({"nodes": {"127.0.0.1": 1}})),
                "upstream.nodes.\"127.0.0.1\"",
                "host:port",
            ),
            (
                with_up(json!({"nodes": [{"host": "127.0.0.1", "weight": 1}]})),
                "upstream.nodes[0]",
                "missing field \"port\"",
            ),
            (
                with_up(json!({"nodes": [{"host": "127.0.0.1", "port": 1, "weight": 1, "x": 1}]})),
                "upstream.nodes[0].x",
                "unknown field",
            ),
            (
                with_up(json!({"nodes": [{"host": "127.0.0.1", "port": 70000, "weight": 1}]})),
                "upstream.nodes[0].port",
                "from 1 to 65535",
            ),
            (
                with_up(
                    json!({"nodes": [{"host": "127.0.0.1", "port": 1, "weight": 1, "priority": 1}]}),
                ),
                "upstream.nodes[0].priority",
                "failover",
            ),
            (
                with_up(json!({"nodes": "x"})),
                "upstream.nodes",
                "expected an object",
            ),
            (
                with_up(json!({"type": "random"})),
                "upstream.type",
                "expected \"roundrobin\"",
            ),
            (
                with_up(json!({"type": "chash"})),
                "upstream.key",
                "needs a key",
            ),
            (
                with_up(json!({"type": "chash", "key": "bogus"})),
                "upstream.key",
                "unknown variable",
            ),
            (
                with_up(json!({"key": "remote_addr"})),
                "upstream.key",
                "only used with type \"chash\"",
            ),
            (
                with_up(json!({"hash_on": "consumer"})),
                "upstream.hash_on",
                "not supported",
            ),
            (
                with_up(json!({"hash_on": "x"})),
                "upstream.hash_on",
                "expected \"vars\"",
            ),
            (
                with_up(json!({"scheme": "grpc"})),
                "upstream.scheme",
                "expected \"http\" or \"https\"",
            ),
            (
                with_up(json!({"pass_host": "rewrite"})),
                "upstream.pass_host",
                "needs upstream_host",
            ),
            (
                with_up(json!({"upstream_host": "a"})),
                "upstream.upstream_host",
                "only used with",
            ),
            (
                with_up(json!({"pass_host": "keep"})),
                "upstream.pass_host",
                "expected \"pass\"",
            ),
            (
                with_up(json!({"timeout": {"connect": 0}})),
                "upstream.timeout.connect",
                "shortest",
            ),
            (
                with_up(json!({"timeout": {"connect": -1}})),
                "upstream.timeout.connect",
                "negative",
            ),
            (
                with_up(json!({"timeout": {"read": 1e12}})),
                "upstream.timeout.read",
                "longest",
            ),
            (
                with_up(json!({"timeout": {"read": "5s"}})),
                "upstream.timeout.read",
                "number of seconds",
            ),
            (
                with_up(json!({"timeout": {"idle": 1}})),
                "upstream.timeout.idle",
                "unknown field",
            ),
            (
                with_up(json!({"keepalive_pool": {"requests": 0}})),
                "upstream.keepalive_pool.requests",
                "at least 1",
            ),
            (
                with_up(json!({"keepalive_pool": {"size": -1}})),
                "upstream.keepalive_pool.size",
                "from 0",
            ),
            (
                with_up(json!({"retries": -1})),
                "upstream.retries",
                "from 0",
            ),
            (
                with_up(json!({"checks": {"passive": {}}})),
                "upstream.checks.passive",
                "not supported",
            ),
            (
                with_up(json!({"checks": {"active": {"type": "tcp"}}})),
                "upstream.checks.active.type",
                "expected \"http\"",
            ),
            (
                with_up(json!({"checks": {"active": {"port": 1}}})),
                "upstream.checks.active.port",
                "not supported",
            ),
            (
                with_up(json!({"checks": {"active": {"http_path": "x"}}})),
                "upstream.checks.active.http_path",
                "a path",
            ),
            (
                with_up(json!({"checks": {"active": {"healthy": {"successes": 0}}}})),
                "upstream.checks.active.healthy.successes",
                "from 1 to 254",
            ),
            (
                with_up(json!({"checks": {"active": {"unhealthy": {"http_statuses": [100]}}}})),
                "upstream.checks.active.unhealthy.http_statuses[0]",
                "from 200 to 599",
            ),
            (
                with_up(json!({"checks": {"active": {"unhealthy": {"fails": 1}}}})),
                "upstream.checks.active.unhealthy.fails",
                "unknown field",
            ),
        ];
        for (v, path, want) in table {
            let e = route(v.clone()).unwrap_err();
            assert_eq!(e.path, path, "{v} -> {e}");
            assert!(e.message.contains(want), "{v} -> {e}");
        }
    }

    #[test]
    fn stored_upstream_ids_must_match_their_key() {
        let v = json!({"id": "b", "nodes": {"127.0.0.1:1": 1}});
        let e = parse_upstream("upstreams/a", &v, "", &Resolve::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "id: \"b\" does not match the id in the key, \"a\""
        );
        assert!(parse_upstream("upstreams/b", &v, "", &Resolve::default()).is_ok());
    }

    #[test]
    fn ids() {
        for ok in ["1", "00000000000000000956", "a-b_c.d"] {
            assert_eq!(check_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
