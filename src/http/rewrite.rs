//! What goes to the upstream and what goes back to the client: head rewriting (RFC 9110 §7.6).
//!
//! This module owns the hop boundary. Hop-by-hop fields (RFC 9110 §7.6.1: Connection and every
//! field it names, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade) never cross it, and the
//! framing fields are never copied but written afresh from the parsed [`ReqBody`] / [`RespBody`],
//! so the peer on the other side frames the body exactly as hearth does. Fields hearth writes
//! itself (Host, framing, X-Forwarded-*) cannot be removed by a client listing them in
//! Connection. Underscore aliases of the fields hearth knows (`X_Forwarded_For`, `Keep_Alive`;
//! see [`alias_of`]) are dropped in both directions, since a CGI-style peer reads them as the
//! field itself; the parser has already refused aliases of framing fields. Everything else is
//! copied in order, byte for byte as received. Output is appended to the caller's reused `Vec`;
//! nothing else is allocated.
//!
//! Which protocols an upstream's `upgrade` list may name ([`upgrade_protocol`], never h2c) and
//! the default list ([`default_upgrade`]) are defined next to [`Upgrades`], which applies them;
//! `config` validates the list with them and re-exports both.
//!
//! A route may change the request on its way upstream (APISIX's `proxy-rewrite`): an [`Edit`]
//! gives the method, the target and the fields it sets, adds or removes, and
//! [`request_head_with`] applies it while writing the head. The hop boundary stays hearth's: an
//! edit may not name a field that [`edit_refusal`] refuses (Host, framing, hop-by-hop, and their
//! underscore aliases), which the configuration checks before any request. [`request_head`] is
//! the same writer with no edit ([`Unchanged`]), compiled apart, so a route without one pays
//! nothing for the possibility.

use std::io::Write as _;
use std::net::IpAddr;

use super::field::{absolute_authority, alias_of, field_name, is_token, list_elements, FieldName};
use super::head::{Header, ReqBody, RequestHead, RespBody, ResponseHead, Version};

/// How the request reaches the upstream.
pub struct Forward<'a> {
    pub client_ip: IpAddr,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: &'static str,
    /// Host to send instead of the client's (pass_host node or rewrite); None passes the client's.
    pub host: Option<&'a [u8]>,
    /// The protocols an Upgrade may ask the upstream for.
    pub upgrades: Upgrades<'a>,
}

/// Which protocols a request may ask the upstream to switch to (RFC 9110 §7.8), by protocol name
/// without version, compared case-insensitively: the upstream's `upgrade` list, where a route's
/// `enable_websocket` (APISIX's spelling) decides for `websocket` when it is given. A protocol
/// not allowed is dropped from the Upgrade field; with none left the request goes on without
/// Upgrade, so a tunnel can only ever be opened to a protocol the operator allowed. That is what
/// keeps h2c out: behind an h2c tunnel every request would reach the upstream unrouted.
#[derive(Clone, Copy, Debug)]
pub struct Upgrades<'a> {
    pub allowed: &'a [String],
    pub websocket: Option<bool>,
}

impl Upgrades<'_> {
    /// No upgrade at all.
    pub const NONE: Upgrades<'static> = Upgrades {
        allowed: &[],
        websocket: None,
    };

    pub fn allows(&self, name: &[u8]) -> bool {
        match self.websocket {
            Some(on) if name.eq_ignore_ascii_case(b"websocket") => on,
            _ => self
                .allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(name)),
        }
    }
}

/// The default `upgrade` list.
pub fn default_upgrade() -> Vec<String> {
    vec!["websocket".to_owned()]
}

/// Checks one `upgrade` entry and returns it lowercased: a protocol name (a token, no version).
/// h2c and h2 are refused: an h2c tunnel carries HTTP/2 requests the route table never sees (RFC
/// 9113 §3.1 deprecates the upgrade), and h2 is not negotiated by Upgrade at all.
pub fn upgrade_protocol(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if lower == "h2c" || lower == "h2" {
        return Err(format!(
            "{name:?} cannot be allowed: requests inside an h2c tunnel would reach the upstream \
             without passing the route table (RFC 9113 §3.1 deprecates the h2c upgrade)"
        ));
    }
    let token = !lower.is_empty()
        && lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!(
            "{name:?} is not a protocol name; expected a token such as \"websocket\" (no version)"
        ));
    }
    Ok(lower)
}

/// The protocols an upgrade request offered its upstream (the value of the Upgrade field hearth
/// wrote), kept with the exchange so that a 101 can be held to them. Fixed-size, so keeping it
/// costs the exchange no allocation; a longer offer keeps its whole elements that fit, which can
/// only make hearth refuse a 101 it might have taken.
#[derive(Clone, Copy, Debug)]
pub struct Offer {
    bytes: [u8; Offer::MAX],
    len: u8,
}

impl Offer {
    const MAX: usize = 64;

    /// Nothing offered: any 101 is refused.
    pub const NONE: Offer = Offer {
        bytes: [0; Offer::MAX],
        len: 0,
    };

    pub fn new(value: &[u8]) -> Offer {
        let mut o = Offer::NONE;
        let mut len = 0;
        for e in list_elements(value) {
            let sep = usize::from(len > 0);
            if len + sep + e.len() > Offer::MAX {
                break;
            }
            if sep == 1 {
                o.bytes[len] = b',';
            }
            o.bytes[len + sep..len + sep + e.len()].copy_from_slice(e);
            len += sep + e.len();
        }
        o.len = len as u8;
        o
    }

    pub fn is_some(&self) -> bool {
        self.len > 0
    }

    /// Whether a 101 whose Upgrade fields are `values` switches to protocols that were offered:
    /// at least one is named, and every one named was offered (by name; RFC 9110 §7.8).
    pub fn accepts<'a>(&self, values: impl IntoIterator<Item = &'a [u8]>) -> bool {
        let offered = &self.bytes[..usize::from(self.len)];
        let mut named = 0;
        for e in values.into_iter().flat_map(list_elements) {
            let name = protocol_name(e);
            let known = offered
                .split(|&b| b == b',')
                .any(|o| protocol_name(o).eq_ignore_ascii_case(name));
            if name.is_empty() || !known {
                return false;
            }
            named += 1;
        }
        named > 0
    }
}

/// The name part of an Upgrade list element, `protocol-name [ "/" protocol-version ]`.
pub fn protocol_name(element: &[u8]) -> &[u8] {
    element.split(|&b| b == b'/').next().unwrap_or_default()
}

/// What a route changes in a request on its way upstream (APISIX's `proxy-rewrite`), asked while
/// [`request_head_with`] writes the head. The Host is not among it: a route's Host travels in
/// [`Forward::host`], where it meets the upstream's `pass_host`.
pub trait Edit {
    /// The method to send instead of the client's.
    fn method(&self) -> Option<&[u8]>;
    /// Appends the target to send instead of the client's, in origin-form (path and query), and
    /// says true; or appends nothing and says false, to send the client's.
    fn target(&mut self, out: &mut Vec<u8>) -> bool;
    /// Whether fields called `name` that hearth would send are left out, because the edit sets or
    /// removes them. Asked of the client's end-to-end fields and of hearth's own X-Forwarded-*.
    fn drops(&self, name: &[u8]) -> bool;
    /// Appends the field lines the edit sets or adds, each ending in CRLF.
    fn fields(&mut self, out: &mut Vec<u8>);
}

/// No edit: what every route without `proxy-rewrite` sends. Each answer is a constant, so
/// [`request_head`] compiles as if edits did not exist.
pub struct Unchanged;

impl Edit for Unchanged {
    #[inline(always)]
    fn method(&self) -> Option<&[u8]> {
        None
    }

    #[inline(always)]
    fn target(&mut self, _: &mut Vec<u8>) -> bool {
        false
    }

    #[inline(always)]
    fn drops(&self, _: &[u8]) -> bool {
        false
    }

    #[inline(always)]
    fn fields(&mut self, _: &mut Vec<u8>) {}
}

/// Why an edit may not set, add or remove fields called `name`; None when it may. The Host has a
/// setting of its own; the framing fields are written from how the client framed the body; hop-by-
/// hop fields never cross hearth (RFC 9110 §7.6.1); Idempotency-Key decides replays. An
/// underscore alias of a field hearth knows is refused too, since upstreams that read `_` as `-`
/// would take it for that field.
pub fn edit_refusal(name: &[u8]) -> Option<&'static str> {
    if !is_token(name) {
        return Some(
            "is not a field name: a token of letters, digits and !#$%&'*+-.^_`|~ (RFC 9110 §5.1)",
        );
    }
    match field_name(name) {
        FieldName::Host => Some("is set with `host`, where it meets the upstream's pass_host"),
        FieldName::ContentLength | FieldName::TransferEncoding => Some(
            "frames the body, which hearth writes from how the client framed it (RFC 9112 §6)",
        ),
        FieldName::Connection
        | FieldName::KeepAlive
        | FieldName::ProxyConnection
        | FieldName::Te
        | FieldName::Trailer
        | FieldName::Upgrade
        | FieldName::Http2Settings => {
            Some("is hop-by-hop (RFC 9110 §7.6.1): hearth never forwards it")
        }
        FieldName::IdempotencyKey => {
            Some("decides whether hearth may replay the request; a route may not change it")
        }
        FieldName::Expect
        | FieldName::XForwardedFor
        | FieldName::XForwardedProto
        | FieldName::XForwardedHost => None,
        FieldName::Other if alias_of(name) != FieldName::Other => Some(
            "is an underscore spelling of a field hearth handles itself, which upstreams that read \
             '_' as '-' would take for that field",
        ),
        FieldName::Other => None,
    }
}

/// Appends the upstream request head for `head` (parsed from `src`, with fields `headers`) to
/// `out`. Requests to upstreams are always HTTP/1.1 and persistent, so no Connection field is
/// written except for an upgrade. Returns where in `out` the value of the Upgrade field went, when
/// one did: the protocols offered, which the caller holds a 101 to.
pub fn request_head(
    src: &[u8],
    head: &RequestHead,
    headers: &[Header],
    fwd: &Forward,
    out: &mut Vec<u8>,
) -> Option<std::ops::Range<usize>> {
    request_head_with(src, head, headers, fwd, &mut Unchanged, out)
}

/// [`request_head`] with a route's [`Edit`]: its method and target replace the client's, the
/// fields it names are left out, and the lines it writes follow the client's fields. When the edit
/// gives a method that carries content (POST, PUT, PATCH) to a request without a body, the head
/// says `Content-Length: 0`, as RFC 9110 §8.6 asks and as some servers insist.
pub fn request_head_with<E: Edit>(
    src: &[u8],
    head: &RequestHead,
    headers: &[Header],
    fwd: &Forward,
    edit: &mut E,
    out: &mut Vec<u8>,
) -> Option<std::ops::Range<usize>> {
    // Whether a method the edit gives carries content, for a request without a body below.
    let content_method = match edit.method() {
        Some(m) => {
            out.extend_from_slice(m);
            matches!(m, b"POST" | b"PUT" | b"PATCH")
        }
        None => {
            out.extend_from_slice(head.method_span.of(src));
            false
        }
    };
    out.push(b' ');
    if !edit.target(out) {
        write_origin_form(head.target.of(src), out);
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    // RFC 9110 §7.2: Host goes first. An HTTP/1.0 request may have none, and then sends none.
    let client_host = head.host.map(|h| h.of(src));
    if let Some(host) = fwd.host.or(client_host) {
        field(out, b"Host", host);
    }

    let named = ConnectionNames::new(src, headers, head.connection_lists_fields);
    let own_forwarded_for = !edit.drops(b"x-forwarded-for");
    let mut forwarded_for = false;
    let mut lines = Lines::new(src, headers, head.head_len, head.bare_lf);
    for (i, h) in headers.iter().enumerate() {
        let name = h.name.of(src);
        let copy = match field_name(name) {
            FieldName::Other => {
                !named.lists(name) && alias_of(name) == FieldName::Other && !edit.drops(name)
            }
            FieldName::Expect | FieldName::IdempotencyKey => {
                !named.lists(name) && !edit.drops(name)
            }
            FieldName::XForwardedFor => {
                forwarded_for = own_forwarded_for;
                false
            }
            // Written below from what hearth parsed, or hop-by-hop.
            FieldName::Host
            | FieldName::ContentLength
            | FieldName::TransferEncoding
            | FieldName::Connection
            | FieldName::KeepAlive
            | FieldName::ProxyConnection
            | FieldName::Te
            | FieldName::Trailer
            | FieldName::Upgrade
            | FieldName::Http2Settings
            | FieldName::XForwardedProto
            | FieldName::XForwardedHost => false,
        };
        if copy {
            lines.keep(i, out);
        }
    }
    lines.finish(out);
    edit.fields(out);
    let offered = match head.upgrade {
        Some(_) => write_upgrade(src, headers, &fwd.upgrades, out),
        None => None,
    };
    match head.body {
        ReqBody::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(n, out);
            out.extend_from_slice(b"\r\n");
        }
        ReqBody::Chunked => field(out, b"Transfer-Encoding", b"chunked"),
        ReqBody::None if content_method => field(out, b"Content-Length", b"0"),
        ReqBody::None => {}
    }

    // One line holding every earlier hop and then this client, so that upstreams which read only
    // the first or last line still see the whole chain.
    if own_forwarded_for {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if forwarded_for {
            for h in headers {
                if field_name(h.name.of(src)) != FieldName::XForwardedFor {
                    continue;
                }
                let value = h.value.of(src);
                if !value.is_empty() {
                    out.extend_from_slice(value);
                    out.extend_from_slice(b", ");
                }
            }
        }
        push_ip(out, &fwd.client_ip);
        out.extend_from_slice(b"\r\n");
    }
    if !edit.drops(b"x-forwarded-proto") {
        field(out, b"X-Forwarded-Proto", fwd.proto.as_bytes());
    }
    if let Some(host) = client_host.filter(|_| !edit.drops(b"x-forwarded-host")) {
        field(out, b"X-Forwarded-Host", host);
    }
    out.extend_from_slice(b"\r\n");
    offered
}

/// Writes `Upgrade` with the protocols of the request's Upgrade fields that `upgrades` allows,
/// and `Connection: upgrade`; nothing when none is allowed. Returns the written value's range.
fn write_upgrade(
    src: &[u8],
    headers: &[Header],
    upgrades: &Upgrades,
    out: &mut Vec<u8>,
) -> Option<std::ops::Range<usize>> {
    let elements = headers
        .iter()
        .filter(|h| field_name(h.name.of(src)) == FieldName::Upgrade)
        .flat_map(|h| list_elements(h.value.of(src)))
        .filter(|e| is_protocol(e) && upgrades.allows(protocol_name(e)));
    let line = out.len();
    out.extend_from_slice(b"Upgrade: ");
    let start = out.len();
    for (i, e) in elements.enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(e);
    }
    if out.len() == start {
        out.truncate(line);
        return None;
    }
    let end = out.len();
    out.extend_from_slice(b"\r\n");
    field(out, b"Connection", b"upgrade");
    Some(start..end)
}

/// `protocol-name [ "/" protocol-version ]`, both tokens (RFC 9110 §7.8).
fn is_protocol(element: &[u8]) -> bool {
    let mut parts = element.splitn(2, |&b| b == b'/');
    let name = parts.next().unwrap_or_default();
    is_token(name) && parts.next().is_none_or(is_token)
}

/// How the client connection stands, for the response head written to it.
pub struct ClientSide {
    pub version: Version,
    /// The client connection stays open after this response.
    pub keep_alive: bool,
    /// The body is sent to the client without chunked framing, delimited by close (for an
    /// HTTP/1.0 client, RFC 9112 §6.1, which cannot read chunked).
    pub dechunk: bool,
    /// The response answers a HEAD request; its framing fields describe the body a GET would have
    /// had and are passed through as the RespBody::None rule says.
    pub head_request: bool,
}

/// Appends the client response head for `head` (parsed from `src`) to `out`. Interim 1xx
/// responses go through here too.
///
/// A body delimited by close (`RespBody::Close`, or chunked with `dechunk`) always gets
/// `Connection: close`, whatever `client.keep_alive` says: the caller must close after it.
pub fn response_head(
    src: &[u8],
    head: &ResponseHead,
    headers: &[Header],
    client: &ClientSide,
    out: &mut Vec<u8>,
) {
    // RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(head.status, out);
    out.push(b' ');
    out.extend_from_slice(head.reason.of(src));
    out.extend_from_slice(b"\r\n");

    let switching = head.status == 101;
    let interim = head.status < 200 && !switching;
    // RFC 9110 §8.6: Content-Length of a HEAD or 304 response describes the representation, so it
    // passes through; in a 1xx or 204 it is forbidden and dropped.
    let pass_length = head.body == RespBody::None && head.status >= 200 && head.status != 204;
    let named = ConnectionNames::new(src, headers, head.connection_lists_fields);
    let mut length_written = false;
    let mut lines = Lines::new(src, headers, head.head_len, head.bare_lf);
    for (i, h) in headers.iter().enumerate() {
        let name = h.name.of(src);
        let copy = match field_name(name) {
            FieldName::Upgrade => switching,
            FieldName::ContentLength => {
                // Repeats were checked identical by the parser; one is enough.
                let first = pass_length && !length_written;
                length_written |= first;
                first
            }
            FieldName::Other => !named.lists(name) && alias_of(name) == FieldName::Other,
            FieldName::Host
            | FieldName::Expect
            | FieldName::IdempotencyKey
            | FieldName::XForwardedFor
            | FieldName::XForwardedProto
            | FieldName::XForwardedHost => !named.lists(name),
            FieldName::TransferEncoding
            | FieldName::Connection
            | FieldName::KeepAlive
            | FieldName::ProxyConnection
            | FieldName::Te
            | FieldName::Trailer
            | FieldName::Http2Settings => false,
        };
        if copy {
            lines.keep(i, out);
        }
    }
    lines.finish(out);

    let mut close_delimited = false;
    match head.body {
        RespBody::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(n, out);
            out.extend_from_slice(b"\r\n");
        }
        RespBody::Chunked if !client.dechunk => field(out, b"Transfer-Encoding", b"chunked"),
        RespBody::Chunked | RespBody::Close => close_delimited = true,
        RespBody::None => {}
    }

    if switching {
        field(out, b"Connection", b"upgrade");
    } else if interim {
        // Persistence is the final response's to announce.
    } else if !client.keep_alive || close_delimited {
        field(out, b"Connection", b"close");
    } else if client.version == Version::Http10 {
        // RFC 9112 §9.3: a 1.0 client assumes close unless told otherwise.
        field(out, b"Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// Copies kept field lines as received, CRLF included, each run of consecutive kept lines in one
/// copy: the common response keeps all but its framing and Connection lines, so this is one or
/// two copies where writing name and value afresh was four appends per field. Line `i` runs from
/// its name to the next line's name; the last one to the blank line that ends the head. The
/// parser has refused everything that would make a line's bytes mean something else to the next
/// hop (obs-fold, bare CR, whitespace before the colon), so verbatim is exact. A head with a line
/// ended by LF alone (`fresh`) is the exception: each kept line is written afresh, name, ": ",
/// value and CRLF, so that what hearth sends on always ends its lines in CRLF.
struct Lines<'a> {
    src: &'a [u8],
    headers: &'a [Header],
    /// Where the blank line ending the head starts.
    blank: usize,
    /// The run of kept lines not yet copied.
    run: std::ops::Range<usize>,
    fresh: bool,
}

impl<'a> Lines<'a> {
    fn new(src: &'a [u8], headers: &'a [Header], head_len: usize, fresh: bool) -> Self {
        Lines {
            src,
            headers,
            blank: head_len.saturating_sub(2),
            run: 0..0,
            fresh,
        }
    }

    /// Keeps line `i`.
    fn keep(&mut self, i: usize, out: &mut Vec<u8>) {
        if self.fresh {
            let h = self.headers[i];
            field(out, h.name.of(self.src), h.value.of(self.src));
            return;
        }
        let start = self.headers[i].name.start as usize;
        let end = self
            .headers
            .get(i + 1)
            .map_or(self.blank, |next| next.name.start as usize);
        if self.run.end != start || self.run.is_empty() {
            self.finish(out);
            self.run.start = start;
        }
        self.run.end = end;
    }

    /// Copies the pending run.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(bytes) = self.src.get(self.run.clone()) {
            out.extend_from_slice(bytes);
        }
        self.run = 0..0;
    }
}

/// The field names listed in a message's Connection fields (RFC 9110 §7.6.1), read in place.
struct ConnectionNames<'a> {
    src: &'a [u8],
    headers: &'a [Header],
    /// Whether any listed name is other than close, keep-alive and upgrade. Those three name
    /// fields handled anyway, so the common message skips the per-field search.
    any: bool,
}

impl<'a> ConnectionNames<'a> {
    /// `any`: the parser's `connection_lists_fields` for the message.
    fn new(src: &'a [u8], headers: &'a [Header], any: bool) -> Self {
        ConnectionNames { src, headers, any }
    }

    fn listed(src: &'a [u8], headers: &'a [Header]) -> impl Iterator<Item = &'a [u8]> {
        headers
            .iter()
            .filter(move |h| field_name(h.name.of(src)) == FieldName::Connection)
            .flat_map(move |h| list_elements(h.value.of(src)))
    }

    /// Whether a field called `name` is named by the Connection list. "close" there is the
    /// connection option, never a field name: a field called Close is kept whatever else the
    /// list names, as when close is all it names (`any` false).
    fn lists(&self, name: &[u8]) -> bool {
        self.any
            && Self::listed(self.src, self.headers)
                .any(|t| t.eq_ignore_ascii_case(name) && !t.eq_ignore_ascii_case(b"close"))
    }
}

/// Writes the target as origin-form: an absolute-form target (RFC 9112 §3.2.2) loses its scheme
/// and authority, which travel in Host, because origin servers need only accept origin-form.
/// Inlined: each [`Edit`] has its own copy of the writer, and callgrind showed the call a dozen
/// instructions per request dearer once there were two.
#[inline(always)]
fn write_origin_form(target: &[u8], out: &mut Vec<u8>) {
    match absolute_authority(target) {
        Some((_, end)) => {
            let rest = &target[end..];
            if !rest.starts_with(b"/") {
                out.push(b'/');
            }
            out.extend_from_slice(rest);
        }
        None => out.extend_from_slice(target),
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `ip`: IPv4 by hand, since the `fmt` machinery costs more than the rest of a short
/// head's rewrite (perf showed it on the per-request path); IPv6 through `Display` for its zero
/// compression rules (writing into a Vec cannot fail and does not allocate).
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: &std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => push_ipv4(out, v4),
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

pub(crate) fn push_ipv4(out: &mut Vec<u8>, ip: &std::net::Ipv4Addr) {
    // Every request's X-Forwarded-For: formatted on the stack and appended once.
    let mut text = [0u8; 15];
    let len = ipv4_text(ip, &mut text);
    out.extend_from_slice(&text[..len]);
}

/// Writes an IPv4 address as text at the start of `text` (which holds the longest, 15 bytes)
/// and returns its length. By hand: the `fmt` machinery costs several times the rest of writing
/// a short head (perf, on X-Forwarded-For) or of reading a variable (callgrind, `remote_addr`).
pub(crate) fn ipv4_text(ip: &std::net::Ipv4Addr, text: &mut [u8]) -> usize {
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    len
}

/// Appends a status code, which the parser checked is three digits.
fn push_status(status: u16, out: &mut Vec<u8>) {
    match u8::try_from(status / 100) {
        Ok(h @ 1..=9) => {
            let rest = status % 100;
            out.extend_from_slice(&[b'0' + h, b'0' + (rest / 10) as u8, b'0' + (rest % 10) as u8]);
        }
        _ => push_decimal(u64::from(status), out),
    }
}

/// Appends `n` in decimal, without going through `fmt`.
pub(crate) fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::super::head::{parse_request, parse_response, Limits};
    use super::*;

    const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn upstream_request(input: &[u8], fwd: &Forward) -> String {
        let mut headers = Vec::new();
        let head = parse_request(input, &Limits::default(), &mut headers)
            .unwrap()
            .unwrap();
        let mut out = b"leftover".to_vec();
        request_head(input, &head, &headers, fwd, &mut out);
        let out = out.strip_prefix(b"leftover").expect("appends").to_vec();
        String::from_utf8(out).unwrap()
    }

    fn client_response(input: &[u8], head_request: bool, client: &ClientSide) -> String {
        let mut headers = Vec::new();
        let head = parse_response(input, &Limits::default(), head_request, &mut headers)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        response_head(input, &head, &headers, client, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The default `upgrade` list: websocket only.
    static WEBSOCKET: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(default_upgrade);

    fn ws() -> Upgrades<'static> {
        Upgrades {
            allowed: &WEBSOCKET,
            websocket: None,
        }
    }

    fn plain(ip: IpAddr) -> Forward<'static> {
        Forward {
            client_ip: ip,
            proto: "http",
            host: None,
            upgrades: ws(),
        }
    }

    #[test]
    fn requests() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let https = Forward {
            client_ip: V4,
            proto: "https",
            host: None,
            upgrades: ws(),
        };
        let rewrite_host = Forward {
            client_ip: V4,
            proto: "http",
            host: Some(b"backend:8080"),
            upgrades: ws(),
        };
        let no_websocket = Forward {
            upgrades: Upgrades {
                allowed: &WEBSOCKET,
                websocket: Some(false),
            },
            ..plain(V4)
        };
        let spdy = ["spdy".to_owned(), "websocket".to_owned()];
        let spdy = Forward {
            upgrades: Upgrades {
                allowed: &spdy,
                websocket: None,
            },
            ..plain(V4)
        };
        let table: &[(&str, &[u8], &Forward, &str)] = &[
            (
                "browser get: hop-by-hop dropped, forwarding fields added",
                b"GET /a?b HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\nConnection: keep-alive\r\nKeep-Alive: 300\r\n\r\n",
                &plain(V4),
                "GET /a?b HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n\r\n",
            ),
            (
                "host moves first, order and case kept otherwise",
                b"GET / HTTP/1.1\r\naccept: */*\r\nhost: Example.com\r\nX-B: 2\r\nx-a: 1\r\n\r\n",
                &plain(V4),
                "GET / HTTP/1.1\r\nHost: Example.com\r\naccept: */*\r\nX-B: 2\r\nx-a: 1\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: Example.com\r\n\r\n",
            ),
            (
                "connection-named and hop-by-hop fields dropped; hearth's own fields survive",
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nconnection: x-trace, host, x-forwarded-for\r\nX-Secret: 1\r\nX-Keep: 2\r\nX-Trace: 3\r\nTE: trailers\r\nTrailer: X\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\r\n",
                &plain(V4),
                "GET / HTTP/1.1\r\nHost: h\r\nX-Keep: 2\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "a field called Close is kept, whether or not the list names more than close",
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, x-a\r\nClose: 1\r\nX-A: 2\r\n\r\n",
                &plain(V4),
                "GET / HTTP/1.1\r\nHost: h\r\nClose: 1\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "x-forwarded-for appended on one line; proto and host replaced",
                b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: gopher\r\nx-forwarded-for: 10.0.0.2, 10.0.0.3\r\nX-Forwarded-Host: evil\r\nX-Forwarded-For:\r\n\r\n",
                &Forward { client_ip: v6, proto: "https", host: None, upgrades: ws() },
                "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 2001:db8::1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "content-length re-emitted once",
                b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\nContent-Type: a/b\r\n\r\n",
                &https,
                "POST /f HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\nContent-Length: 5\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "chunked re-emitted",
                b"POST /f HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
                &plain(V4),
                "POST /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "host override; x-forwarded-host keeps the client's",
                b"GET / HTTP/1.1\r\nHost: public.example\r\n\r\n",
                &rewrite_host,
                "GET / HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: public.example\r\n\r\n",
            ),
            (
                "http/1.0 without host sends none and becomes 1.1",
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
                &plain(V4),
                "GET / HTTP/1.1\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "http/1.0 without host, override given",
                b"GET / HTTP/1.0\r\n\r\n",
                &rewrite_host,
                "GET / HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\n\r\n",
            ),
            (
                "upgrade kept with connection: upgrade",
                b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
                &plain(V4),
                "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\nUpgrade: websocket\r\nConnection: upgrade\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "h2c upgrade stripped with HTTP2-Settings and the Connection tokens naming them",
                b"GET /public/x HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
                &plain(V4),
                "GET /public/x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "HTTP2-Settings dropped even when Connection does not name it",
                b"GET / HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAMAAABk\r\nHTTP2_Settings: x\r\n\r\n",
                &plain(V4),
                "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "only the allowed protocols of a list are offered, over several lines",
                b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, WebSocket/13\r\nUpgrade: spdy/3.1\r\nConnection: upgrade\r\n\r\n",
                &plain(V4),
                "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket/13\r\nConnection: upgrade\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "another protocol allowed by the upstream",
                b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, SPDY/3.1, bogus/\r\nConnection: upgrade\r\n\r\n",
                &spdy,
                "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: SPDY/3.1\r\nConnection: upgrade\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "websocket turned off by the route",
                b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                &no_websocket,
                "GET /ws HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "absolute-form becomes origin-form, host from the target",
                b"GET http://a.example:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
                &plain(V4),
                "GET /p?q HTTP/1.1\r\nHost: a.example:81\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.example:81\r\n\r\n",
            ),
            (
                "absolute-form with empty path",
                b"GET HTTPS://a.example?q HTTP/1.1\r\nHost: a.example\r\n\r\n",
                &plain(V4),
                "GET /?q HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.example\r\n\r\n",
            ),
            (
                "asterisk-form kept",
                b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
                &plain(V4),
                "OPTIONS * HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "kept lines go out as received, whitespace and all, in runs around dropped ones",
                b"GET / HTTP/1.1\r\nX-A:  1 \r\nX-B:\t2\r\nKeep-Alive: 1\r\nX-C:3\r\nHost: h\r\nX-D: \r\n\r\n",
                &plain(V4),
                "GET / HTTP/1.1\r\nHost: h\r\nX-A:  1 \r\nX-B:\t2\r\nX-C:3\r\nX-D: \r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "underscore aliases of known fields dropped, other underscore names kept",
                b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nx_forwarded_proto: https\r\nX_Forwarded-Host: evil\r\nKeep_Alive: 1\r\nProxy_Connection: close\r\nIdempotency_Key: k\r\nX_Api_Key: secret\r\n\r\n",
                &plain(V4),
                "GET / HTTP/1.1\r\nHost: h\r\nX_Api_Key: secret\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
        ];
        for (name, input, fwd, want) in table {
            assert_eq!(upstream_request(input, fwd), *want, "{name}");
        }
    }

    #[test]
    fn bare_lf_heads_go_on_with_crlf() {
        let limits = Limits {
            accept_bare_lf: true,
            ..Limits::default()
        };
        let input = b"POST /x HTTP/1.1\nHost: h\nX-A:  1\t\nContent-Length: 3\nX-B: 2\n\n";
        let mut headers = Vec::new();
        let head = parse_request(input, &limits, &mut headers)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        request_head(input, &head, &headers, &plain(V4), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 3\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n"
        );
        let ka = ClientSide {
            version: Version::Http11,
            keep_alive: true,
            dechunk: false,
            head_request: false,
        };
        assert_eq!(
            client_response(
                b"HTTP/1.1 200 OK\nServer: old\nContent-Length: 8\n\n",
                false,
                &ka
            ),
            "HTTP/1.1 200 OK\r\nServer: old\r\nContent-Length: 8\r\n\r\n"
        );
        assert_eq!(
            client_response(b"HTTP/1.1 204\r\nX: 1\n\r\n", false, &ka),
            "HTTP/1.1 204 \r\nX: 1\r\n\r\n"
        );
    }

    #[test]
    fn offers_hold_101s_to_what_was_asked() {
        let offer = Offer::new(b"websocket, SPDY/3.1");
        assert!(offer.is_some());
        assert!(offer.accepts([&b"WebSocket"[..]]));
        assert!(offer.accepts([&b"spdy/3.1"[..]]));
        assert!(offer.accepts([&b"spdy/2"[..], &b"websocket"[..]]));
        assert!(!offer.accepts([&b"h2c"[..]]));
        assert!(!offer.accepts([&b"websocket, h2c"[..]]));
        assert!(!offer.accepts(std::iter::empty::<&[u8]>()));
        assert!(!offer.accepts([&b""[..]]));
        assert!(!Offer::NONE.is_some());
        assert!(!Offer::NONE.accepts([&b"websocket"[..]]));
        // An offer longer than the record keeps the whole elements that fit.
        let long = [&b"websocket, "[..], &[b'x'; 80][..]].concat();
        let kept = Offer::new(&long);
        assert!(kept.accepts([&b"websocket"[..]]));
        assert!(!kept.accepts([&[b'x'; 80][..]]));
    }

    #[test]
    fn responses() {
        let ka11 = ClientSide {
            version: Version::Http11,
            keep_alive: true,
            dechunk: false,
            head_request: false,
        };
        let ka10 = ClientSide {
            version: Version::Http10,
            keep_alive: true,
            dechunk: false,
            head_request: false,
        };
        let close11 = ClientSide {
            version: Version::Http11,
            keep_alive: false,
            dechunk: false,
            head_request: false,
        };
        let dechunk10 = ClientSide {
            version: Version::Http10,
            keep_alive: true,
            dechunk: true,
            head_request: false,
        };
        let head11 = ClientSide {
            version: Version::Http11,
            keep_alive: true,
            dechunk: false,
            head_request: true,
        };
        let table: &[(&str, &[u8], &ClientSide, &str)] = &[
            (
                "length, hop-by-hop dropped",
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
                &ka11,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\n",
            ),
            (
                "nginx's answer: one run kept as received, then framing",
                b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 10:00:00 GMT\r\nContent-Type:  text/plain \r\nContent-Length: 6\r\nConnection: keep-alive\r\nX-Last:\tz\r\n\r\n",
                &ka11,
                "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 10:00:00 GMT\r\nContent-Type:  text/plain \r\nX-Last:\tz\r\nContent-Length: 6\r\n\r\n",
            ),
            (
                "http/1.0 client told keep-alive",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &ka10,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
            ),
            (
                "client closing",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &close11,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            ),
            (
                "chunked passed on",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nVary: *\r\n\r\n",
                &ka11,
                "HTTP/1.1 200 OK\r\nVary: *\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                "dechunked for a 1.0 client: delimited by close",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &dechunk10,
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            ),
            (
                "close-delimited upstream body forces close",
                b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\n",
                &ka11,
                "HTTP/1.1 200 OK\r\nServer: old\r\nConnection: close\r\n\r\n",
            ),
            (
                "head response keeps its content-length",
                b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\nTransfer-Encoding-X: y\r\n\r\n",
                &head11,
                "HTTP/1.1 200 OK\r\nContent-Length: 500\r\nTransfer-Encoding-X: y\r\n\r\n",
            ),
            (
                "304 keeps its content-length",
                b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 99\r\ncontent-length: 99\r\n\r\n",
                &ka11,
                "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 99\r\n\r\n",
            ),
            (
                "204 loses a forbidden content-length",
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                &ka11,
                "HTTP/1.1 204 No Content\r\n\r\n",
            ),
            (
                "101 keeps upgrade",
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n",
                &ka11,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nConnection: upgrade\r\n\r\n",
            ),
            (
                "interim response announces nothing about persistence",
                b"HTTP/1.1 100 Continue\r\n\r\n",
                &close11,
                "HTTP/1.1 100 Continue\r\n\r\n",
            ),
            (
                "103 early hints keeps its links, drops upgrade",
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nUpgrade: h2c\r\n\r\n",
                &ka11,
                "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            ),
            (
                "connection-named fields dropped",
                b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n",
                &ka11,
                "HTTP/1.1 200 OK\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n",
            ),
            (
                "missing reason keeps its separator",
                b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
                &ka11,
                "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
            ),
            (
                "underscore aliases of hop-by-hop fields dropped",
                b"HTTP/1.1 200 OK\r\nKeep_Alive: timeout=1\r\nProxy_Connection: close\r\nX_Trace: t\r\nContent-Length: 0\r\n\r\n",
                &ka11,
                "HTTP/1.1 200 OK\r\nX_Trace: t\r\nContent-Length: 0\r\n\r\n",
            ),
        ];
        for (name, input, client, want) in table {
            let head_request = client.head_request;
            assert_eq!(
                client_response(input, head_request, client),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn what_an_edit_may_name() {
        for ok in [
            "X-A",
            "via",
            "Expect",
            "X-Forwarded-For",
            "x-forwarded-proto",
            "X-Forwarded-Host",
            "X_Custom",
            "Cookie",
        ] {
            assert_eq!(edit_refusal(ok.as_bytes()), None, "{ok}");
        }
        for (name, why) in [
            ("host", "`host`"),
            ("HOST", "`host`"),
            ("Content-Length", "frames the body"),
            ("transfer-encoding", "frames the body"),
            ("Connection", "hop-by-hop"),
            ("Keep-Alive", "hop-by-hop"),
            ("Proxy-Connection", "hop-by-hop"),
            ("TE", "hop-by-hop"),
            ("Trailer", "hop-by-hop"),
            ("Upgrade", "hop-by-hop"),
            ("HTTP2-Settings", "hop-by-hop"),
            ("Idempotency-Key", "replay"),
            ("Keep_Alive", "underscore"),
            ("X_Forwarded_Proto", "underscore"),
            ("content_length", "underscore"),
            ("a b", "not a field name"),
            ("a:b", "not a field name"),
            ("", "not a field name"),
        ] {
            let got = edit_refusal(name.as_bytes()).unwrap_or_default();
            assert!(got.contains(why), "{name:?}: {got:?}");
        }
    }

    #[test]
    fn decimals() {
        let mut out = Vec::new();
        for (n, want) in [
            (0u64, "0"),
            (7, "7"),
            (10, "10"),
            (u64::MAX, "18446744073709551615"),
        ] {
            out.clear();
            push_decimal(n, &mut out);
            assert_eq!(out, want.as_bytes());
        }
    }
}
