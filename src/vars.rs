//! Request variables as APISIX (nginx) names them: `uri`, `host`, `request_method`,
//! `remote_addr`, `arg_NAME`, `cookie_NAME` and `http_NAME`, and how each is read from a request
//! held in the client's buffer.
//!
//! Route conditions (`vars`), the chash key and the templates of `proxy-rewrite` all read the same
//! variables, so their names ([`parse_var`]) and their values ([`Vars`]) are defined once, here,
//! below every module that reads them. Invariants: reading a variable never allocates (the host is
//! lowercased and the client address formatted into buffers on the stack), a missing variable
//! reads as the empty string, and values are the request's bytes as sent, never percent-decoded.

use std::io::Write as _;
use std::net::IpAddr;

use crate::http::rewrite::ipv4_text;

/// Longest host name that can match a route host. DNS names stop at 253 bytes (RFC 1035
/// section 2.3.4); a longer Host header matches no host pattern and reads as `""` in `vars`.
pub const MAX_HOST_LEN: usize = 255;

/// Longest text of an IP address (an IPv6 address with an embedded IPv4 one is 45 bytes).
const MAX_IP_TEXT: usize = 46;

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
    /// `arg_NAME`: the first query argument NAME (as sent, not percent-decoded). The name is
    /// compared ignoring ASCII case, as nginx's `$arg_NAME`.
    Arg(String),
    /// `cookie_NAME`: the first cookie NAME in the Cookie fields; the name is compared ignoring
    /// ASCII case, as nginx's `$cookie_NAME`.
    Cookie(String),
    /// `http_NAME`: a request header; stored lowercased with `_` turned into `-`, and header
    /// names are compared the same way.
    Header(String),
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

/// What route matching, hashing and templates may read of a request. Built on the core's stack per
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

/// The variables of one request, as conditions, hashing and templates read them. Built on the stack per
/// request: the path and query are slices of the target, the host is lowercased into an inline
/// buffer, and the client address is formatted into another only when a condition asks for it.
pub struct Vars<'a> {
    req: Request<'a>,
    path: &'a [u8],
    query: &'a [u8],
    host: [u8; MAX_HOST_LEN],
    host_len: usize,
    ip: [u8; MAX_IP_TEXT],
    /// Bytes of `ip` in use; None until `remote_addr` is first read.
    ip_len: Option<usize>,
}

impl<'a> Vars<'a> {
    pub fn new(req: &Request<'a>) -> Vars<'a> {
        let (authority, path, query) = split_target(req.target);
        let raw_host = strip_port(authority.or(req.host).unwrap_or(b""));
        let mut host = [0; MAX_HOST_LEN];
        // A host too long to be a DNS name matches no host pattern: it reads as missing.
        let host_len = if raw_host.len() <= MAX_HOST_LEN {
            for (d, s) in host.iter_mut().zip(raw_host) {
                *d = s.to_ascii_lowercase();
            }
            raw_host.len()
        } else {
            0
        };
        Vars {
            req: *req,
            path,
            query,
            host,
            host_len,
            ip: [0; MAX_IP_TEXT],
            ip_len: None,
        }
    }

    /// `uri`: the path without the query; `/` when the target has none.
    pub fn path(&self) -> &'a [u8] {
        self.path
    }

    /// The query: what follows the first `?` of the target, without a fragment; empty when there
    /// is none (nginx's `$args`).
    pub fn query(&self) -> &'a [u8] {
        self.query
    }

    /// `host`: lowercased, without the port; empty when missing or overlong.
    pub fn host(&self) -> &[u8] {
        &self.host[..self.host_len]
    }

    /// The value of a variable; a missing one is the empty string.
    pub fn get(&mut self, var: &Var) -> &[u8] {
        match var {
            Var::Uri => self.path,
            Var::Host => &self.host[..self.host_len],
            Var::Method => self.req.method,
            Var::RemoteAddr => {
                let len = match self.ip_len {
                    Some(len) => len,
                    None => {
                        // `to_canonical`: a dual-stack listener reports IPv4 clients as
                        // ::ffff:a.b.c.d, which nobody writes in a condition.
                        let len = match self.req.remote.to_canonical() {
                            IpAddr::V4(v4) => ipv4_text(&v4, &mut self.ip),
                            v6 => {
                                // The buffer fits the longest address text, so the write
                                // cannot fail.
                                let mut out = &mut self.ip[..];
                                let _ = write!(out, "{v6}");
                                MAX_IP_TEXT - out.len()
                            }
                        };
                        self.ip_len = Some(len);
                        len
                    }
                };
                &self.ip[..len]
            }
            Var::Arg(name) => arg(self.query, name.as_bytes()),
            Var::Cookie(name) => cookie(&self.req, name.as_bytes()),
            Var::Header(name) => header(&self.req, name.as_bytes()),
        }
    }
}

/// The first query argument `name` (compared ignoring ASCII case, as nginx's `$arg_`), raw:
/// not percent-decoded. An argument without `=` has the empty value.
fn arg<'a>(query: &'a [u8], name: &[u8]) -> &'a [u8] {
    for pair in query.split(|&b| b == b'&') {
        let (k, v) = split_once(pair, b'=');
        if k.eq_ignore_ascii_case(name) {
            return v;
        }
    }
    b""
}

/// The first cookie `name` in the Cookie fields (`a=1; b=2`, RFC 6265 section 4.2.1), with the
/// name compared ignoring ASCII case as nginx's `$cookie_` does.
fn cookie<'a>(req: &Request<'a>, name: &[u8]) -> &'a [u8] {
    for h in req.headers {
        if !h.name.of(req.src).eq_ignore_ascii_case(b"cookie") {
            continue;
        }
        for pair in h.value.of(req.src).split(|&b| b == b';') {
            let (k, v) = split_once(pair.trim_ascii(), b'=');
            if k.eq_ignore_ascii_case(name) {
                return v;
            }
        }
    }
    b""
}

/// The first field whose name equals `name` (lowercase, `-` for `_`) once lowercased with `_`
/// read as `-`, as nginx's `$http_` variables see names.
fn header<'a>(req: &Request<'a>, name: &[u8]) -> &'a [u8] {
    let norm = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    req.headers
        .iter()
        .find(|h| {
            let n = h.name.of(req.src);
            n.len() == name.len() && n.iter().zip(name).all(|(&a, &b)| norm(a) == b)
        })
        .map_or(b"", |h| h.value.of(req.src).trim_ascii())
}

fn split_once(s: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == sep) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, b""),
    }
}

/// Splits a request target into an authority (absolute-form only, RFC 9112 section 3.2.2), the
/// path and the query (RFC 3986 section 3.4; a fragment, never sent by a conforming client, is
/// dropped).
pub(crate) fn split_target(target: &[u8]) -> (Option<&[u8]>, &[u8], &[u8]) {
    let mut authority = None;
    let mut rest = target;
    for scheme in [&b"http://"[..], b"https://"] {
        if rest.len() > scheme.len() && rest[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let after = &rest[scheme.len()..];
            let end = after
                .iter()
                .position(|&b| b == b'/' || b == b'?' || b == b'#')
                .unwrap_or(after.len());
            authority = Some(&after[..end]);
            rest = &after[end..];
            break;
        }
    }
    let rest = match rest.iter().position(|&b| b == b'#') {
        Some(i) => &rest[..i],
        None => rest,
    };
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    (authority, if path.is_empty() { b"/" } else { path }, query)
}

pub(crate) fn strip_port(host: &[u8]) -> &[u8] {
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

/// A request to read variables from in unit tests, here and in the modules that read them.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::http::head::{Header, Span};
    use std::net::IpAddr;

    /// A request held in one buffer, the way the core holds it: header spans into `src`.
    pub(crate) struct Req {
        pub(crate) src: Vec<u8>,
        pub(crate) method: Span,
        pub(crate) target: Span,
        pub(crate) host: Option<Span>,
        pub(crate) headers: Vec<Header>,
        pub(crate) remote: IpAddr,
    }

    impl Req {
        pub(crate) fn new(method: &str, target: &str, headers: &[(&str, &str)]) -> Req {
            let mut src = Vec::new();
            let push = |src: &mut Vec<u8>, s: &str| {
                let start = src.len() as u32;
                src.extend_from_slice(s.as_bytes());
                Span {
                    start,
                    end: src.len() as u32,
                }
            };
            let method = push(&mut src, method);
            let target = push(&mut src, target);
            let mut host = None;
            let mut fields = Vec::new();
            for (n, v) in headers {
                let name = push(&mut src, n);
                let value = push(&mut src, v);
                if n.eq_ignore_ascii_case("host") && host.is_none() {
                    host = Some(value);
                }
                fields.push(Header { name, value });
            }
            Req {
                src,
                method,
                target,
                host,
                headers: fields,
                remote: "192.0.2.7".parse().unwrap(),
            }
        }

        pub(crate) fn get(target: &str, host: &str) -> Req {
            Req::new("GET", target, &[("Host", host)])
        }

        pub(crate) fn from(mut self, ip: &str) -> Req {
            self.remote = ip.parse().unwrap();
            self
        }

        pub(crate) fn view(&self) -> Request<'_> {
            Request {
                method: self.method.of(&self.src),
                target: self.target.of(&self.src),
                host: self.host.map(|h| h.of(&self.src)),
                remote: self.remote,
                headers: &self.headers,
                src: &self.src,
            }
        }

        pub(crate) fn var(&self, name: &str) -> String {
            let var = parse_var(name).unwrap();
            let view = self.view();
            let mut vars = Vars::new(&view);
            String::from_utf8(vars.get(&var).to_vec()).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Req;
    use super::*;

    #[test]
    fn every_variable() {
        let req = Req::new(
            "POST",
            "/a/b?id=1&ID=2&flag&empty=&q=a%20b&id=3",
            &[
                ("Host", "Api.Example.COM:8443"),
                ("X-SW-Authorization-TenantCode", "tenant"),
                ("x_sw_authorization_appcode", "  testapp  "),
                ("X-Dup", "first"),
                ("x-dup", "second"),
                ("Cookie", "a=1; sid=abc"),
                ("cookie", "sid=late;b=2"),
            ],
        );
        let table = [
            ("uri", "/a/b"),
            ("host", "api.example.com"),
            ("request_method", "POST"),
            ("remote_addr", "192.0.2.7"),
            ("arg_id", "1"),
            ("arg_Id", "1"),
            ("arg_flag", ""),
            ("arg_empty", ""),
            ("arg_q", "a%20b"),
            ("arg_missing", ""),
            ("cookie_sid", "abc"),
            ("cookie_a", "1"),
            ("cookie_b", "2"),
            ("cookie_missing", ""),
            ("http_X-SW-Authorization-TenantCode", "tenant"),
            ("http_x_sw_authorization_tenantcode", "tenant"),
            ("http_X_SW_AUTHORIZATION_TENANTCODE", "tenant"),
            ("http_x-sw-authorization-appcode", "testapp"),
            ("http_x_dup", "first"),
            ("http_host", "Api.Example.COM:8443"),
            ("http_x_missing", ""),
        ];
        for (name, want) in table {
            assert_eq!(req.var(name), want, "{name}");
        }
    }

    #[test]
    fn host_path_and_address_forms() {
        let table = [
            (Req::get("/", "a.test:80"), "host", "a.test"),
            (Req::get("/", "[::1]:80"), "host", "[::1]"),
            (
                Req::get("http://Other.Test:8080/p?x=1", "a.test"),
                "host",
                "other.test",
            ),
            (Req::get("http://other.test?x=1", "a.test"), "uri", "/"),
            (Req::get("http://other.test?x=1", "a.test"), "arg_x", "1"),
            (Req::get("/p?x=1#frag", "a"), "arg_x", "1"),
            (Req::get("?x", "a"), "uri", "/"),
            (Req::new("GET", "/", &[]), "host", ""),
            (Req::get("/", &"a".repeat(MAX_HOST_LEN + 1)), "host", ""),
            (
                Req::get("/", "a").from("2001:db8::1"),
                "remote_addr",
                "2001:db8::1",
            ),
            (
                Req::get("/", "a").from("::ffff:10.0.0.1"),
                "remote_addr",
                "10.0.0.1",
            ),
            (
                Req::get("/", "a").from("2001:db8:1:2:3:4:5:6"),
                "remote_addr",
                "2001:db8:1:2:3:4:5:6",
            ),
            (Req::get("/", "a").from("0.0.0.0"), "remote_addr", "0.0.0.0"),
            (
                Req::get("/", "a").from("255.255.255.255"),
                "remote_addr",
                "255.255.255.255",
            ),
            (
                Req::get("/", "a").from("10.100.9.210"),
                "remote_addr",
                "10.100.9.210",
            ),
        ];
        for (req, var, want) in table {
            assert_eq!(
                req.var(var),
                want,
                "{var} of {:?}",
                String::from_utf8_lossy(&req.src)
            );
        }
    }

    #[test]
    fn ports_and_ipv6_hosts() {
        assert_eq!(strip_port(b"a.test:80"), b"a.test");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"a.test"), b"a.test");
    }
}
