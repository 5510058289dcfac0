//! `request_head`: `parse_request` on arbitrary bytes, then `rewrite::request_head` on what it
//! accepts.
//!
//! Input: `[limits, cut lo, cut hi, forward] ++ head bytes`. `limits` picks from [`crate::LIMITS`]
//! (some take a lone LF as a line end); `cut` picks a proper prefix of an accepted head to parse
//! again; `forward` picks what the rewriter is handed: bit 0 the client address, bit 1 the
//! scheme, bits 2-3 the Host override, bits 4-5 the upgrade list (websocket, none, websocket and
//! spdy) and bits 6-7 a route's websocket switch (unset, off, on).
//!
//! What must hold for an accepted head: every span lies within it; it ends in an empty line, CRLF
//! CRLF unless a line of it ends in a lone LF, which `bare_lf` says exactly and only limits that
//! opt in accept (the same limits without the opt-in refuse it as malformed, and change nothing
//! for a head without one); every limit is respected; its proper prefixes are incomplete (so a
//! reader that parses after each read sees it exactly once); the bytes after it change nothing;
//! looser limits accept it the same way. Every Content-Length line holds the digits of the body
//! length, at most 2^63-1; a chunked one has one Transfer-Encoding line saying just that. Host is
//! `uri-host [":" port]` by an oracle written here (an empty one only beside an absolute-form
//! target), CONNECT's target is host and non-empty port, and `upgrade` is the first Upgrade value
//! exactly when an HTTP/1.1 request's Connection lists upgrade.
//!
//! The rewritten head has no lone LF and parses again, without the bare-LF opt-in, as a persistent
//! HTTP/1.1 request with the same method and framing, its target in origin form, its Host and
//! X-Forwarded-* as documented, no hop-by-hop field (HTTP2-Settings among them), no underscore
//! alias of a field hearth knows, and every other field in order: its line byte for byte, or
//! written afresh as `name: value` CRLF when the head had a lone LF. An upgrade request gets one
//! Upgrade field, after those lines and right before `Connection: upgrade`, holding every valid
//! `protocol-name["/"version]` of its Upgrade fields that the list allows, in order (or neither
//! field when none is left), at the range the rewriter returns; the offer made of it accepts a
//! 101 naming any of them (when all fit the offer's 64 bytes), and none naming h2c or nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use hearth::http::head::{
    parse_request, HeadError, Header, Limits, Method, ReqBody, RequestHead, Version,
    MAX_BODY_LENGTH, MAX_HEADERS_CEILING,
};
use hearth::http::rewrite::{self, Forward, Offer, Upgrades};

use crate::{
    assert_no_lone_lf, assert_span_within, fields, has_lone_lf, is_alias, is_one_of, list, named,
    Field, Input, LIMITS, LOOSE, OWN,
};

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
    pub(crate) connection_lists_fields: bool,
    pub(crate) bare_lf: bool,
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
            connection_lists_fields: h.connection_lists_fields,
            bare_lf: h.bare_lf,
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
    let head = &buf[..n];
    assert_eq!(h.bare_lf, has_lone_lf(head), "bare_lf of {head:?}");
    if h.bare_lf {
        assert!(limits.accept_bare_lf, "lone LF accepted without the opt-in");
        assert!(
            head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
            "head does not end in an empty line"
        );
    } else {
        assert!(
            head.ends_with(b"\r\n\r\n"),
            "head does not end in CRLF CRLF"
        );
    }
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
    check_fields(buf, h, headers);

    let owned = OwnedRequest::new(buf, h, headers);
    let mut hs = Vec::new();
    // The bytes after the head do not change it.
    let alone = parse_request(head, limits, &mut hs);
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
    // The bare-LF opt-in decides for heads with a lone LF and for no others.
    let flipped = Limits {
        accept_bare_lf: !limits.accept_bare_lf,
        ..*limits
    };
    match parse_request(buf, &flipped, &mut hs) {
        Err(HeadError::Malformed) if h.bare_lf => {}
        Ok(Some(f)) if !h.bare_lf => {
            assert_eq!(OwnedRequest::new(buf, &f, &hs), owned, "bare-LF opt-in")
        }
        other => panic!("with accept_bare_lf flipped: {other:?}"),
    }
}

/// The framing, Host and upgrade an accepted head reports, against its field lines.
fn check_fields(buf: &[u8], h: &RequestHead, headers: &[Header]) {
    let input = fields(buf, headers);
    let lengths: Vec<&[u8]> = named(&input, "content-length")
        .map(|(_, v)| &v[..])
        .collect();
    let codings: Vec<&[u8]> = named(&input, "transfer-encoding")
        .map(|(_, v)| &v[..])
        .collect();
    match h.body {
        ReqBody::None => assert!(lengths.is_empty() && codings.is_empty()),
        ReqBody::Length(len) => {
            assert!(len <= MAX_BODY_LENGTH, "length {len} past 2^63-1");
            assert!(codings.is_empty());
            for v in &lengths {
                assert_eq!(decimal(v), Some(len), "Content-Length {v:?} for {len}");
            }
        }
        ReqBody::Chunked => {
            assert!(lengths.is_empty());
            assert_eq!(codings.len(), 1, "{codings:?}");
            assert!(codings[0].eq_ignore_ascii_case(b"chunked"), "{codings:?}");
        }
    }

    let target = h.target.of(buf);
    let absolute = absolute_form(target).map(|(authority, _)| authority);
    if h.method == Method::Connect {
        assert!(
            matches!(host_and_port(target), Some((_, Some(port))) if !port.is_empty()),
            "CONNECT to {target:?}"
        );
    }
    let host_fields: Vec<&[u8]> = named(&input, "host").map(|(_, v)| &v[..]).collect();
    assert!(host_fields.len() <= 1, "{host_fields:?}");
    if let Some(v) = host_fields.first() {
        assert!(
            host_and_port(v).is_some() || (v.is_empty() && absolute.is_some()),
            "Host {:?}",
            String::from_utf8_lossy(v)
        );
    }
    let host = h.host.map(|s| s.of(buf));
    match absolute {
        Some(authority) => assert_eq!(host, Some(authority), "host of an absolute-form target"),
        None => assert_eq!(host, host_fields.first().copied(), "host"),
    }
    if let Some(host) = host {
        assert!(host_and_port(host).is_some(), "host {host:?}");
    }

    let lists_upgrade = named(&input, "connection")
        .flat_map(|(_, v)| list(v))
        .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    let first_upgrade = named(&input, "upgrade").next().map(|(_, v)| &v[..]);
    let want = first_upgrade.filter(|_| lists_upgrade && h.version == Version::Http11);
    assert_eq!(h.upgrade.map(|s| s.of(buf)), want, "upgrade");
}

/// `1*DIGIT` as a number, or None (also when it overflows a u64).
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2 by RFC 3986 §3.2.2-3.2.3), read from the RFCs' grammar:
/// the host and the port (None without a colon), or None when `v` is not one. The port is at most
/// five digits and at most 65535, as hearth holds it.
pub(crate) fn host_and_port(v: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (host, rest) = if v.first() == Some(&b'[') {
        let close = v.iter().position(|&b| b == b']')?;
        let inside = &v[1..close];
        let ipv6 = std::str::from_utf8(inside).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok());
        if !ipv6 && !ipvfuture(inside) {
            return None;
        }
        v.split_at(close + 1)
    } else {
        let colon = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let name = &v[..colon];
        if name.is_empty() || !reg_name(name) {
            return None;
        }
        v.split_at(colon)
    };
    match rest {
        [] => Some((host, None)),
        [b':', port @ ..]
            if port.len() <= 5
                && port.iter().all(u8::is_ascii_digit)
                && decimal(port).is_none_or(|p| p <= 65_535) =>
        {
            Some((host, Some(port)))
        }
        _ => None,
    }
}

fn unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// reg-name = *( unreserved / pct-encoded / sub-delims ).
fn reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'%' {
            match name.get(i + 1..i + 3) {
                Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if unreserved_or_sub_delim(name[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ).
fn ipvfuture(inside: &[u8]) -> bool {
    let Some((&v, rest)) = inside.split_first() else {
        return false;
    };
    let Some(dot) = rest.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
    v.eq_ignore_ascii_case(&b'v')
        && !version.is_empty()
        && version.iter().all(u8::is_ascii_hexdigit)
        && !tail.is_empty()
        && tail
            .iter()
            .all(|&b| b == b':' || unreserved_or_sub_delim(b))
}

/// The authority of an http(s) absolute-form target and what follows it, or None for any other
/// form.
fn absolute_form(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let lower = target.to_ascii_lowercase();
    let skip = if lower.starts_with(b"http://") {
        7
    } else if lower.starts_with(b"https://") {
        8
    } else {
        return None;
    };
    let rest = &target[skip..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// The `upgrade` list as the config writes it (lowercase protocol names): the default, and one
/// with another protocol an operator might allow.
static WEBSOCKET: LazyLock<Vec<String>> = LazyLock::new(|| vec!["websocket".to_owned()]);
static WEBSOCKET_AND_SPDY: LazyLock<Vec<String>> =
    LazyLock::new(|| vec!["websocket".to_owned(), "spdy".to_owned()]);

/// The forwarding parameters the `forward` control byte picks.
fn forward(sel: u8) -> Forward<'static> {
    let client_ip = if sel & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    };
    let proto = if sel & 2 == 0 { "http" } else { "https" };
    let host: Option<&'static [u8]> = match (sel >> 2) & 3 {
        0 | 3 => None,
        1 => Some(b"backend:8080"),
        _ => Some(b"[::1]:9001"),
    };
    let allowed: &'static [String] = match (sel >> 4) & 3 {
        0 => &WEBSOCKET,
        1 => Upgrades::NONE.allowed,
        _ => &WEBSOCKET_AND_SPDY,
    };
    let websocket = match sel >> 6 {
        2 => Some(false),
        3 => Some(true),
        _ => None,
    };
    Forward {
        client_ip,
        proto,
        host,
        upgrades: Upgrades { allowed, websocket },
    }
}

/// Whether `upgrades` lets a request ask for protocol `name`, by the rule in `rewrite::Upgrades`'s
/// docs: the route's websocket switch decides for websocket when set, else the list, in any case.
fn allowed(upgrades: &Upgrades, name: &[u8]) -> bool {
    match upgrades.websocket {
        Some(on) if name.eq_ignore_ascii_case(b"websocket") => on,
        _ => upgrades
            .allowed
            .iter()
            .any(|a| name.eq_ignore_ascii_case(a.as_bytes())),
    }
}

/// The name of `protocol-name [ "/" protocol-version ]` (RFC 9110 §7.8), when `e` is one: both
/// parts tokens.
fn protocol(e: &[u8]) -> Option<&[u8]> {
    let token = |s: &[u8]| !s.is_empty() && s.iter().all(|&b| is_tchar(b));
    let (name, version) = match e.iter().position(|&b| b == b'/') {
        Some(slash) => (&e[..slash], Some(&e[slash + 1..])),
        None => (e, None),
    };
    (token(name) && version.is_none_or(token)).then_some(name)
}

/// tchar, RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
/// Hop-by-hop names besides Connection (RFC 9110 §7.6.1, RFC 7540 §3.2.1), never copied as
/// received in either direction (a 101's Upgrade aside).
pub(crate) const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

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

/// The field line `h` of `src` as it will be sent: as received, from its name through its line
/// end, or with `fresh` written again as `name: value` CRLF.
pub(crate) fn sent_line(src: &[u8], h: &Header, fresh: bool) -> Vec<u8> {
    if fresh {
        return [h.name.of(src), b": ", h.value.of(src), b"\r\n"].concat();
    }
    let from = h.name.start as usize;
    let lf = src[h.value.end as usize..]
        .iter()
        .position(|&b| b == b'\n')
        .expect("a field line ends");
    src[from..h.value.end as usize + lf + 1].to_vec()
}

/// The request-target in origin form, as RFC 9112 §3.2.2 asks a proxy to send it, worked out
/// independently of hearth's own helper.
fn origin_form(method: Method, target: &[u8]) -> Vec<u8> {
    if method == Method::Connect || target.starts_with(b"/") || target == b"*" {
        return target.to_vec();
    }
    let (_, path) = absolute_form(target).expect("accepted a target in no known form");
    if path.starts_with(b"/") {
        path.to_vec()
    } else {
        [&b"/"[..], path].concat()
    }
}

fn check_rewrite(buf: &[u8], h: &RequestHead, headers: &[Header], sel: u8) {
    // The output adds up to eight lines; past the parser's ceiling it could not parse again.
    if headers.len() + 8 > MAX_HEADERS_CEILING {
        return;
    }
    let fwd = forward(sel);
    const EARLIER: &[u8] = b"earlier bytes";
    let mut out = EARLIER.to_vec();
    let offered = rewrite::request_head(buf, h, headers, &fwd, &mut out);
    assert!(out.starts_with(EARLIER), "the rewriter appends");
    let offered = offered.map(|r| {
        assert!(r.start >= EARLIER.len() && r.start <= r.end && r.end <= out.len());
        r.start - EARLIER.len()..r.end - EARLIER.len()
    });
    let out = out.split_off(EARLIER.len());
    let shown = String::from_utf8_lossy(&out);
    assert_no_lone_lf(&out, "the upstream request head");

    let method = h.method_span.of(buf);
    let target = origin_form(h.method, h.target.of(buf));
    let line = [method, b" ", &target, b" HTTP/1.1\r\n"].concat();
    assert!(out.starts_with(&line), "request line of {shown:?}");

    let client_host = h.host.map(|s| s.of(buf).to_vec());
    let host = fwd.host.map(<[u8]>::to_vec).or(client_host.clone());
    let input = fields(buf, headers);

    // Hearth's own lines come after the request line, Host and the kept lines; the kept lines
    // are everything neither written by hearth, hop-by-hop, an alias nor named by Connection.
    let listed = connection_names(&input);
    let kept: Vec<&Header> = headers
        .iter()
        .filter(|f| {
            let name = f.name.of(buf);
            !is_one_of(name, &WRITTEN)
                && !is_one_of(name, &HOP_BY_HOP)
                && !is_alias(name)
                && !listed.contains(&name.to_ascii_lowercase())
        })
        .collect();
    let mut prefix = line.clone();
    if let Some(host) = &host {
        prefix.extend_from_slice(&[b"Host: ", &host[..], b"\r\n"].concat());
    }
    for f in &kept {
        prefix.extend_from_slice(&sent_line(buf, f, h.bare_lf));
    }
    assert!(out.starts_with(&prefix), "kept lines of {shown:?}");

    // The new upgrade rule, from its description.
    let offer: Vec<&[u8]> = if h.upgrade.is_some() {
        named(&input, "upgrade")
            .flat_map(|(_, v)| list(v))
            .filter(|e| protocol(e).is_some_and(|name| allowed(&fwd.upgrades, name)))
            .collect()
    } else {
        Vec::new()
    };
    let offer_value = offer.join(&b", "[..]);
    let upgrade_lines = if offer.is_empty() {
        Vec::new()
    } else {
        [
            b"Upgrade: ",
            &offer_value[..],
            b"\r\nConnection: upgrade\r\n",
        ]
        .concat()
    };
    if !upgrade_lines.is_empty() {
        assert!(
            out[prefix.len()..]
                .windows(upgrade_lines.len())
                .any(|w| w == &upgrade_lines[..]),
            "Upgrade right before Connection: upgrade in {shown:?}"
        );
    }
    match &offered {
        Some(r) => {
            assert_eq!(
                &out[r.clone()],
                &offer_value[..],
                "offered range in {shown:?}"
            );
            assert!(
                out[..r.start].ends_with(b"\r\nUpgrade: ") && r.start > prefix.len(),
                "offered range in {shown:?}"
            );
            let kept_offer = Offer::new(&out[r.clone()]);
            // Offer keeps up to 64 bytes of whole elements joined by commas.
            let joined: usize = offer.iter().map(|e| e.len() + 1).sum();
            if joined <= 65 {
                for e in &offer {
                    assert!(kept_offer.accepts([*e]), "offer of {shown:?} refuses {e:?}");
                }
            }
            assert!(!kept_offer.accepts([&b"h2c"[..]]), "h2c offered: {shown:?}");
            assert!(!kept_offer.accepts(std::iter::empty::<&[u8]>()));
        }
        None => assert!(offer.is_empty(), "no range for an offer in {shown:?}"),
    }

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
    let o = match parse_request(&reparse_src, &OWN, &mut oh) {
        Ok(Some(o)) => o,
        other => panic!("rewritten head {shown:?} parsed as {other:?}"),
    };
    assert_eq!(o.head_len, reparse_src.len(), "{shown:?}");
    assert!(!o.bare_lf);
    assert_eq!(o.method, h.method);
    assert_eq!(o.version, Version::Http11);
    assert_eq!(o.body, h.body, "framing changed: {shown:?}");
    assert!(o.keep_alive, "upstream request not persistent: {shown:?}");
    let want_upgrade = (!offer.is_empty()).then_some(&offer_value[..]);
    assert_eq!(
        o.upgrade.map(|s| s.of(&reparse_src)),
        want_upgrade,
        "{shown:?}"
    );
    assert_eq!(o.target.of(&reparse_src), &target[..]);
    let want_host = host.clone().unwrap_or_else(|| b"placeholder".to_vec());
    assert_eq!(o.host.map(|s| s.of(&reparse_src)), Some(&want_host[..]));

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
    let upgrade: Vec<&Field> = named(&output, "upgrade").collect();
    if offer.is_empty() {
        assert!(connection.is_empty() && upgrade.is_empty(), "{shown:?}");
    } else {
        assert_eq!(connection, [&(b"Connection".to_vec(), b"upgrade".to_vec())]);
        assert_eq!(upgrade, [&(b"Upgrade".to_vec(), offer_value.clone())]);
    }
    for name in HOP_BY_HOP.iter().filter(|&&n| n != "upgrade") {
        assert_eq!(named(&output, name).count(), 0, "{name} in {shown:?}");
    }
    assert!(
        !output.iter().any(|(name, _)| is_alias(name)),
        "alias in {shown:?}"
    );

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

    // Nothing but hearth's own fields follows the kept ones.
    let own = ["upgrade", "connection"];
    let after: Vec<&Field> = output
        .iter()
        .skip(usize::from(host.is_some()) + kept.len())
        .filter(|(name, _)| !is_one_of(name, &WRITTEN) && !is_one_of(name, &own))
        .collect();
    assert!(after.is_empty(), "{after:?} in {shown:?}");
}
