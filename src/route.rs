//! Route matching as APISIX does it: which route, and so which upstream, serves a request.
//!
//! A route matches when it is enabled, one of its `uris` matches the path (the target without
//! its query), its `hosts` list is empty or names the request's host (without the port, ignoring
//! ASCII case), its `methods` list is empty or names the method, and every one of its `vars`
//! conditions holds. Among matching routes the ranking is, in order: a route whose exact host
//! matched beats one whose wildcard matched (the longer wildcard first), which beats a route
//! without hosts (APISIX's default `radixtree_host_uri` router); then the higher `priority`; then
//! an exact uri over a prefix; then the longer uri; then the earlier route.
//!
//! [`Router`] keeps an index so that a match never scans every route: routes are bucketed by
//! host (exact names in a hash map, wildcards in a hash map by suffix, hostless apart), each bucket
//! is split into levels by priority (usually one), and each level holds its exact paths in a hash
//! map and its prefixes in a byte trie walked once along the path. Every candidate list is sorted
//! by the ranking, so the first candidate whose conditions hold wins.
//!
//! Invariants: the router is immutable once built and shared by every core; `find` touches no
//! lock, atomic or heap allocation (the host is lowercased and the client address formatted into
//! buffers on the stack), with one exception documented on [`Op::Regex`].
//!
//! What a route is ([`Route`], with its [`UriPattern`]s and [`HostPattern`]s) and the grammar of
//! its patterns ([`uri_pattern`], [`route_host`]) and conditions ([`parse_cond`]) live here, below
//! the configuration: `config` validates a file's routes with these functions and re-exports the
//! types, so `config::Route` and `route::Route` are one type. The variables conditions read are
//! defined by `vars` and re-exported here.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::proxy_rewrite::ProxyRewrite;
use crate::vars::split_target;
pub use crate::vars::{parse_var, Request, Var, Vars, MAX_HOST_LEN};

/// The methods a route may name, as APISIX accepts them. Each has a bit in a route's method set.
pub const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// The bit of a method in a route's method set; 0 for a method not in [`METHODS`]. Methods are
/// case-sensitive (RFC 9110 section 9.1), so `get` is not `GET`.
fn method_bit(method: &[u8]) -> u16 {
    METHODS
        .iter()
        .position(|m| m.as_bytes() == method)
        .map_or(0, |i| 1 << i)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `id` in the file or the admin API; in the file it defaults to `file-N`, N the route's
    /// 1-based position, so file routes do not take the short ids ("1", "2") that APISIX users
    /// give the routes they PUT through the admin API or etcd. Unique within a configuration.
    pub id: String,
    /// Never empty.
    pub uris: Vec<UriPattern>,
    /// Empty means any host.
    pub hosts: Vec<HostPattern>,
    /// Upper-case method names (`GET`, `POST`, ...); empty means any method.
    pub methods: Vec<String>,
    /// Higher wins; among equal priorities the longest uri match wins.
    pub priority: i64,
    /// APISIX `status`: false (`status = 0`) disables the route without removing it.
    pub enabled: bool,
    /// APISIX `vars`: every condition must hold.
    pub vars: Vec<Cond>,
    /// Index into [`Config::upstreams`](crate::config::Config::upstreams).
    pub upstream: usize,
    /// APISIX `enable_websocket`: when given, whether a WebSocket upgrade may pass this route,
    /// whatever the upstream's `upgrade` list says of websocket.
    pub websocket: Option<bool>,
    /// APISIX `plugins.proxy-rewrite`: what the route changes in a request on its way upstream.
    /// Boxed, as most routes have none.
    pub rewrite: Option<Box<ProxyRewrite>>,
    /// Where the route's requests stand in a node's queue when its caps are full.
    pub queue: QueueRank,
}

/// A route's rank in the queue of a capped node (`queue_class`, `queue_offset` in the file):
/// requests of a lower class are served first, and within a class a request queues as if it
/// had come `offset_ms` later than it did. The default is plain first come first served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueRank {
    pub class: i16,
    pub offset_ms: u32,
}

/// How a route matches the request's host (compared without the port, ignoring ASCII case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Lowercased host name: `api.example.com`.
    Exact(String),
    /// `*.example.com` stored as `.example.com` (lowercased): any host ending in it, with at
    /// least one character before the dot.
    Wildcard(String),
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriPattern {
    /// The path must equal this.
    Exact(String),
    /// The path must start with this (`"/api/*"` is `Prefix("/api/")`, `"/api*"` is
    /// `Prefix("/api")`).
    Prefix(String),
}

/// A route uri as APISIX writes it: `"/x/*"` is every path under `/x/`, `"/x*"` every path
/// starting with `/x` (so `"/*"` is every path), and anything else must match exactly.
pub fn uri_pattern(uri: &str) -> Result<UriPattern, String> {
    if !uri.starts_with('/') {
        return Err(format!("must start with \"/\", found {uri:?}"));
    }
    // Request targets are visible ASCII (RFC 9112 section 3.2 via RFC 3986), so a pattern with
    // anything else could never match.
    if uri.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{uri:?} contains a space or a non-ASCII character; percent-encode it"
        ));
    }
    // APISIX's radixtree reads `/:name` as a parameter; matching it literally would silently
    // route differently, so it is refused rather than misread.
    if uri.contains("/:") {
        return Err(format!(
            "{uri:?}: path parameters (\"/:name\") are not supported; use a prefix such as \"/user/*\""
        ));
    }
    match uri.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => Ok(UriPattern::Prefix(prefix.to_owned())),
        _ if uri.contains('*') => Err(format!(
            "{uri:?}: '*' is only allowed at the end, e.g. \"/api/*\" or \"/api*\""
        )),
        _ => Ok(UriPattern::Exact(uri.to_owned())),
    }
}

/// Hosts are compared to the request's Host without its port and ignoring case (RFC 9110
/// section 4.2.3: the host is case-insensitive), so they are stored lowercased and portless.
/// `*.example.com` is a wildcard for any name ending in `.example.com`.
pub fn route_host(host: &str) -> Result<HostPattern, String> {
    if host.is_empty() || host.bytes().any(|b| !b.is_ascii_graphic() || b == b'/') {
        return Err(format!(
            "expected a host name such as \"example.com\", found {host:?}"
        ));
    }
    // A longer name could never match: the router ignores Host values past this length.
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "{} bytes is longer than any host name ({} at most)",
            host.len(),
            MAX_HOST_LEN
        ));
    }
    let has_port = if host.starts_with('[') {
        !host.ends_with(']')
    } else {
        host.contains(':')
    };
    if has_port {
        return Err(format!(
            "{host:?}: hosts are matched without the port; leave the port out"
        ));
    }
    let host = host.to_ascii_lowercase();
    match host.strip_prefix('*') {
        Some(rest) if rest.starts_with('.') && rest.len() > 1 && !rest.contains('*') => {
            Ok(HostPattern::Wildcard(rest.into()))
        }
        _ if host.contains('*') => Err(format!(
            "{host:?}: '*' is only allowed as a leading \"*.\", e.g. \"*.example.com\""
        )),
        _ => Ok(HostPattern::Exact(host)),
    }
}

/// One APISIX `vars` condition: `[variable, operator, value]`, with `!` before the operator
/// negating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub var: Var,
    pub negate: bool,
    pub op: Op,
}

/// A `vars` operator with its operand, parsed and compiled when the configuration is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq(String),
    /// `~=` (not equal)
    Ne(String),
    /// `>`: both sides compared as numbers; a value that is not a number never matches.
    Gt(Number),
    /// `<`
    Lt(Number),
    /// `~~`: regex match (unanchored, as APISIX's `ngx.re.find`).
    ///
    /// The one place where matching may touch shared state: the `regex` crate keeps its search
    /// scratch in a pool, owned by the first thread that used it; other threads take theirs from
    /// a mutex-guarded stack (allocating one on their first match). Routes without regex
    /// conditions never reach it.
    Regex(Pattern),
    /// `~*`: case-insensitive regex match.
    IRegex(Pattern),
    /// `IN`: equals one of the list.
    In(Vec<String>),
    /// `HAS`: the value, read as a comma-separated list, contains this item.
    Has(String),
}

/// A number operand, kept as written so the configuration stays comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number(pub String);

/// A compiled regular expression, compared by its source.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: regex::bytes::Regex,
}

/// An operand as the file or the admin API gives it, before it is checked against its operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Str(String),
    Num(f64),
    List(Vec<String>),
}

/// Parses one `[variable, operator, value]` condition.
pub fn parse_cond(var: &str, op: &str, value: Operand) -> Result<Cond, String> {
    let var = parse_var(var)?;
    let (negate, op_name) = match op.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, op),
    };
    let text = |v: Operand| match v {
        Operand::Str(s) => Ok(s),
        Operand::Num(n) => Ok(number_text(n)),
        Operand::List(_) => Err(format!("operator {op_name:?} takes a string, not a list")),
    };
    // Infinities and NaN are refused: TOML spells them as floats and Rust parses "inf", but no
    // request value compares sensibly with them.
    let number = |v: Operand| match v {
        Operand::Num(n) if n.is_finite() => Ok(Number(number_text(n))),
        Operand::Str(s) if parse_number(s.as_bytes()).is_some() => Ok(Number(s.trim().to_owned())),
        other => Err(format!(
            "operator {op_name:?} takes a finite number, found {other:?}"
        )),
    };
    let regex = |v: Operand, insensitive: bool| {
        let source = text(v)?;
        regex::bytes::RegexBuilder::new(&source)
            .case_insensitive(insensitive)
            .size_limit(1 << 20)
            .build()
            .map(|regex| Pattern { source, regex })
            .map_err(|e| format!("invalid regex: {e}"))
    };
    let op = match op_name.to_ascii_uppercase().as_str() {
        "==" => Op::Eq(text(value)?),
        "~=" => Op::Ne(text(value)?),
        ">" => Op::Gt(number(value)?),
        "<" => Op::Lt(number(value)?),
        "~~" => Op::Regex(regex(value, false)?),
        "~*" => Op::IRegex(regex(value, true)?),
        "IN" => match value {
            Operand::List(items) => Op::In(items),
            other => return Err(format!("operator \"IN\" takes a list, found {other:?}")),
        },
        "HAS" => Op::Has(text(value)?),
        _ => {
            return Err(format!(
                "unknown operator {op:?}; expected ==, ~=, >, <, ~~, ~*, IN or HAS, \
                 optionally after !"
            ))
        }
    };
    Ok(Cond { var, negate, op })
}

/// A number as text, integers without a fraction (`100`, not `100.0`).
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

/// A request value as a number, the way `>` and `<` read it: optional surrounding whitespace,
/// then a finite decimal number. Anything else is not a number.
fn parse_number(value: &[u8]) -> Option<f64> {
    std::str::from_utf8(value)
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
}

impl Cond {
    /// Whether the condition holds for the request whose variables `vars` reads.
    pub fn holds(&self, vars: &mut Vars<'_>) -> bool {
        let value = vars.get(&self.var);
        self.op.test(value) != self.negate
    }
}

impl Op {
    /// The operator applied to a request value (`""` when the variable is missing).
    pub fn test(&self, value: &[u8]) -> bool {
        match self {
            Op::Eq(s) => value == s.as_bytes(),
            Op::Ne(s) => value != s.as_bytes(),
            // Operands were checked to be numbers when the condition was parsed.
            Op::Gt(n) => {
                matches!((parse_number(value), parse_number(n.0.as_bytes())), (Some(v), Some(n)) if v > n)
            }
            Op::Lt(n) => {
                matches!((parse_number(value), parse_number(n.0.as_bytes())), (Some(v), Some(n)) if v < n)
            }
            Op::Regex(p) | Op::IRegex(p) => p.regex.is_match(value),
            Op::In(items) => items.iter().any(|i| i.as_bytes() == value),
            Op::Has(item) => value
                .split(|&b| b == b',')
                .any(|part| part.trim_ascii() == item.as_bytes()),
        }
    }
}

/// The outcome of a match: the index of the route and of its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    pub route: usize,
    pub upstream: usize,
    /// The route has a `proxy-rewrite`: known here, with the rest of what the match loaded, so
    /// that a route without one costs the caller a test of this and nothing else.
    pub rewrites: bool,
}

/// The routes of one configuration, indexed by host, priority and uri.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// By route index; disabled routes are here too but in no bucket.
    routes: Vec<Entry>,
    /// Lowercased host name to the routes naming it.
    exact_hosts: KeyMap<Bucket>,
    /// Wildcard suffix (`.example.com`) to the routes naming it.
    wild_hosts: KeyMap<Bucket>,
    /// Routes without hosts.
    any_host: Bucket,
}

/// What is checked of a route once its host and uri matched.
#[derive(Debug, Clone)]
struct Entry {
    upstream: usize,
    rewrites: bool,
    /// Bits of [`METHODS`]; None means any method. A name outside [`METHODS`] (the config
    /// refuses them) adds no bit, so it matches nothing rather than everything.
    methods: Option<u16>,
    conds: Vec<Cond>,
}

/// The routes sharing a host pattern (or having none), by priority, highest first.
#[derive(Debug, Clone, Default)]
struct Bucket {
    levels: Vec<Level>,
}

/// The routes of one bucket with one priority, indexed by uri.
#[derive(Debug, Clone)]
struct Level {
    /// Exact path to its candidates.
    exact: KeyMap<Cands>,
    /// Byte trie of the prefixes; node 0 is the root (the empty prefix).
    trie: Vec<TrieNode>,
    /// Route indices; each `Cands` is a run of it, in route order.
    cands: Vec<usize>,
}

/// The router's hash maps: byte keys from the configuration, looked up with request bytes.
type KeyMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<KeyHasher>>;

/// A multiply-rotate hasher (the FxHash construction) for the router's keys, several times
/// faster than SipHash on short keys. SipHash's keyed resistance to flooding is not needed here:
/// only the configuration inserts keys, and a crafted Host or path can at worst probe a group
/// of configured keys, never grow one.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl KeyHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(26);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0; 8];
            word.copy_from_slice(w);
            self.add(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // One more multiply so the low bits, which pick the slot, depend on every input bit.
        self.0.wrapping_mul(Self::K)
    }
}

/// A run of `Level::cands`.
#[derive(Debug, Clone, Copy, Default)]
struct Cands {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Sorted by byte.
    children: Vec<(u8, usize)>,
    /// Routes whose prefix ends here; empty for inner nodes.
    routes: Cands,
    /// The nearest proper ancestor with routes, so a match walks down once and then up only
    /// through nodes that have candidates.
    up: Option<usize>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        // Per host key, the routes (index, uris) in route order, grouped later by priority.
        type Members<'r> = Vec<(usize, &'r Route)>;
        let mut exact: HashMap<&str, Members<'_>> = HashMap::new();
        let mut wild: HashMap<&str, Members<'_>> = HashMap::new();
        let mut any: Members<'_> = Vec::new();
        for (i, r) in routes.iter().enumerate().filter(|(_, r)| r.enabled) {
            if r.hosts.is_empty() {
                any.push((i, r));
            }
            for h in &r.hosts {
                let (map, key) = match h {
                    HostPattern::Exact(e) => (&mut exact, e.as_str()),
                    HostPattern::Wildcard(w) => (&mut wild, w.as_str()),
                };
                let members = map.entry(key).or_default();
                // A route naming one host twice is one candidate.
                if members.last().is_none_or(|&(last, _)| last != i) {
                    members.push((i, r));
                }
            }
        }
        let buckets = |m: HashMap<&str, Members<'_>>| {
            m.into_iter()
                .map(|(k, v)| {
                    (
                        Box::from(k.to_ascii_lowercase().as_bytes()),
                        Bucket::new(&v),
                    )
                })
                .collect()
        };
        Router {
            routes: routes
                .iter()
                .map(|r| Entry {
                    upstream: r.upstream,
                    rewrites: r.rewrite.is_some(),
                    methods: (!r.methods.is_empty()).then(|| {
                        r.methods
                            .iter()
                            .fold(0, |bits, m| bits | method_bit(m.as_bytes()))
                    }),
                    conds: r.vars.clone(),
                })
                .collect(),
            exact_hosts: buckets(exact),
            wild_hosts: buckets(wild),
            any_host: Bucket::new(&any),
        }
    }

    /// The best route for `req` whose conditions all hold, by the ranking in the module docs.
    pub fn find(&self, req: &Request<'_>) -> Option<Matched> {
        let method = method_bit(req.method);
        if self.exact_hosts.is_empty() && self.wild_hosts.is_empty() {
            // No route names a host, as in most configurations: then nothing needs the host
            // lowercased, and `Vars` (a few hundred bytes to fill per request) is built only if
            // a candidate route has conditions.
            let path = split_target(req.target).1;
            let mut vars = None;
            return self.in_bucket(&self.any_host, path, method, &mut |conds| {
                conds.is_empty() || {
                    let vars = vars.get_or_insert_with(|| Vars::new(req));
                    conds.iter().all(|c| c.holds(vars))
                }
            });
        }
        let mut vars = Vars::new(req);
        let path = vars.path();
        let holds = |conds: &[Cond], vars: &mut Vars<'_>| conds.iter().all(|c| c.holds(vars));
        if !vars.host().is_empty() {
            if let Some(b) = self.exact_hosts.get(vars.host()) {
                if let Some(m) = self.in_bucket(b, path, method, &mut |c| holds(c, &mut vars)) {
                    return Some(m);
                }
            }
            if !self.wild_hosts.is_empty() {
                // Longest suffix first: each starts at a dot with at least one byte before it.
                let mut from = 1;
                while let Some(dot) = vars
                    .host()
                    .get(from..)
                    .and_then(|rest| rest.iter().position(|&b| b == b'.'))
                {
                    let at = from + dot;
                    if let Some(b) = self.wild_hosts.get(&vars.host()[at..]) {
                        if let Some(m) =
                            self.in_bucket(b, path, method, &mut |c| holds(c, &mut vars))
                        {
                            return Some(m);
                        }
                    }
                    from = at + 1;
                }
            }
        }
        self.in_bucket(&self.any_host, path, method, &mut |c| holds(c, &mut vars))
    }

    /// The first route of `bucket` matching `path` and `method` whose conditions `conds_hold`.
    fn in_bucket(
        &self,
        bucket: &Bucket,
        path: &[u8],
        method: u16,
        conds_hold: &mut dyn FnMut(&[Cond]) -> bool,
    ) -> Option<Matched> {
        let mut accept = |run: Cands, cands: &[usize]| {
            cands[run.start..run.end].iter().find_map(|&i| {
                let e = &self.routes[i];
                let ok = e.methods.is_none_or(|bits| bits & method != 0) && conds_hold(&e.conds);
                ok.then_some(Matched {
                    route: i,
                    upstream: e.upstream,
                    rewrites: e.rewrites,
                })
            })
        };
        for level in &bucket.levels {
            if let Some(&run) = level.exact.get(path) {
                if let Some(m) = accept(run, &level.cands) {
                    return Some(m);
                }
            }
            let mut node = 0;
            let mut deepest = (!level.trie[0].routes.is_empty()).then_some(0);
            for &b in path {
                let children = &level.trie[node].children;
                match children.binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(k) => node = children[k].1,
                    Err(_) => break,
                }
                if !level.trie[node].routes.is_empty() {
                    deepest = Some(node);
                }
            }
            while let Some(n) = deepest {
                let t = &level.trie[n];
                if let Some(m) = accept(t.routes, &level.cands) {
                    return Some(m);
                }
                deepest = t.up;
            }
        }
        None
    }

    /// The same answer as [`Router::find`], by checking every route: the reference the index is
    /// tested against, and the baseline of the bench.
    #[doc(hidden)]
    pub fn find_linear(routes: &[Route], req: &Request<'_>) -> Option<Matched> {
        let mut vars = Vars::new(req);
        let path = vars.path();
        // (host class, wildcard length, priority, exact uri, uri length); higher is better.
        type Rank = (u8, usize, i64, bool, usize);
        let mut best: Option<(usize, Rank)> = None;
        for (i, r) in routes.iter().enumerate() {
            if !r.enabled {
                continue;
            }
            let host = vars.host();
            let host_rank = if r.hosts.is_empty() {
                Some((0, 0))
            } else {
                r.hosts
                    .iter()
                    .filter_map(|h| match h {
                        HostPattern::Exact(e) => {
                            (!host.is_empty() && e.as_bytes() == host).then_some((2, 0))
                        }
                        HostPattern::Wildcard(w) => (host.len() > w.len()
                            && host.ends_with(w.as_bytes()))
                        .then_some((1, w.len())),
                    })
                    .max()
            };
            let Some((class, wild)) = host_rank else {
                continue;
            };
            let uri_rank = r
                .uris
                .iter()
                .filter_map(|u| match u {
                    UriPattern::Exact(e) => (e.as_bytes() == path).then_some((true, e.len())),
                    UriPattern::Prefix(p) => {
                        path.starts_with(p.as_bytes()).then_some((false, p.len()))
                    }
                })
                .max();
            let Some((exact, len)) = uri_rank else {
                continue;
            };
            let method_ok =
                r.methods.is_empty() || r.methods.iter().any(|m| m.as_bytes() == req.method);
            if !method_ok || !r.vars.iter().all(|c| c.holds(&mut vars)) {
                continue;
            }
            let rank = (class, wild, r.priority, exact, len);
            if best.is_none_or(|(_, b)| rank > b) {
                best = Some((i, rank));
            }
        }
        best.map(|(i, _)| Matched {
            route: i,
            upstream: routes[i].upstream,
            rewrites: routes[i].rewrite.is_some(),
        })
    }
}

impl Cands {
    fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl Bucket {
    /// `members`: (route index, route) in route order.
    fn new(members: &[(usize, &Route)]) -> Bucket {
        let mut by_priority: BTreeMap<std::cmp::Reverse<i64>, Vec<(usize, &Route)>> =
            BTreeMap::new();
        for &(i, r) in members {
            by_priority
                .entry(std::cmp::Reverse(r.priority))
                .or_default()
                .push((i, r));
        }
        Bucket {
            levels: by_priority.values().map(|m| Level::new(m)).collect(),
        }
    }
}

impl Level {
    fn new(members: &[(usize, &Route)]) -> Level {
        // Route lists per exact path and per trie node, in route order, deduplicated (a route
        // may list one uri twice).
        let mut exact: HashMap<&[u8], Vec<usize>> = HashMap::new();
        let mut trie = vec![TrieNode::default()];
        let mut at_node: Vec<Vec<usize>> = vec![Vec::new()];
        for &(i, r) in members {
            for u in &r.uris {
                let list = match u {
                    UriPattern::Exact(e) => exact.entry(e.as_bytes()).or_default(),
                    UriPattern::Prefix(p) => {
                        let mut node = 0;
                        for &b in p.as_bytes() {
                            node = match trie[node].children.binary_search_by_key(&b, |&(c, _)| c) {
                                Ok(k) => trie[node].children[k].1,
                                Err(k) => {
                                    let child = trie.len();
                                    trie.push(TrieNode::default());
                                    at_node.push(Vec::new());
                                    trie[node].children.insert(k, (b, child));
                                    child
                                }
                            };
                        }
                        &mut at_node[node]
                    }
                };
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        let mut cands = Vec::new();
        let mut run = |list: &[usize]| {
            let start = cands.len();
            cands.extend_from_slice(list);
            Cands {
                start,
                end: cands.len(),
            }
        };
        let exact = exact
            .into_iter()
            .map(|(path, list)| (Box::from(path), run(&list)))
            .collect();
        for (node, list) in trie.iter_mut().zip(&at_node) {
            node.routes = run(list);
        }
        // Nearest ancestor with routes, top down (children always come after their parent).
        for n in 0..trie.len() {
            let up = if trie[n].routes.is_empty() {
                trie[n].up
            } else {
                Some(n)
            };
            for k in 0..trie[n].children.len() {
                let child = trie[n].children[k].1;
                trie[child].up = up;
            }
        }
        Level { exact, trie, cands }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use crate::vars::testing::Req;

    fn uri(u: &str) -> UriPattern {
        uri_pattern(u).unwrap()
    }

    fn route(uris: &[&str], hosts: &[&str], upstream: usize) -> Route {
        Route {
            id: String::new(),
            methods: Vec::new(),
            priority: 0,
            enabled: true,
            vars: Vec::new(),
            uris: uris.iter().map(|u| uri(u)).collect(),
            hosts: hosts.iter().map(|h| route_host(h).unwrap()).collect(),
            upstream,
            websocket: None,
            rewrite: None,
            queue: QueueRank::default(),
        }
    }

    fn cond(var: &str, op: &str, value: Operand) -> Cond {
        parse_cond(var, op, value).unwrap()
    }

    fn s(v: &str) -> Operand {
        Operand::Str(v.into())
    }

    /// Routes `req` with the index and with the linear reference, which must agree.
    fn find(routes: &[Route], req: &Req) -> Option<usize> {
        let r = Router::new(routes);
        let got = r.find(&req.view());
        assert_eq!(
            got,
            Router::find_linear(routes, &req.view()),
            "index vs linear"
        );
        got.map(|m| m.route)
    }

    #[test]
    fn every_operator() {
        let list = |items: &[&str]| Operand::List(items.iter().map(|i| i.to_string()).collect());
        #[rustfmt::skip]
        let table: Vec<(&str, Operand, &str, bool)> = vec![
            ("==", s("a"), "a", true),
            ("==", s("a"), "A", false),
            ("==", s(""), "", true),
            ("==", Operand::Num(5.0), "5", true),
            ("~=", s("a"), "b", true),
            ("~=", s("a"), "a", false),
            (">", Operand::Num(10.0), "11", true),
            (">", Operand::Num(10.0), "10", false),
            (">", s("1.5"), "2", true),
            (">", Operand::Num(-1.0), "abc", false),
            (">", Operand::Num(-1.0), "", false),
            ("<", Operand::Num(10.0), " 9.5 ", true),
            ("<", Operand::Num(10.0), "10", false),
            ("<", Operand::Num(10.0), "nan", false),
            ("<", Operand::Num(10.0), "-inf", false),
            ("~~", s("^/api/v[0-9]+$"), "/api/v2", true),
            ("~~", s("^/api/v[0-9]+$"), "/API/v2", false),
            ("~~", s("v2"), "/api/v2/x", true),
            ("~*", s("^/api/"), "/API/x", true),
            ("~*", s("^/api/"), "/apx/x", false),
            ("IN", list(&["", "testapp"]), "testapp", true),
            ("IN", list(&["", "testapp"]), "", true),
            ("IN", list(&["", "testapp"]), "other", false),
            ("in", list(&["x"]), "x", true),
            ("HAS", s("b"), "a, b ,c", true),
            ("HAS", s("b"), "a,bb,c", false),
            ("HAS", s("b"), "b", true),
            ("HAS", s("b"), "", false),
        ];
        for (op, operand, value, want) in table {
            let c = cond("uri", op, operand.clone());
            assert_eq!(
                c.op.test(value.as_bytes()),
                want,
                "{value:?} {op} {operand:?}"
            );
            let neg = cond("uri", &format!("!{op}"), operand.clone());
            assert!(neg.negate);
            assert_eq!(
                neg.op.test(value.as_bytes()) != neg.negate,
                !want,
                "{value:?} !{op} {operand:?}"
            );
        }
    }

    #[test]
    fn conditions_that_do_not_parse() {
        let table: Vec<(&str, &str, Operand, &str)> = vec![
            ("nope", "==", s("x"), "unknown variable"),
            ("http_", "==", s("x"), "unknown variable"),
            ("uri", "=", s("x"), "unknown operator"),
            ("uri", "IN", s("x"), "takes a list"),
            ("uri", "==", Operand::List(vec![]), "not a list"),
            ("uri", ">", s("ten"), "finite number"),
            ("uri", ">", s("inf"), "finite number"),
            ("uri", "<", Operand::Num(f64::NAN), "finite number"),
            ("uri", "~~", s("("), "invalid regex"),
        ];
        for (var, op, value, want) in table {
            let e = parse_cond(var, op, value).unwrap_err();
            assert!(e.contains(want), "{var} {op}: {e}");
        }
    }

    #[test]
    fn negation_applies_to_the_whole_test() {
        let req = Req::new("GET", "/x", &[("Host", "a"), ("X-Env", "prod")]);
        let view = req.view();
        let mut vars = Vars::new(&view);
        for (op, value, want) in [
            ("==", "prod", true),
            ("!==", "prod", false),
            ("! ==", "prod", false),
            ("!~=", "prod", true),
            ("!~~", "^pr", false),
            ("!HAS", "dev", true),
        ] {
            assert_eq!(
                cond("http_x_env", op, s(value)).holds(&mut vars),
                want,
                "{op}"
            );
        }
        // A missing variable is "": `!>` holds because `>` cannot.
        assert!(cond("http_x_missing", "!>", Operand::Num(1.0)).holds(&mut vars));
        assert!(cond("http_x_missing", "==", s("")).holds(&mut vars));
    }

    #[test]
    fn uri_ranking() {
        let routes = [
            route(&["/*"], &[], 0),
            route(&["/api/*"], &[], 1),
            route(&["/api/health"], &[], 2),
            route(&["/api*"], &[], 3),
            route(&["/api/v1/*", "/api/v1"], &[], 4),
            route(&["/api/*"], &[], 5),
        ];
        for (target, want) in [
            ("/", Some(0)),
            ("/api/users?id=1", Some(1)),
            ("/api/health", Some(2)),
            ("/api/health/x", Some(1)),
            ("/apis", Some(3)),
            ("/api", Some(3)),
            ("/api/v1", Some(4)),
            ("/api/v1/", Some(4)),
            ("/api/v2", Some(1)),
        ] {
            assert_eq!(find(&routes, &Req::get(target, "x")), want, "{target}");
        }
        assert_eq!(find(&routes[1..3], &Req::get("/other", "x")), None);
    }

    #[test]
    fn priority_beats_uri_length_but_not_host() {
        let mut low = route(&["/api/v1/users"], &[], 0);
        low.priority = -1;
        let mut high = route(&["/*"], &[], 1);
        high.priority = 5;
        let hosted = route(&["/*"], &["a.test"], 2);
        let routes = [low, high, hosted];
        assert_eq!(find(&routes, &Req::get("/api/v1/users", "x")), Some(1));
        assert_eq!(find(&routes, &Req::get("/api/v1/users", "a.test")), Some(2));
        let mut only_high_when = routes[1].clone();
        only_high_when.vars = vec![cond("arg_v", "==", s("1"))];
        let routes = [routes[0].clone(), only_high_when];
        assert_eq!(find(&routes, &Req::get("/api/v1/users?v=1", "x")), Some(1));
        assert_eq!(find(&routes, &Req::get("/api/v1/users?v=2", "x")), Some(0));
    }

    #[test]
    fn host_ranking() {
        let routes = [
            route(&["/*"], &[], 0),
            route(&["/*"], &["*.example.com"], 1),
            route(&["/*"], &["*.api.example.com"], 2),
            route(&["/*"], &["www.example.com", "Other.Test"], 3),
            route(&["/exact"], &["*.example.com"], 4),
        ];
        for (host, target, want) in [
            ("x.test", "/", Some(0)),
            ("example.com", "/", Some(0)),
            ("a.example.com", "/", Some(1)),
            ("a.b.example.com", "/", Some(1)),
            ("x.api.example.com", "/", Some(2)),
            ("api.example.com", "/", Some(1)),
            ("WWW.Example.Com:8080", "/", Some(3)),
            ("other.test", "/", Some(3)),
            ("a.example.com", "/exact", Some(4)),
            ("www.example.com", "/exact", Some(3)),
            (".example.com", "/", Some(0)),
        ] {
            assert_eq!(
                find(&routes, &Req::get(target, host)),
                want,
                "{host}{target}"
            );
        }
        assert_eq!(find(&routes[1..], &Req::get("/", "x.test")), None);
        assert_eq!(
            find(&routes, &Req::get("http://a.example.com/", "x.test")),
            Some(1),
            "absolute-form authority wins over Host"
        );
    }

    #[test]
    fn methods_status_and_vars() {
        let mut get_only = route(&["/m"], &[], 0);
        get_only.methods = vec!["GET".into(), "HEAD".into()];
        let mut disabled = route(&["/m"], &[], 1);
        disabled.enabled = false;
        disabled.priority = 100;
        let mut tenant = route(&["/m"], &[], 2);
        tenant.vars = vec![
            cond("http_X-SW-Authorization-TenantCode", "==", s("tenant")),
            cond(
                "http_X-SW-Authorization-AppCode",
                "IN",
                Operand::List(vec!["".into(), "testapp".into()]),
            ),
        ];
        let fallback = route(&["/*"], &[], 3);
        let routes = [get_only, disabled, tenant, fallback];
        let with = |method: &str, headers: &[(&str, &str)]| {
            let mut h = vec![("Host", "x")];
            h.extend_from_slice(headers);
            find(&routes, &Req::new(method, "/m", &h))
        };
        assert_eq!(with("GET", &[]), Some(0));
        assert_eq!(with("HEAD", &[]), Some(0));
        assert_eq!(with("get", &[]), Some(3), "methods are case-sensitive");
        assert_eq!(with("POST", &[]), Some(3));
        let tenant_h = ("x-sw-authorization-tenantcode", "tenant");
        assert_eq!(
            with("POST", &[tenant_h]),
            Some(2),
            "missing app code reads as \"\""
        );
        assert_eq!(
            with(
                "POST",
                &[tenant_h, ("X-SW-Authorization-AppCode", "testapp")]
            ),
            Some(2)
        );
        assert_eq!(
            with("POST", &[tenant_h, ("X-SW-Authorization-AppCode", "other")]),
            Some(3)
        );
        assert_eq!(
            find(&routes[1..2], &Req::get("/m", "x")),
            None,
            "status 0 never matches"
        );
    }

    /// Random routes and requests over a small alphabet, so that hosts, prefixes, priorities and
    /// conditions collide often: the index must always agree with checking every route.
    #[test]
    fn index_agrees_with_linear_scan() {
        const HOSTS: [&str; 5] = ["a.test", "b.a.test", "*.a.test", "*.test", "*.b.a.test"];
        const REQ_HOSTS: [&str; 7] = [
            "a.test",
            "b.a.test",
            "c.b.a.test",
            "x.test",
            "test",
            "A.TEST:81",
            "z",
        ];
        const PATHS: [&str; 8] = ["/", "/a", "/ab", "/a/", "/a/b", "/a/bc", "/b/a", "/abc/d"];
        const METHODS_USED: [&str; 3] = ["GET", "POST", "FOO"];
        let mut rng = Rng::new(0x5eed);
        let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
        for round in 0..300 {
            let count = 1 + pick(&mut rng, 30);
            let mut routes = Vec::new();
            for i in 0..count {
                let mut uris = Vec::new();
                for _ in 0..1 + pick(&mut rng, 2) {
                    let p = PATHS[pick(&mut rng, PATHS.len())];
                    uris.push(match pick(&mut rng, 3) {
                        0 => p.to_string(),
                        1 => format!("{p}*"),
                        _ => format!("{}/*", p.trim_end_matches('/')),
                    });
                }
                let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
                let hosts: Vec<&str> = (0..pick(&mut rng, 3))
                    .map(|_| HOSTS[pick(&mut rng, HOSTS.len())])
                    .collect();
                let mut r = route(&uris, &hosts, i % 4);
                r.priority = pick(&mut rng, 3) as i64 - 1;
                r.enabled = pick(&mut rng, 8) != 0;
                if pick(&mut rng, 4) == 0 {
                    r.methods = vec![METHODS_USED[pick(&mut rng, 2)].into()];
                }
                if pick(&mut rng, 3) == 0 {
                    r.vars
                        .push(cond("arg_k", "==", s(&pick(&mut rng, 3).to_string())));
                }
                if pick(&mut rng, 5) == 0 {
                    r.vars.push(cond(
                        "http_x_n",
                        "!<",
                        Operand::Num(pick(&mut rng, 3) as f64),
                    ));
                }
                routes.push(r);
            }
            let router = Router::new(&routes);
            for _ in 0..50 {
                let target = format!(
                    "{}?k={}",
                    PATHS[pick(&mut rng, PATHS.len())],
                    pick(&mut rng, 3)
                );
                let n = pick(&mut rng, 4).to_string();
                let req = Req::new(
                    METHODS_USED[pick(&mut rng, 3)],
                    &target,
                    &[
                        ("Host", REQ_HOSTS[pick(&mut rng, REQ_HOSTS.len())]),
                        ("X-N", &n),
                    ],
                );
                assert_eq!(
                    router.find(&req.view()),
                    Router::find_linear(&routes, &req.view()),
                    "round {round}: {:?} with {routes:#?}",
                    String::from_utf8_lossy(&req.src)
                );
            }
        }
    }
}
