//! `response`: what an upstream sends, as the core relays it. `parse_response` reads interim
//! heads until a final one, `rewrite::response_head` writes each for the client, and the final
//! response's body goes through its framing (length, chunked passed on, chunked decoded for an
//! HTTP/1.0 client, or until close).
//!
//! Input: `[flags, cut lo, cut hi, count, count & 15 u16 split points] ++ upstream bytes`. `flags`:
//! bits 0-2 pick the limits, bit 3 says the request was HEAD, bit 4 that the client speaks
//! HTTP/1.0, bit 5 that it keeps the connection. The high nibble of `count` picks how much the
//! client's buffer takes per step ([`crate::ROOMS`]).
//!
//! What must hold: the head invariants of the request side (spans, limits, CRLF CRLF, prefixes
//! incomplete, trailing bytes and looser limits change nothing), a status in 100..=599, the
//! reason exactly as sent, no body where RFC 9112 §6.3 item 1 says so; the rewritten head parses
//! again with the same status, reason and the framing the client must use, and says close when
//! that framing or the client needs it; the body relayed in arbitrary reads and steps equals the
//! body relayed in one go, and agrees with independent readings of the bytes.

use hearth::http::body::{BodyError, ChunkedDecoder, MAX_EXT_BYTES, MAX_TRAILER_BYTES};
use hearth::http::head::{
    parse_response, HeadError, Header, Limits, RespBody, ResponseHead, Version, MAX_HEADERS_CEILING,
};
use hearth::http::rewrite::{self, ClientSide};

use crate::chunked::reference_payload;
use crate::request_head::{connection_names, is_one_of, HOP_BY_HOP};
use crate::{
    assert_span_within, fields, named, pieces, read_boundaries, Field, Input, LIMITS, LOOSE, ROOMS,
};

/// Interim responses read before giving up on a final one; the core has no such bound, but more
/// teach the fuzzer nothing new.
const MAX_INTERIM: usize = 8;

#[derive(Debug, PartialEq, Eq)]
struct OwnedResponse {
    head_len: usize,
    version: Version,
    status: u16,
    reason: Vec<u8>,
    body: RespBody,
    keep_alive: bool,
    ka_timeout: Option<u32>,
    ka_max: Option<u32>,
    fields: Vec<Field>,
}

impl OwnedResponse {
    fn new(src: &[u8], h: &ResponseHead, headers: &[Header]) -> Self {
        OwnedResponse {
            head_len: h.head_len,
            version: h.version,
            status: h.status,
            reason: h.reason.of(src).to_vec(),
            body: h.body,
            keep_alive: h.keep_alive,
            ka_timeout: h.ka_timeout,
            ka_max: h.ka_max,
            fields: fields(src, headers),
        }
    }
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let limits = LIMITS[usize::from(flags & 7) % LIMITS.len()];
    let head_request = flags & 8 != 0;
    let client_version = if flags & 16 != 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let client_keep_alive = flags & 32 != 0;
    let cut = usize::from(input.u16());
    let (points, room) = input.splits();
    let stream = input.rest();

    let mut at = 0;
    let mut headers = Vec::new();
    for _ in 0..MAX_INTERIM {
        let buf = &stream[at..];
        let h = match parse_response(buf, &limits, head_request, &mut headers) {
            Ok(Some(h)) => h,
            Ok(None) => {
                assert!(
                    buf.len() < limits.max_head_bytes,
                    "incomplete past the limit"
                );
                return;
            }
            Err(e) => {
                if e == HeadError::HeadTooLarge {
                    assert!(
                        buf.len() >= limits.max_head_bytes,
                        "too large below the limit"
                    );
                }
                return;
            }
        };
        check_accepted(buf, &limits, head_request, &h, &headers, cut);
        let interim = (100..200).contains(&h.status) && h.status != 101;
        // As the core decides them.
        let dechunk = client_version == Version::Http10 && h.body == RespBody::Chunked;
        let client = ClientSide {
            version: client_version,
            keep_alive: client_keep_alive || interim || h.status == 101,
            dechunk,
            head_request,
        };
        check_rewrite(buf, &h, &headers, &client);
        at += h.head_len;
        if interim {
            continue;
        }
        if h.status != 101 {
            check_body(
                &stream[at..],
                h.body,
                dechunk,
                &points,
                ROOMS[usize::from(room) % 8],
            );
        }
        return;
    }
}

fn check_accepted(
    buf: &[u8],
    limits: &Limits,
    head_request: bool,
    h: &ResponseHead,
    headers: &[Header],
    cut: usize,
) {
    let n = h.head_len;
    assert!(
        n > 0 && n <= buf.len() && n <= limits.max_head_bytes,
        "head_len {n}"
    );
    assert!(buf.starts_with(b"HTTP/1."), "status line");
    assert!(
        buf[..n].ends_with(b"\r\n\r\n"),
        "head does not end in CRLF CRLF"
    );
    assert!((100..=599).contains(&h.status), "status {}", h.status);
    assert_span_within(h.reason, n, "reason");
    assert!(headers.len() <= limits.max_headers.min(MAX_HEADERS_CEILING));
    for f in headers {
        assert_span_within(f.name, n, "field name");
        assert_span_within(f.value, n, "field value");
    }
    // RFC 9112 §4: the reason is whatever follows "HTTP/1.x NNN " on the status line.
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("complete head");
    let reason = buf.get(13..line_end).unwrap_or_default();
    assert_eq!(h.reason.of(buf), reason, "reason");
    if head_request || h.status < 200 || h.status == 204 || h.status == 304 {
        assert_eq!(h.body, RespBody::None);
    }
    if h.body == RespBody::Close {
        assert!(!h.keep_alive, "close-delimited yet reusable");
    }

    let owned = OwnedResponse::new(buf, h, headers);
    let mut hs = Vec::new();
    match parse_response(&buf[..n], limits, head_request, &mut hs) {
        Ok(Some(a)) => assert_eq!(OwnedResponse::new(buf, &a, &hs), owned, "head alone"),
        other => panic!("the head alone gave {other:?}"),
    }
    for k in [cut % n, n - 1] {
        let prefix = parse_response(&buf[..k], limits, head_request, &mut hs);
        assert!(
            matches!(prefix, Ok(None)),
            "prefix of {k} bytes gave {prefix:?}"
        );
    }
    match parse_response(buf, &LOOSE, head_request, &mut hs) {
        Ok(Some(l)) => assert_eq!(OwnedResponse::new(buf, &l, &hs), owned, "looser limits"),
        other => panic!("looser limits gave {other:?}"),
    }
}

fn check_rewrite(buf: &[u8], h: &ResponseHead, headers: &[Header], client: &ClientSide) {
    if headers.len() + 3 > MAX_HEADERS_CEILING {
        return;
    }
    let mut out = Vec::new();
    rewrite::response_head(buf, h, headers, client, &mut out);
    let shown = String::from_utf8_lossy(&out);
    let reason = h.reason.of(buf);
    let line = [
        format!("HTTP/1.1 {} ", h.status).as_bytes(),
        reason,
        b"\r\n",
    ]
    .concat();
    assert!(out.starts_with(&line), "status line of {shown:?}");

    let switching = h.status == 101;
    let interim = h.status < 200 && !switching;
    let body = match h.body {
        RespBody::Chunked if !client.dechunk => RespBody::Chunked,
        RespBody::Chunked | RespBody::Close => RespBody::Close,
        other => other,
    };
    let says_close = !interim && !switching && (!client.keep_alive || body == RespBody::Close);

    let mut oh = Vec::new();
    let o = match parse_response(&out, &LOOSE, client.head_request, &mut oh) {
        Ok(Some(o)) => o,
        other => panic!("rewritten head {shown:?} parsed as {other:?}"),
    };
    assert_eq!(o.head_len, out.len(), "{shown:?}");
    assert_eq!((o.version, o.status), (Version::Http11, h.status));
    assert_eq!(o.reason.of(&out), reason);
    assert_eq!(o.body, body, "client framing of {shown:?}");
    assert_eq!(
        o.keep_alive,
        body != RespBody::Close && !says_close,
        "{shown:?}"
    );

    let input = fields(buf, headers);
    let output = fields(&out, &oh);
    let values = |name| -> Vec<&[u8]> { named(&output, name).map(|(_, v)| &v[..]).collect() };
    // RFC 9110 §8.6: a HEAD or 304 response's Content-Length describes the representation and
    // passes; a 1xx or 204 must have none.
    let pass_length = h.body == RespBody::None && h.status >= 200 && h.status != 204;
    let first_length = named(&input, "content-length").next().map(|(_, v)| &v[..]);
    let length = match h.body {
        RespBody::Length(n) => Some(n.to_string().into_bytes()),
        _ if pass_length => first_length.map(<[u8]>::to_vec),
        _ => None,
    };
    assert_eq!(
        values("content-length"),
        length.as_deref().into_iter().collect::<Vec<_>>()
    );
    let chunked: &[&[u8]] = if body == RespBody::Chunked {
        &[b"chunked"]
    } else {
        &[]
    };
    assert_eq!(values("transfer-encoding"), chunked, "{shown:?}");
    let connection: &[&[u8]] = if switching {
        &[b"upgrade"]
    } else if says_close {
        &[b"close"]
    } else if !interim && client.version == Version::Http10 {
        &[b"keep-alive"]
    } else {
        &[]
    };
    assert_eq!(values("connection"), connection, "{shown:?}");
    for name in HOP_BY_HOP {
        assert!(values(name).is_empty(), "{name} in {shown:?}");
    }

    let written = ["content-length", "transfer-encoding", "connection"];
    let listed = connection_names(&input);
    let expected: Vec<&Field> = input
        .iter()
        .filter(|(name, _)| {
            if is_one_of(name, &written) || is_one_of(name, &HOP_BY_HOP) {
                false
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                switching
            } else {
                !listed.contains(&name.to_ascii_lowercase())
            }
        })
        .collect();
    let copied: Vec<&Field> = output
        .iter()
        .filter(|(name, _)| !is_one_of(name, &written))
        .collect();
    assert_eq!(copied, expected, "{shown:?}");
}

/// What relaying a body did: bytes for the client, bytes taken from the upstream, whether the
/// body ended, and the error that stopped it.
#[derive(Debug, PartialEq, Eq)]
struct Relayed {
    out: Vec<u8>,
    taken: usize,
    done: bool,
    error: Option<BodyError>,
}

fn check_body(stream: &[u8], framing: RespBody, dechunk: bool, points: &[usize], room: usize) {
    let whole = relay(&[stream], framing, dechunk, usize::MAX);
    let cuts = read_boundaries(points, stream.len());
    let split = relay(&pieces(stream, &cuts), framing, dechunk, room);
    assert_eq!(split, whole, "reads cut at {cuts:?}, {room} bytes a step");

    let Relayed {
        out, taken, done, ..
    } = &whole;
    match framing {
        RespBody::None => assert_eq!((&out[..], *taken, *done), (&b""[..], 0, true)),
        RespBody::Length(n) => {
            let end = usize::try_from(n).unwrap_or(usize::MAX).min(stream.len());
            assert_eq!((&out[..], *taken), (&stream[..end], end));
            assert_eq!(*done, end as u64 == n);
        }
        RespBody::Close => assert_eq!((&out[..], *done), (stream, false)),
        RespBody::Chunked if whole.error.is_none() => {
            let framed = &stream[..*taken];
            if dechunk {
                let passed = relay(&[stream], framing, false, usize::MAX);
                assert_eq!((passed.taken, passed.done), (*taken, *done));
                if *done {
                    assert_eq!(reference_payload(&passed.out).as_ref(), Some(out));
                }
            } else {
                assert_eq!(&out[..], framed, "chunked passes through as framed");
                if *done {
                    assert!(reference_payload(framed).is_some(), "ended inside framing");
                }
            }
        }
        RespBody::Chunked => {}
    }
}

/// The body loop of the core's `relay_response`: bytes arrive in `pieces`, and each step moves at
/// most `room` of them on.
fn relay(pieces: &[&[u8]], framing: RespBody, dechunk: bool, room: usize) -> Relayed {
    let mut r = Relayed {
        out: Vec::new(),
        taken: 0,
        done: false,
        error: None,
    };
    let mut remaining = match framing {
        RespBody::None | RespBody::Length(0) => {
            r.done = true;
            return r;
        }
        RespBody::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
    let mut from: Vec<u8> = Vec::new();
    for piece in pieces {
        from.extend_from_slice(piece);
        while !from.is_empty() && !r.done {
            let avail = from.len().min(room);
            let n = match framing {
                RespBody::Length(_) => {
                    let n = avail.min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    r.out.extend_from_slice(&from[..n]);
                    remaining -= n as u64;
                    r.done = remaining == 0;
                    n
                }
                RespBody::Chunked => {
                    let input = &from[..avail];
                    let out = &mut r.out;
                    let d = if dechunk {
                        decoder.decode(input, &mut |a, b| out.extend_from_slice(&input[a..b]))
                    } else {
                        decoder.decode(input, &mut |_, _| {})
                    };
                    let d = match d {
                        Ok(d) => d,
                        Err(e) => {
                            // Bytes relayed before the error depend on the reads; only the
                            // error itself is compared.
                            r.out.clear();
                            r.taken = 0;
                            r.error = Some(e);
                            return r;
                        }
                    };
                    if !dechunk {
                        r.out.extend_from_slice(&input[..d.consumed]);
                    }
                    r.done = d.done;
                    d.consumed
                }
                _ => {
                    r.out.extend_from_slice(&from[..avail]);
                    avail
                }
            };
            r.taken += n;
            from.drain(..n);
        }
    }
    r
}
