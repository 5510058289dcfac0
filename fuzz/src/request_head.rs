//! `request_head`: `parse_request` on arbitrary bytes, then `rewrite::request_head` on what it
//! accepts.
//!
//! Input: `[limits, cut lo, cut hi, forward] ++ head bytes`. `limits` picks from [`crate::LIMITS`];
//! `cut` picks a proper prefix of an accepted head to parse again; `forward` picks the client
//! address, scheme and Host override handed to the rewriter.
//!
//! What must hold for an accepted head: every span lies within it, it ends in CRLF CRLF, every
//! limit is respected, its proper prefixes are incomplete (so a reader that parses after each read
//! sees it exactly once), the bytes after it change nothing, and looser limits accept it the same
//! way. The rewritten head must parse again as a persistent HTTP/1.1 request with the same method,
//! framing and upgrade, its target in origin form, its Host and X-Forwarded-* as documented, no
//! hop-by-hop field, and every other field copied in order, byte for byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hearth::http::head::{
    parse_request, HeadError, Header, Limits, Method, ReqBody, RequestHead, Version,
    MAX_HEADERS_CEILING,
};
use hearth::http::rewrite::{self, Forward};

use crate::{assert_span_within, fields, list, named, Field, Input, LIMITS, LOOSE};

/// A parsed request head copied out of its buffer, so that heads parsed from different buffers
/// (or from different offsets of one) compare with `==`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OwnedRequest {
    pub(crate) head_len: usize,
    pub(crate) method: Method,
    pub(crate) method_bytes: Vec<u8>,
    pub(crate) target: Vec<u8>,
    pub(crate) version: Version,
    pub(crate) host: Option<Vec<u8>>,
    pub(crate) body: ReqBody,
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: Option<Vec<u8>>,
    pub(crate) expect_continue: bool,
    pub(crate) idempotency_key: bool,
    pub(crate) fields: Vec<Field>,
}

impl OwnedRequest {
    pub(crate) fn new(src: &[u8], h: &RequestHead, headers: &[Header]) -> Self {
        OwnedRequest {
            head_len: h.head_len,
            method: h.method,
            method_bytes: h.method_span.of(src).to_vec(),
            target: h.target.of(src).to_vec(),
            version: h.version,
            host: h.host.map(|s| s.of(src).to_vec()),
            body: h.body,
            keep_alive: h.keep_alive,
            upgrade: h.upgrade.map(|s| s.of(src).to_vec()),
            expect_continue: h.expect_continue,
            idempotency_key: h.idempotency_key,
            fields: fields(src, headers),
        }
    }
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let limits = LIMITS[usize::from(input.byte()) % LIMITS.len()];
    let cut = usize::from(input.u16());
    let forward = input.byte();
    let buf = input.rest();

    let mut headers = Vec::new();
    match parse_request(buf, &limits, &mut headers) {
        Ok(None) => {
            assert!(
                buf.len() < limits.max_head_bytes,
                "incomplete at {} bytes, limit {}",
                buf.len(),
                limits.max_head_bytes
            );
            // More room can only let the parser wait longer, never make it decide.
            let loose = parse_request(buf, &LOOSE, &mut Vec::new());
            assert!(matches!(loose, Ok(None)), "looser limits gave {loose:?}");
        }
        Err(e) => check_refused(buf, &limits, e),
        Ok(Some(h)) => {
            check_accepted(buf, &limits, &h, &headers, cut);
            check_rewrite(buf, &h, &headers, forward);
        }
    }
}

fn check_refused(buf: &[u8], limits: &Limits, e: HeadError) {
    assert!(matches!(e.status(), 400 | 414 | 431 | 501), "{e:?}");
    if e == HeadError::HeadTooLarge {
        assert!(buf.len() >= limits.max_head_bytes, "431 below the limit");
    }
}

/// Checks an accepted head's own invariants; `cut` picks a proper prefix to parse again.
pub(crate) fn check_accepted(
    buf: &[u8],
    limits: &Limits,
    h: &RequestHead,
    headers: &[Header],
    cut: usize,
) {
    let n = h.head_len;
    assert!(n > 0 && n <= buf.len(), "head_len {n} of {}", buf.len());
    assert!(n <= limits.max_head_bytes, "head_len {n} over the limit");
    assert!(
        buf[..n].ends_with(b"\r\n\r\n"),
        "head does not end in CRLF CRLF"
    );
    assert_span_within(h.method_span, n, "method");
    assert_span_within(h.target, n, "target");
    assert!(!h.method_span.is_empty() && !h.target.is_empty());
    assert!(
        h.target.len() <= limits.max_uri_bytes,
        "target over the limit"
    );
    if let Some(s) = h.host {
        assert_span_within(s, n, "host");
    }
    if let Some(s) = h.upgrade {
        assert_span_within(s, n, "upgrade");
    }
    assert!(headers.len() <= limits.max_headers.min(MAX_HEADERS_CEILING));
    for f in headers {
        assert_span_within(f.name, n, "field name");
        assert_span_within(f.value, n, "field value");
        assert!(!f.name.is_empty(), "empty field name");
    }
    if h.version == Version::Http11 {
        assert!(h.host.is_some(), "HTTP/1.1 request without a host");
    }
    if h.body == ReqBody::Chunked {
        assert_eq!(h.version, Version::Http11, "chunked HTTP/1.0 request");
    }
    if h.upgrade.is_some() || h.expect_continue {
        assert_eq!(h.version, Version::Http11);
    }

    let owned = OwnedRequest::new(buf, h, headers);
    let mut hs = Vec::new();
    // The bytes after the head do not change it.
    let alone = parse_request(&buf[..n], limits, &mut hs);
    match alone {
        Ok(Some(a)) => assert_eq!(OwnedRequest::new(buf, &a, &hs), owned, "head alone"),
        other => panic!("the head alone gave {other:?}"),
    }
    // No proper prefix is complete or refused.
    for k in [cut % n, n - 1] {
        let prefix = parse_request(&buf[..k], limits, &mut hs);
        assert!(
            matches!(prefix, Ok(None)),
            "prefix of {k} bytes gave {prefix:?}"
        );
    }
    // Looser limits accept the same head the same way.
    match parse_request(buf, &LOOSE, &mut hs) {
        Ok(Some(l)) => assert_eq!(OwnedRequest::new(buf, &l, &hs), owned, "looser limits"),
        other => panic!("looser limits gave {other:?}"),
    }
}

/// The forwarding parameters the `forward` control byte picks.
fn forward(sel: u8) -> Forward<'static> {
    let client_ip = if sel & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    };
    let proto = if sel & 2 == 0 { "http" } else { "https" };
    let host: Option<&'static [u8]> = match (sel >> 2) % 3 {
        0 => None,
        1 => Some(b"backend:8080"),
        _ => Some(b"[::1]:9001"),
    };
    Forward {
        client_ip,
        proto,
        host,
    }
}

/// Names hearth writes itself, so never copies from the client.
const WRITTEN: [&str; 7] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];
/// Hop-by-hop names besides Connection and Upgrade (RFC 9110 §7.6.1).
pub(crate) const HOP_BY_HOP: [&str; 4] = ["keep-alive", "proxy-connection", "te", "trailer"];

pub(crate) fn is_one_of(name: &[u8], names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// The field names a message's Connection fields name. "close", "keep-alive" and "upgrade" are
/// connection options here, not field names: hearth drops or rewrites those fields whatever the
/// list says, and keeps a field that happens to be called "Close" (see the report on issue 3).
pub(crate) fn connection_names(fields: &[Field]) -> Vec<Vec<u8>> {
    named(fields, "connection")
        .flat_map(|(_, v)| list(v))
        .filter(|t| !t.is_empty() && !is_one_of(t, &["close", "keep-alive", "upgrade"]))
        .map(|t| t.to_ascii_lowercase())
        .collect()
}

/// The request-target in origin form, as RFC 9112 §3.2.2 asks a proxy to send it, worked out
/// independently of hearth's own helper.
fn origin_form(method: Method, target: &[u8]) -> Vec<u8> {
    if method == Method::Connect || target.starts_with(b"/") || target == b"*" {
        return target.to_vec();
    }
    let lower = target.to_ascii_lowercase();
    let skip = if lower.starts_with(b"http://") {
        7
    } else if lower.starts_with(b"https://") {
        8
    } else {
        panic!("accepted a target in no known form");
    };
    let rest = &target[skip..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let path = &rest[end..];
    if path.starts_with(b"/") {
        path.to_vec()
    } else {
        [&b"/"[..], path].concat()
    }
}

fn check_rewrite(buf: &[u8], h: &RequestHead, headers: &[Header], sel: u8) {
    // The output adds up to six lines; past the parser's ceiling it could not parse again.
    if headers.len() + 6 > MAX_HEADERS_CEILING {
        return;
    }
    let fwd = forward(sel);
    let mut out = b"earlier bytes".to_vec();
    rewrite::request_head(buf, h, headers, &fwd, &mut out);
    let out = out
        .strip_prefix(&b"earlier bytes"[..])
        .expect("the rewriter appends")
        .to_vec();
    let shown = String::from_utf8_lossy(&out);

    let method = h.method_span.of(buf);
    let target = origin_form(h.method, h.target.of(buf));
    let line = [method, b" ", &target, b" HTTP/1.1\r\n"].concat();
    assert!(out.starts_with(&line), "request line of {shown:?}");

    let client_host = h.host.map(|s| s.of(buf).to_vec());
    let host = fwd.host.map(<[u8]>::to_vec).or(client_host.clone());
    // An HTTP/1.0 request without Host goes upstream as HTTP/1.1 without Host, which hearth's
    // own parser would refuse; a placeholder lets the rest be checked.
    let reparse_src = match &host {
        Some(_) => out.clone(),
        None => [
            &out[..line.len()],
            b"Host: placeholder\r\n",
            &out[line.len()..],
        ]
        .concat(),
    };
    let mut oh = Vec::new();
    let o = match parse_request(&reparse_src, &LOOSE, &mut oh) {
        Ok(Some(o)) => o,
        other => panic!("rewritten head {shown:?} parsed as {other:?}"),
    };
    assert_eq!(o.head_len, reparse_src.len(), "{shown:?}");
    assert_eq!(o.method, h.method);
    assert_eq!(o.version, Version::Http11);
    assert_eq!(o.body, h.body, "framing changed: {shown:?}");
    assert!(o.keep_alive, "upstream request not persistent: {shown:?}");
    assert_eq!(
        o.upgrade.map(|s| s.of(&reparse_src)),
        h.upgrade.map(|s| s.of(buf)),
        "{shown:?}"
    );
    assert_eq!(o.target.of(&reparse_src), &target[..]);
    let want_host = host.clone().unwrap_or_else(|| b"placeholder".to_vec());
    assert_eq!(o.host.map(|s| s.of(&reparse_src)), Some(&want_host[..]));

    let input = fields(buf, headers);
    let mut output = fields(&reparse_src, &oh);
    if host.is_none() {
        output.retain(|(name, _)| !name.eq_ignore_ascii_case(b"host"));
    }
    // RFC 9110 §7.2: Host first.
    if let Some(host) = &host {
        assert_eq!(output.first(), Some(&(b"Host".to_vec(), host.clone())));
    }
    assert_eq!(named(&output, "host").count(), usize::from(host.is_some()));

    let body_fields: Vec<&Field> = named(&output, "content-length")
        .chain(named(&output, "transfer-encoding"))
        .collect();
    match h.body {
        ReqBody::None => assert!(body_fields.is_empty(), "{shown:?}"),
        ReqBody::Length(n) => assert_eq!(
            body_fields,
            [&(b"Content-Length".to_vec(), n.to_string().into_bytes())]
        ),
        ReqBody::Chunked => assert_eq!(
            body_fields,
            [&(b"Transfer-Encoding".to_vec(), b"chunked".to_vec())]
        ),
    }
    let connection: Vec<&Field> = named(&output, "connection").collect();
    if h.upgrade.is_some() {
        assert_eq!(connection, [&(b"Connection".to_vec(), b"upgrade".to_vec())]);
    } else {
        assert!(connection.is_empty(), "{shown:?}");
    }
    for name in HOP_BY_HOP {
        assert_eq!(named(&output, name).count(), 0, "{name} in {shown:?}");
    }

    // X-Forwarded-For: every earlier hop, then this client, on one line.
    let mut xff: Vec<u8> = Vec::new();
    for (_, v) in named(&input, "x-forwarded-for").filter(|(_, v)| !v.is_empty()) {
        xff.extend_from_slice(v);
        xff.extend_from_slice(b", ");
    }
    xff.extend_from_slice(fwd.client_ip.to_string().as_bytes());
    let values = |name| -> Vec<Vec<u8>> { named(&output, name).map(|(_, v)| v.clone()).collect() };
    assert_eq!(values("x-forwarded-for"), [xff]);
    assert_eq!(values("x-forwarded-proto"), [fwd.proto.as_bytes().to_vec()]);
    assert_eq!(
        values("x-forwarded-host"),
        client_host.into_iter().collect::<Vec<_>>()
    );

    // Every other field goes through in order, byte for byte, unless it is hop-by-hop.
    let listed = connection_names(&input);
    let expected: Vec<&Field> = input
        .iter()
        .filter(|(name, _)| {
            if is_one_of(name, &WRITTEN) || is_one_of(name, &HOP_BY_HOP) {
                false
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                h.upgrade.is_some()
            } else {
                !listed.contains(&name.to_ascii_lowercase())
            }
        })
        .collect();
    let copied: Vec<&Field> = output
        .iter()
        .filter(|(name, _)| !is_one_of(name, &WRITTEN))
        .collect();
    assert_eq!(copied, expected, "{shown:?}");
}
