//! Route matching: which upstream serves a request, from its Host and path.
//!
//! A route matches when its `hosts` list is empty or names the request's host (compared without
//! the port, ignoring ASCII case), and one of its `uris` matches the path (the target without its
//! query). Among matching routes the most specific wins: a host match beats none, an exact uri
//! beats a prefix, a longer prefix beats a shorter one, and an earlier route beats a later one.
//! The table is immutable once built; each core holds it through the shared configuration.

use crate::config::{HostPattern, Route, UriPattern};

/// One APISIX `vars` condition: `[variable, operator, value]`, with `!` before the operator
/// negating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub var: Var,
    pub negate: bool,
    pub op: Op,
}

/// A request variable, as APISIX (nginx) names it. A missing one reads as the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Var {
    /// `uri`: the path, without the query.
    Uri,
    /// `host`: the Host without port, lowercased.
    Host,
    /// `request_method`.
    Method,
    /// `remote_addr`: the client's IP address, as text.
    RemoteAddr,
    /// `arg_NAME`: the first query argument NAME (as sent, not percent-decoded).
    Arg(String),
    /// `cookie_NAME`.
    Cookie(String),
    /// `http_NAME`: a request header; stored lowercased with `_` turned into `-`, and header
    /// names are compared the same way.
    Header(String),
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
    /// `~~`: regex match.
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

/// Parses a variable name as APISIX writes it (`uri`, `http_X-Tenant`, `arg_id`, ...).
pub fn parse_var(name: &str) -> Result<Var, String> {
    let named = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|rest| !rest.is_empty())
            .map(str::to_owned)
    };
    Ok(match name {
        "uri" => Var::Uri,
        "host" => Var::Host,
        "request_method" => Var::Method,
        "remote_addr" => Var::RemoteAddr,
        _ => {
            if let Some(h) = named("http_") {
                Var::Header(h.to_ascii_lowercase().replace('_', "-"))
            } else if let Some(a) = named("arg_") {
                Var::Arg(a)
            } else if let Some(c) = named("cookie_") {
                Var::Cookie(c)
            } else {
                return Err(format!(
                    "unknown variable {name:?}; expected uri, host, request_method, \
                     remote_addr, arg_NAME, cookie_NAME or http_NAME"
                ));
            }
        }
    })
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
    let number = |v: Operand| match v {
        Operand::Num(n) => Ok(Number(number_text(n))),
        Operand::Str(s) if s.trim().parse::<f64>().is_ok() => Ok(Number(s.trim().to_owned())),
        other => Err(format!(
            "operator {op_name:?} takes a number, found {other:?}"
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

/// What route matching and hashing may read of a request. Built on the core's stack per
/// request; all slices borrow the client's read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a [u8],
    /// The request target as sent (origin-form or absolute-form).
    pub target: &'a [u8],
    /// The Host header value, if any (may carry a port).
    pub host: Option<&'a [u8]>,
    pub remote: std::net::IpAddr,
    pub headers: &'a [crate::http::head::Header],
    /// The buffer the header spans point into.
    pub src: &'a [u8],
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// The outcome of a match: the index of the route and of its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    pub route: usize,
    pub upstream: usize,
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        Router {
            routes: routes.to_vec(),
        }
    }

    /// `host`: the Host header value (may carry a port); `target`: the request target as sent.
    pub fn find(&self, host: Option<&[u8]>, target: &[u8]) -> Option<Matched> {
        let (authority, path) = split_target(target);
        let host = strip_port(authority.or(host).unwrap_or(b""));
        let mut best: Option<(usize, (bool, bool, usize))> = None;
        for (i, r) in self.routes.iter().enumerate() {
            let host_hit = if r.hosts.is_empty() {
                false
            } else if r.hosts.iter().any(|h| match h {
                HostPattern::Exact(e) => e.as_bytes().eq_ignore_ascii_case(host),
                HostPattern::Wildcard(w) => {
                    host.len() > w.len()
                        && host[host.len() - w.len()..].eq_ignore_ascii_case(w.as_bytes())
                }
            }) {
                true
            } else {
                continue;
            };
            let Some((exact, len)) = best_uri(&r.uris, path) else {
                continue;
            };
            let rank = (host_hit, exact, len);
            if best.is_none_or(|(_, b)| rank > b) {
                best = Some((i, rank));
            }
        }
        best.map(|(i, _)| Matched {
            route: i,
            upstream: self.routes[i].upstream,
        })
    }
}

fn best_uri(uris: &[UriPattern], path: &[u8]) -> Option<(bool, usize)> {
    let mut best = None;
    for u in uris {
        let hit = match u {
            UriPattern::Exact(e) => (e.as_bytes() == path).then_some((true, e.len())),
            UriPattern::Prefix(p) => path.starts_with(p.as_bytes()).then_some((false, p.len())),
        };
        if hit > best {
            best = hit;
        }
    }
    best
}

/// Splits a request target into an authority (absolute-form only, RFC 9112 §3.2.2) and the path
/// without its query.
fn split_target(target: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let mut authority = None;
    let mut rest = target;
    for scheme in [&b"http://"[..], b"https://"] {
        if rest.len() > scheme.len() && rest[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let after = &rest[scheme.len()..];
            let end = after
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(after.len());
            authority = Some(&after[..end]);
            rest = &after[end..];
            break;
        }
    }
    let path_end = rest
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    let path = &rest[..path_end];
    (authority, if path.is_empty() { b"/" } else { path })
}

fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        // IPv6 literal: keep through the closing bracket.
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(uris: &[&str], hosts: &[&str], upstream: usize) -> Route {
        Route {
            id: String::new(),
            methods: Vec::new(),
            priority: 0,
            enabled: true,
            vars: Vec::new(),
            uris: uris
                .iter()
                .map(|u| match u.strip_suffix('*') {
                    Some(p) => UriPattern::Prefix(p.to_string()),
                    None => UriPattern::Exact(u.to_string()),
                })
                .collect(),
            hosts: hosts
                .iter()
                .map(|h| HostPattern::Exact(h.to_string()))
                .collect(),
            upstream,
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let r = Router::new(&[
            route(&["/*"], &[], 0),
            route(&["/api/*"], &[], 1),
            route(&["/api/health"], &[], 2),
            route(&["/api/*"], &["example.com"], 3),
        ]);
        let up = |host: &str, t: &str| {
            r.find(Some(host.as_bytes()), t.as_bytes())
                .map(|m| m.upstream)
        };
        assert_eq!(up("x", "/"), Some(0));
        assert_eq!(up("x", "/api/users?id=1"), Some(1));
        assert_eq!(up("x", "/api/health"), Some(2));
        assert_eq!(up("Example.COM:8080", "/api/users"), Some(3));
        assert_eq!(
            up("x", "http://example.com/api/a"),
            Some(3),
            "absolute-form authority wins over Host"
        );
    }

    #[test]
    fn no_match_without_catch_all() {
        let r = Router::new(&[
            route(&["/health"], &[], 0),
            route(&["/a/*"], &["a.test"], 1),
        ]);
        assert_eq!(r.find(Some(b"x"), b"/healthz"), None);
        assert_eq!(r.find(Some(b"b.test"), b"/a/x"), None);
        assert_eq!(r.find(None, b"/health?x").map(|m| m.route), Some(0));
    }

    #[test]
    fn ports_and_ipv6_hosts() {
        assert_eq!(strip_port(b"a.test:80"), b"a.test");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"a.test"), b"a.test");
    }
}
