//! Field-level grammar shared by request heads, response heads, chunked trailers and the
//! rewriter (RFC 9110 §5): which fields hearth acts on ([`FieldName`]), their underscore aliases,
//! the elements of a comma-separated list, tokens, and the Host grammar (RFC 9110 §7.2, RFC 3986
//! §3.2.2) that both the Host field and an absolute-form target's authority must meet.
//!
//! Nothing here knows where a head ends or how a body is framed; that is [`head`](super::head)
//! and [`body`](super::body), which build on these answers. Invariants: every function is total
//! over arbitrary bytes (no panics, no allocation), names compare case-insensitively, and
//! [`field_name`] and [`alias_of`] agree with the one table of known names, `candidates`.

use super::lex;

/// Fields whose meaning the proxy acts on. Names compare case-insensitively (RFC 9110 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldName {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    /// RFC 7540 §3.2.1: sent only with an h2c upgrade, and hop-by-hop; hearth never forwards it.
    Http2Settings,
    Expect,
    IdempotencyKey,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Other,
}

pub(crate) fn field_name(name: &[u8]) -> FieldName {
    use FieldName::*;
    // Dispatch on length first so that most names cost one comparison or none. Every field of
    // every message comes through here, some more than once, so each arm compares at a constant
    // length, which the compiler unrolls into a few word-sized operations; the table it must
    // agree with is `candidates` (see the test).
    match name.len() {
        2 if is(name, b"te") => Te,
        4 if is(name, b"host") => Host,
        6 if is(name, b"expect") => Expect,
        7 if is(name, b"trailer") => Trailer,
        7 if is(name, b"upgrade") => Upgrade,
        10 if is(name, b"connection") => Connection,
        10 if is(name, b"keep-alive") => KeepAlive,
        14 if is(name, b"content-length") => ContentLength,
        14 if is(name, b"http2-settings") => Http2Settings,
        15 if is(name, b"idempotency-key") => IdempotencyKey,
        15 if is(name, b"x-forwarded-for") => XForwardedFor,
        16 if is(name, b"proxy-connection") => ProxyConnection,
        16 if is(name, b"x-forwarded-host") => XForwardedHost,
        17 if is(name, b"transfer-encoding") => TransferEncoding,
        17 if is(name, b"x-forwarded-proto") => XForwardedProto,
        _ => Other,
    }
}

/// Whether `name` is `lower` (lowercase letters and `-`) in any case. Letters of `lower` have bit
/// 0x40 set, so `(lower & 0x40) >> 1` is 0x20 at letters and 0 at `-`: OR-ing that into a name
/// byte folds exactly its upper case onto its lower case at letters and changes nothing at `-`,
/// so the comparison is exact. It runs a word at a time (the last word overlapping the one
/// before), so a known name costs two or three compares.
#[inline(always)]
fn is<const N: usize>(name: &[u8], lower: &[u8; N]) -> bool {
    let Ok(name) = <&[u8; N]>::try_from(name) else {
        return false;
    };
    let folds = |name: u64, lower: u64, letters: u64| (name | ((lower & letters) >> 1)) ^ lower;
    if N >= 8 {
        let word = |b: &[u8; N], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let mut diff = 0;
        let mut at = 0;
        loop {
            let from = if at + 8 > N { N - 8 } else { at };
            diff |= folds(word(name, from), word(lower, from), 0x4040_4040_4040_4040);
            if from + 8 == N {
                return diff == 0;
            }
            at += 8;
        }
    } else if N >= 4 {
        let word = |b: &[u8; N], at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[at..at + 4]);
            u64::from(u32::from_le_bytes(w))
        };
        let (a, b) = (0, N - 4);
        folds(word(name, a), word(lower, a), 0x4040_4040)
            | folds(word(name, b), word(lower, b), 0x4040_4040)
            == 0
    } else {
        let mut diff = 0;
        for i in 0..N {
            diff |= folds(u64::from(name[i]), u64::from(lower[i]), 0x40);
        }
        diff == 0
    }
}

/// The field `name` stands for when each `_` in it is read as `-`, as CGI-style upstreams read it;
/// [`FieldName::Other`] when that is no field hearth knows. Meant for names [`field_name`] has
/// already called `Other`: for those, anything else means an underscore alias. Only names spelled
/// with `-` can have an alias, so only those of `candidates` are tried.
pub(crate) fn alias_of(name: &[u8]) -> FieldName {
    use FieldName::*;
    let aliased = candidates(name.len());
    // No known name starts with `-`, so the first byte decides most misses without the loop.
    let first = name.first().map_or(0, u8::to_ascii_lowercase);
    aliased
        .iter()
        .find(|(n, _)| {
            n[0] == first
                && n.contains(&b'-')
                && name
                    .iter()
                    .zip(n.iter())
                    .all(|(&a, &c)| a.to_ascii_lowercase() == c || (a == b'_' && c == b'-'))
        })
        .map_or(Other, |&(_, f)| f)
}

/// Whether `name` is an underscore alias (or the name) of a framing field (RFC 9112 §6), which
/// must be refused rather than dropped: a peer that reads the alias as the field frames the body
/// differently from hearth. The length test first keeps this off the common path.
pub(crate) fn framing_alias(name: &[u8]) -> bool {
    matches!(name.len(), 14 | 17)
        && matches!(
            alias_of(name),
            FieldName::ContentLength | FieldName::TransferEncoding
        )
}

/// The longest name [`field_name`] knows, so that a caller reading a name byte by byte need keep
/// no more than this many bytes to ask about it.
pub(crate) const LONGEST_KNOWN_NAME: usize = 17;

/// The known field names of length `len`, lowercase.
fn candidates(len: usize) -> &'static [(&'static [u8], FieldName)] {
    use FieldName::*;
    match len {
        2 => &[(b"te", Te)],
        4 => &[(b"host", Host)],
        6 => &[(b"expect", Expect)],
        7 => &[(b"trailer", Trailer), (b"upgrade", Upgrade)],
        10 => &[(b"connection", Connection), (b"keep-alive", KeepAlive)],
        14 => &[
            (b"content-length", ContentLength),
            (b"http2-settings", Http2Settings),
        ],
        15 => &[
            (b"idempotency-key", IdempotencyKey),
            (b"x-forwarded-for", XForwardedFor),
        ],
        16 => &[
            (b"proxy-connection", ProxyConnection),
            (b"x-forwarded-host", XForwardedHost),
        ],
        17 => &[
            (b"transfer-encoding", TransferEncoding),
            (b"x-forwarded-proto", XForwardedProto),
        ],
        _ => &[],
    }
}

/// The elements of a comma-separated list (RFC 9110 §5.6.1), each without surrounding OWS.
/// Empty elements are yielded too; callers that must refuse them can.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// tchar, RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Host = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): a bracketed IP-literal, or a
/// non-empty reg-name or IPv4 address, then optionally a colon and a port of at most five digits
/// within 65535 (the port may be empty, as the grammar allows). Everything else is refused: an
/// empty host, a second colon (`1.2.3.4:9000:80`), an unclosed bracket, userinfo, a bad
/// percent-escape, and any byte outside the grammar, which keeps spaces, '/', '@' and '#' out of
/// routing. Peers that read such a value differently (one takes the first port, another the
/// last, a third the text after '@') would route it differently from hearth.
pub(crate) fn valid_host(value: &[u8]) -> bool {
    host_port(value).is_some()
}

/// The port of a valid `uri-host [ ":" port ]` (None when there is no colon), or None when the
/// value is not valid (see [`valid_host`]).
pub(crate) fn host_port(value: &[u8]) -> Option<Option<&[u8]>> {
    let rest = if value.first() == Some(&b'[') {
        let close = value.iter().position(|&b| b == b']')?;
        if !ip_literal(&value[1..close]) {
            return None;
        }
        &value[close + 1..]
    } else {
        // Every request's Host comes through here: one pass, one table load per byte, noting
        // on the way whether a percent-escape needs a second look.
        let mut end = 0;
        let mut escaped = false;
        while let Some(&b) = value.get(end) {
            if !REG_NAME[usize::from(b)] {
                break;
            }
            escaped |= b == b'%';
            end += 1;
        }
        let name = &value[..end];
        if name.is_empty() || (escaped && !percent_escapes_valid(name)) {
            return None;
        }
        &value[end..]
    };
    match rest {
        [] => Some(None),
        [b':', port @ ..] if valid_port(port) => Some(Some(port)),
        _ => None,
    }
}

/// `*DIGIT` of at most five digits and no more than 65535.
fn valid_port(port: &[u8]) -> bool {
    if port.len() > 5 {
        return false;
    }
    let mut n = 0u32;
    for &d in port {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            return false;
        }
        n = n * 10 + u32::from(digit);
    }
    n <= 65_535
}

/// IP-literal without its brackets (RFC 3986 §3.2.2): an IPv6 address, or IPvFuture
/// (`v` 1*HEXDIG `.` 1*( unreserved / sub-delims / `:` )). Zone identifiers are not part of the
/// Host grammar and are refused.
fn ip_literal(inside: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = inside {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| b == b':' || (REG_NAME[usize::from(b)] && b != b'%'));
    }
    std::str::from_utf8(inside).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Each `%` is followed by two hex digits (RFC 3986 §2.1).
fn percent_escapes_valid(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'%' {
            match name.get(i + 1..i + 3) {
                Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// reg-name bytes (RFC 3986 §3.2.2): unreserved, sub-delims, and `%` of a percent-escape.
static REG_NAME: [bool; 256] = lex::alphanumeric_and(b"-._~%!$&'()*+,;=");

/// Which of close, keep-alive and upgrade a Connection token is.
pub(crate) fn connection_token(token: &[u8]) -> (bool, bool, bool) {
    match token.len() {
        5 => (is(token, b"close"), false, false),
        7 => (false, false, is(token, b"upgrade")),
        10 => (false, is(token, b"keep-alive"), false),
        _ => (false, false, false),
    }
}

/// The authority of an absolute-form target (RFC 9112 §3.2.2), or None when the target is not an
/// http(s) URI with a non-empty authority free of userinfo (RFC 9110 §4.2.4).
pub(crate) fn absolute_authority(target: &[u8]) -> Option<(usize, usize)> {
    let scheme_len = if starts_with_ignore_case(target, b"http://") {
        7
    } else if starts_with_ignore_case(target, b"https://") {
        8
    } else {
        return None;
    };
    let rest = &target[scheme_len..];
    let len = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..len];
    if !valid_host(authority) {
        return None;
    }
    Some((scheme_len, scheme_len + len))
}

pub(crate) fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names() {
        use FieldName::*;
        let table: &[(&[u8], FieldName)] = &[
            (b"TE", Te),
            (b"Host", Host),
            (b"EXPECT", Expect),
            (b"Trailer", Trailer),
            (b"upgrade", Upgrade),
            (b"Connection", Connection),
            (b"Keep-Alive", KeepAlive),
            (b"Content-Length", ContentLength),
            (b"Idempotency-Key", IdempotencyKey),
            (b"X-Forwarded-For", XForwardedFor),
            (b"Proxy-Connection", ProxyConnection),
            (b"X-Forwarded-Host", XForwardedHost),
            (b"Transfer-Encoding", TransferEncoding),
            (b"X-Forwarded-Proto", XForwardedProto),
            (b"Content_Length", Other),
            (b"Hosts", Other),
            (b"", Other),
        ];
        for (name, want) in table {
            assert_eq!(field_name(name), *want, "{}", String::from_utf8_lossy(name));
        }
        // field_name's unrolled comparisons agree with the table alias_of reads: every known
        // name in every case, and no name one byte off (in particular `-` and the bytes that
        // differ from it or from a letter only in bit 0x20).
        for len in 0..64 {
            for &(lower, field) in candidates(len) {
                assert_eq!(field_name(lower), field);
                assert_eq!(field_name(&lower.to_ascii_uppercase()), field);
                for i in 0..lower.len() {
                    for b in 0..=255u8 {
                        let mut name = lower.to_vec();
                        name[i] = b;
                        let same = b.eq_ignore_ascii_case(&lower[i]);
                        let got = field_name(&name);
                        assert_eq!(got == field, same, "{:?}", String::from_utf8_lossy(&name));
                    }
                }
            }
        }
    }

    #[test]
    fn underscore_aliases() {
        use FieldName::*;
        let table: &[(&[u8], FieldName)] = &[
            (b"Content_Length", ContentLength),
            (b"content_length", ContentLength),
            (b"Content-Length", ContentLength),
            (b"TRANSFER_ENCODING", TransferEncoding),
            (b"Transfer_Encoding", TransferEncoding),
            (b"Keep_Alive", KeepAlive),
            (b"Proxy_Connection", ProxyConnection),
            (b"X_Forwarded_For", XForwardedFor),
            (b"x_forwarded-proto", XForwardedProto),
            (b"X-Forwarded_Host", XForwardedHost),
            (b"Idempotency_Key", IdempotencyKey),
            // `-` does not stand for `_`, and other characters stand for nothing.
            (b"Content-Length_", Other),
            (b"Content.Length", Other),
            (b"Content__Length", Other),
            (b"ContentLength", Other),
            (b"X_Api_Key", Other),
            (b"Content_Type", Other),
            (b"_", Other),
            (b"", Other),
        ];
        for (name, want) in table {
            assert_eq!(alias_of(name), *want, "{}", String::from_utf8_lossy(name));
        }
        // A name reader that keeps LONGEST_KNOWN_NAME bytes can ask about every known name, and
        // alias_of knows exactly the known names spelled with '-'.
        for len in 0..64 {
            for (name, field) in candidates(len) {
                assert!(name.len() <= LONGEST_KNOWN_NAME);
                assert_eq!(name.len(), len);
                assert_eq!(name.to_ascii_lowercase(), *name);
                let underscored: Vec<u8> = name
                    .iter()
                    .map(|&b| if b == b'-' { b'_' } else { b })
                    .collect();
                let want = if name.contains(&b'-') { *field } else { Other };
                assert_eq!(alias_of(&underscored), want, "{field:?}");
                assert_eq!(alias_of(name), want, "{field:?}");
            }
        }
    }
}
