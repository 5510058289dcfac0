//! `response`: what an upstream sends, as the core relays it. `parse_response` reads interim
//! heads until a final one, `rewrite::response_head` writes each for the client, a 101 is held to
//! what the request offered, and the final response's body goes through its framing (length,
//! chunked passed on, chunked framed afresh when the head had a lone LF, chunked decoded for an
//! HTTP/1.0 client, or until close).
//!
//! Input: `[flags, cut lo, cut hi, count, count & 15 u16 split points] ++ upstream bytes`. `flags`:
//! bits 0-2 pick the limits, bit 3 says the request was HEAD, bit 4 that the client speaks
//! HTTP/1.0, bit 5 that it keeps the connection, bits 6-7 what the request offered to upgrade to
//! ([`OFFERS`]). The high nibble of `count` picks how much the client's buffer takes per step
//! ([`crate::ROOMS`]).
//!
//! What must hold: the head invariants of the request side (spans, limits, prefixes incomplete,
//! trailing bytes and looser limits change nothing, an empty line at the end, CRLF CRLF unless
//! `bare_lf`, which says exactly whether a line ends in a lone LF, always accepted here), a status
//! in 100..=599, the reason exactly as sent up to its line end, Content-Length lines that all hold
//! one length of at most 2^63-1, no body where RFC 9112 §6.3 item 1 says so. A 101 is accepted
//! exactly when it names at least one protocol and only protocols offered, by name. The rewritten
//! head has no lone LF and parses again with the same status, reason and the framing the client
//! must use, says close when that framing or the client needs it, and after its status line has
//! every kept field line byte for byte (written afresh as `name: value` CRLF when the head had a
//! lone LF), then only the fields hearth writes; no hop-by-hop field, HTTP2-Settings or alias.
//! The body relayed in arbitrary reads and steps agrees with the body relayed in one go and with
//! independent readings of the bytes: byte for byte, except that a body framed afresh may come in
//! other chunks, so there the payload and trailers read back with a strict decoder are compared;
//! framed afresh, it decodes strictly to its last byte, with CRLF only, and no step writes more
//! than the client's buffer had room for.

use hearth::http::body::{self, BodyError, ChunkedDecoder};
use hearth::http::head::{
    parse_response, HeadError, Header, Limits, RespBody, ResponseHead, Version, MAX_BODY_LENGTH,
    MAX_HEADERS_CEILING,
};
use hearth::http::rewrite::{self, ClientSide, Offer};

use crate::chunked::{feed, reference_body, reference_payload, reread, Reread};
use crate::request_head::{connection_names, sent_line};
use crate::{
    assert_no_lone_lf, assert_span_within, fields, has_lone_lf, is_alias, is_one_of, list, named,
    pieces, read_boundaries, reframe_window, Field, Input, BUF_BYTES, LIMITS, LOOSE, ROOMS,
};

/// Interim responses read before giving up on a final one; the core has no such bound, but more
/// teach the fuzzer nothing new.
const MAX_INTERIM: usize = 8;

/// The Upgrade value hearth offered the upstream (None: the request was no upgrade), by flags
/// bits 6-7. The commonest comes first, so that seeds without those bits offer websocket.
const OFFERS: [Option<&[u8]>; 4] = [
    Some(b"websocket"),
    Some(b"websocket, SPDY/3.1"),
    None,
    Some(b"WebSocket/13, spdy"),
];

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
    connection_lists_fields: bool,
    bare_lf: bool,
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
            connection_lists_fields: h.connection_lists_fields,
            bare_lf: h.bare_lf,
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
    let offered = OFFERS[usize::from(flags >> 6)];
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
        if h.status == 101 {
            check_offer(buf, &headers, offered);
        }
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
            let body = Body {
                framing: h.body,
                dechunk,
                bare_lf: h.bare_lf,
                limits,
            };
            check_body(&stream[at..], &body, &points, ROOMS[usize::from(room) % 8]);
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
    let head = &buf[..n];
    assert!(head.starts_with(b"HTTP/1."), "status line");
    assert_eq!(h.bare_lf, has_lone_lf(head), "bare_lf of {head:?}");
    if h.bare_lf {
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
    assert!((100..=599).contains(&h.status), "status {}", h.status);
    assert_span_within(h.reason, n, "reason");
    assert!(headers.len() <= limits.max_headers.min(MAX_HEADERS_CEILING));
    for f in headers {
        assert_span_within(f.name, n, "field name");
        assert_span_within(f.value, n, "field value");
    }
    // RFC 9112 §4: the reason is whatever follows "HTTP/1.x NNN " on the status line, up to its
    // line end, CRLF or (§2.2) a lone LF.
    let lf = head
        .iter()
        .position(|&b| b == b'\n')
        .expect("complete head");
    let line_end = if lf > 0 && head[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    let reason = head.get(13..line_end).unwrap_or_default();
    assert_eq!(h.reason.of(buf), reason, "reason");
    assert!(!reason.contains(&b'\r'), "CR in the reason");
    if head_request || h.status < 200 || h.status == 204 || h.status == 304 {
        assert_eq!(h.body, RespBody::None);
    }
    if h.body == RespBody::Close {
        assert!(!h.keep_alive, "close-delimited yet reusable");
    }
    // Repeated lengths must agree, whether or not they frame this response.
    let input = fields(buf, headers);
    let mut lengths = named(&input, "content-length").map(|(_, v)| decimal(v));
    if let Some(first) = lengths.next() {
        let first = first.expect("Content-Length is digits");
        assert!(first <= MAX_BODY_LENGTH, "length {first} past 2^63-1");
        assert!(lengths.all(|l| l == Some(first)), "differing lengths");
        if let RespBody::Length(len) = h.body {
            assert_eq!(len, first);
        }
    }

    let owned = OwnedResponse::new(buf, h, headers);
    let mut hs = Vec::new();
    match parse_response(head, limits, head_request, &mut hs) {
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

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A 101 switches to what was offered: hearth tunnels it only when its Upgrade fields name at
/// least one protocol, every one of them offered (by name, RFC 9110 §7.8).
fn check_offer(buf: &[u8], headers: &[Header], offered: Option<&[u8]>) {
    let values: Vec<&[u8]> = headers
        .iter()
        .filter(|f| f.name.of(buf).eq_ignore_ascii_case(b"upgrade"))
        .map(|f| f.value.of(buf))
        .collect();
    let offer = offered.map_or(Offer::NONE, Offer::new);
    assert_eq!(offer.is_some(), offered.is_some());
    let name = |e: &[u8]| e.split(|&b| b == b'/').next().unwrap_or_default().to_vec();
    let names: Vec<Vec<u8>> = offered.map_or(Vec::new(), |o| list(o).map(name).collect());
    let switched: Vec<Vec<u8>> = values.iter().flat_map(|v| list(v)).map(name).collect();
    let want = !switched.is_empty()
        && switched
            .iter()
            .all(|s| !s.is_empty() && names.iter().any(|n| n.eq_ignore_ascii_case(s)));
    assert_eq!(
        offer.accepts(values.iter().copied()),
        want,
        "offer {:?}, 101 upgrading to {values:?}",
        offered.map(String::from_utf8_lossy)
    );
}

fn check_rewrite(buf: &[u8], h: &ResponseHead, headers: &[Header], client: &ClientSide) {
    if headers.len() + 3 > MAX_HEADERS_CEILING {
        return;
    }
    let mut out = Vec::new();
    rewrite::response_head(buf, h, headers, client, &mut out);
    let shown = String::from_utf8_lossy(&out);
    assert_no_lone_lf(&out, "the client response head");
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

    // RFC 9110 §8.6: a HEAD or 304 response's Content-Length describes the representation and
    // passes (once); a 1xx or 204 must have none.
    let pass_length = h.body == RespBody::None && h.status >= 200 && h.status != 204;
    let input = fields(buf, headers);
    let listed = connection_names(&input);
    let never = [
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "http2-settings",
    ];
    let mut lengths_kept = 0;
    let kept: Vec<&Header> = headers
        .iter()
        .filter(|f| {
            let name = f.name.of(buf);
            if name.eq_ignore_ascii_case(b"upgrade") {
                switching
            } else if name.eq_ignore_ascii_case(b"content-length") {
                lengths_kept += 1;
                pass_length && lengths_kept == 1
            } else {
                !is_one_of(name, &never)
                    && !is_alias(name)
                    && !listed.contains(&name.to_ascii_lowercase())
            }
        })
        .collect();
    let mut prefix = line.clone();
    for f in &kept {
        prefix.extend_from_slice(&sent_line(buf, f, h.bare_lf));
    }
    assert!(out.starts_with(&prefix), "kept lines of {shown:?}");

    let mut oh = Vec::new();
    let o = match parse_response(&out, &LOOSE, client.head_request, &mut oh) {
        Ok(Some(o)) => o,
        other => panic!("rewritten head {shown:?} parsed as {other:?}"),
    };
    assert_eq!(o.head_len, out.len(), "{shown:?}");
    assert!(!o.bare_lf);
    assert_eq!((o.version, o.status), (Version::Http11, h.status));
    assert_eq!(o.reason.of(&out), reason);
    assert_eq!(o.body, body, "client framing of {shown:?}");
    assert_eq!(
        o.keep_alive,
        body != RespBody::Close && !says_close,
        "{shown:?}"
    );

    let output = fields(&out, &oh);
    let values = |name| -> Vec<&[u8]> { named(&output, name).map(|(_, v)| &v[..]).collect() };
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
    let connection: &[u8] = if switching {
        b"upgrade"
    } else if says_close {
        b"close"
    } else if !interim && client.version == Version::Http10 {
        b"keep-alive"
    } else {
        b""
    };
    let connection: Vec<&[u8]> = Some(connection)
        .filter(|c| !c.is_empty())
        .into_iter()
        .collect();
    assert_eq!(values("connection"), connection, "{shown:?}");
    for name in never
        .iter()
        .filter(|&&n| n != "connection" && n != "transfer-encoding")
    {
        assert!(values(name).is_empty(), "{name} in {shown:?}");
    }
    if !switching {
        assert!(values("upgrade").is_empty(), "upgrade in {shown:?}");
    }
    assert!(
        !output.iter().any(|(name, _)| is_alias(name)),
        "alias in {shown:?}"
    );
    // After the kept lines, only the framing and Connection hearth writes.
    let mut written: Vec<Field> = output[kept.len()..].to_vec();
    written.sort();
    let mut want: Vec<Field> = Vec::new();
    if let RespBody::Length(n) = h.body {
        want.push((b"Content-Length".to_vec(), n.to_string().into_bytes()));
    }
    if body == RespBody::Chunked {
        want.push((b"Transfer-Encoding".to_vec(), b"chunked".to_vec()));
    }
    for c in connection {
        want.push((b"Connection".to_vec(), c.to_vec()));
    }
    want.sort();
    assert_eq!(written, want, "{shown:?}");
}

/// How the final response's body travels, as the core decides it.
struct Body {
    framing: RespBody,
    /// Chunked decoded for an HTTP/1.0 client.
    dechunk: bool,
    /// The head had a lone LF: chunked framing is read leniently and, unless decoded, written
    /// afresh.
    bare_lf: bool,
    limits: Limits,
}

impl Body {
    fn reframes(&self) -> bool {
        self.framing == RespBody::Chunked && self.bare_lf && !self.dechunk
    }
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

/// What of a relayed body must not depend on how it was read: all of it, but only the payload and
/// trailers of a body framed afresh, whose chunks follow the reads.
#[derive(Debug, PartialEq, Eq)]
enum Story {
    Bytes(Vec<u8>),
    Reframed(Reread),
}

fn story(r: &Relayed, body: &Body) -> (Story, usize, bool, Option<BodyError>) {
    let out = if body.reframes() {
        Story::Reframed(reread(&r.out))
    } else {
        Story::Bytes(r.out.clone())
    };
    (out, r.taken, r.done, r.error)
}

fn check_body(stream: &[u8], body: &Body, points: &[usize], room: usize) {
    let whole = relay(&[stream], body, usize::MAX);
    let cuts = read_boundaries(points, stream.len());
    let split = relay(&pieces(stream, &cuts), body, room);
    assert_eq!(
        story(&split, body),
        story(&whole, body),
        "reads cut at {cuts:?}, {room} bytes a step"
    );

    let Relayed {
        out, taken, done, ..
    } = &whole;
    match body.framing {
        RespBody::None => assert_eq!((&out[..], *taken, *done), (&b""[..], 0, true)),
        RespBody::Length(n) => {
            let end = usize::try_from(n).unwrap_or(usize::MAX).min(stream.len());
            assert_eq!((&out[..], *taken), (&stream[..end], end));
            assert_eq!(*done, end as u64 == n);
        }
        RespBody::Close => assert_eq!((&out[..], *done), (stream, false)),
        RespBody::Chunked if whole.error.is_none() => {
            let framed = &stream[..*taken];
            let read = done.then(|| {
                reference_body(framed, body.bare_lf).expect("a finished body reads plainly")
            });
            if body.dechunk {
                let passed = relay(
                    &[stream],
                    &Body {
                        dechunk: false,
                        ..*body
                    },
                    usize::MAX,
                );
                assert_eq!((passed.taken, passed.done), (*taken, *done));
                if let Some(read) = read {
                    assert_eq!(reference_payload(&passed.out).as_ref(), Some(out));
                    assert_eq!(&read.payload, out);
                }
            } else if body.bare_lf {
                // One step over the whole body: one chunk, then the trailers as read.
                let again = reread(out);
                let decoder = ChunkedDecoder::from_limits(&body.limits).lenient(true);
                let plain = feed(&[framed], decoder, 0).expect("relayed without error");
                assert_eq!((&again.payload, again.done), (&plain.0, *done));
                if let Some(read) = read {
                    let mut want = Vec::new();
                    if !read.payload.is_empty() {
                        want.extend_from_slice(format!("{:x}\r\n", read.payload.len()).as_bytes());
                        want.extend_from_slice(&read.payload);
                        want.extend_from_slice(b"\r\n");
                    }
                    want.extend_from_slice(b"0\r\n");
                    for t in &read.trailers {
                        want.extend_from_slice(t);
                        want.extend_from_slice(b"\r\n");
                    }
                    want.extend_from_slice(b"\r\n");
                    assert_eq!(out, &want, "not framed afresh as one chunk");
                }
            } else {
                assert_eq!(&out[..], framed, "chunked passes through as framed");
                if *done {
                    assert!(read.is_some(), "ended inside framing");
                }
            }
        }
        RespBody::Chunked => {}
    }
}

/// The body loop of the core's `relay_response`: bytes arrive in `pieces`, and each step moves at
/// most `room` of them on (the room in the client's write buffer).
fn relay(pieces: &[&[u8]], body: &Body, room: usize) -> Relayed {
    let mut r = Relayed {
        out: Vec::new(),
        taken: 0,
        done: false,
        error: None,
    };
    let mut remaining = match body.framing {
        RespBody::None | RespBody::Length(0) => {
            r.done = true;
            return r;
        }
        RespBody::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::from_limits(&body.limits).lenient(body.bare_lf);
    let mut from: Vec<u8> = Vec::new();
    for piece in pieces {
        from.extend_from_slice(piece);
        while !from.is_empty() && !r.done {
            let avail = from.len().min(room);
            let step = match body.framing {
                RespBody::Length(_) => {
                    let n = avail.min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    r.out.extend_from_slice(&from[..n]);
                    remaining -= n as u64;
                    r.done = remaining == 0;
                    Ok(n)
                }
                RespBody::Chunked if body.reframes() => {
                    // With too little room to frame anything the core waits for the client to
                    // drain its buffer; here the client drains all of it.
                    let room = if reframe_window(room, true) == 0 {
                        BUF_BYTES
                    } else {
                        room
                    };
                    let window = reframe_window(room, true);
                    let input = &from[..from.len().min(room).min(window)];
                    let mut wrote = Vec::new();
                    body::reframe(&mut decoder, input, &mut wrote).map(|d| {
                        // The client's buffer truncates what does not fit.
                        assert!(
                            wrote.len() <= room,
                            "{} bytes framed into {room} of room",
                            wrote.len()
                        );
                        r.out.extend_from_slice(&wrote);
                        r.done = d.done;
                        d.consumed
                    })
                }
                RespBody::Chunked => {
                    let input = &from[..avail];
                    let out = &mut r.out;
                    let d = if body.dechunk {
                        decoder.decode(input, &mut |a, b| out.extend_from_slice(&input[a..b]))
                    } else {
                        decoder.decode(input, &mut |_, _| {})
                    };
                    d.map(|d| {
                        if !body.dechunk {
                            r.out.extend_from_slice(&input[..d.consumed]);
                        }
                        r.done = d.done;
                        d.consumed
                    })
                }
                _ => {
                    r.out.extend_from_slice(&from[..avail]);
                    Ok(avail)
                }
            };
            let n = match step {
                Ok(n) => n,
                Err(e) => {
                    // Bytes relayed before the error depend on the reads; only the error itself
                    // is compared.
                    r.out.clear();
                    r.taken = 0;
                    r.error = Some(e);
                    return r;
                }
            };
            r.taken += n;
            from.drain(..n);
        }
    }
    r
}
