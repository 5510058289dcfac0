//! `chunked`: `ChunkedDecoder` on arbitrary input, fed whole, split at input-chosen points and
//! one byte at a time, strict and lenient, with and without a payload limit, and `reframe` over
//! the same splits.
//!
//! Input: `[mode, count, count & 15 u16 split points] ++ body bytes`. `mode`: bits 0-1 pick the
//! extension bound and bits 2-3 the trailer bound from small tables, so that both are reached by
//! short inputs; bit 4 makes the decoder under `reframe` and the payload limit lenient (lone LF as
//! a line end); bits 5-7 pick the payload limit from [`MAX_PAYLOADS`].
//!
//! What must hold:
//! - Feeding: for the strict decoder, the lenient one and the limited one alike, the three
//!   feedings agree on payload, bytes consumed, whether the body ended and the error; payload runs
//!   lie in order within the consumed bytes of each call; an unfinished body takes all of its
//!   input; a finished one stays finished and a failed one stays failed.
//! - Readings: the payload of a finished body matches an independent reading of the consumed
//!   bytes (CRLF only when strict, CRLF or LF when lenient), no chunk size there is above 2^63-1,
//!   no trailer field is one hearth interprets or writes (HTTP2-Settings included) or an
//!   underscore alias of one, and framing the payload again with `write_chunk_head` and
//!   `LAST_CHUNK` decodes to the same payload.
//! - Lenient against strict: wherever the strict decoder has not failed, the lenient one is in
//!   the same place with the same payload, so on input the strict decoder takes they agree
//!   exactly; where the strict one fails on a byte other than LF, the lenient one fails the same
//!   way. (Agreement on all input without a lone LF does not hold: a chunk whose data ends in CR
//!   followed by LF is a lone LF after the data to the lenient decoder, see [`check_lenient`].)
//! - Reframe: for the whole input, each split and byte at a time, the concatenated output of
//!   `reframe` decodes strictly, to its last byte, to the payload the plain decoder (same
//!   leniency, same split) reads; it ends where the plain decoder ends and fails where it fails,
//!   leaving the output as it was; it is exactly one chunk per call that carried payload, then
//!   the last chunk, the trailer lines of an independent reading in order, each with CRLF, and
//!   the final CRLF. No call writes more than its input plus `REFRAME_SLACK` (plus one byte per
//!   lone LF when lenient), nor more than the core's `reframe_window` leaves room for.
//! - Payload limit: the limited decoder's outcome is the unlimited one's or `TooLarge`, it is the
//!   unlimited one's whenever that finished within the limit, and it never reports a payload byte
//!   past the limit.

use hearth::http::body::{
    reframe, write_chunk_head, BodyError, ChunkedDecoder, Piece, LAST_CHUNK, MAX_EXT_BYTES,
    MAX_TRAILER_BYTES, REFRAME_SLACK,
};
use hearth::http::head::MAX_BODY_LENGTH;

use crate::{is_known_or_alias, pieces, read_boundaries, reframe_window, Input};

const EXT_BOUNDS: [usize; 4] = [MAX_EXT_BYTES, 0, 3, 8];
const TRAILER_BOUNDS: [usize; 4] = [MAX_TRAILER_BYTES, 0, 4, 9];
/// Payload limits for `max_payload`; 0 is no limit. The first is the one the committed seeds,
/// whose mode byte has no high bits, run with, so that "hello" meets it exactly.
const MAX_PAYLOADS: [u64; 8] = [5, 0, 1, 3, 16, 100, 4096, u64::MAX];

/// Payload, bytes consumed in total, and whether the body ended; or the error.
pub(crate) type Outcome = Result<(Vec<u8>, usize, bool), BodyError>;

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let max_ext = EXT_BOUNDS[usize::from(mode & 3)];
    let max_trailer = TRAILER_BOUNDS[usize::from((mode >> 2) & 3)];
    let lenient = mode & 0x10 != 0;
    let limit = MAX_PAYLOADS[usize::from(mode >> 5)];
    let (points, _) = input.splits();
    let body = input.rest();
    let cuts = read_boundaries(&points, body.len());
    let split = pieces(body, &cuts);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();

    let strict = ChunkedDecoder::new(max_ext, max_trailer);
    let under_test = strict.lenient(lenient);
    let whole = feed_three_ways(body, &split, &bytes, strict, 0, false);
    let plain = if lenient {
        feed_three_ways(body, &split, &bytes, under_test, 0, true)
    } else {
        whole.clone()
    };
    let lenient_whole = if lenient {
        plain.clone()
    } else {
        feed(&[body], strict.lenient(true), 0)
    };
    check_lenient(body, strict, &whole, &lenient_whole);

    for feeding in [&[body][..], &split, &bytes] {
        check_reframe(body, feeding, under_test, lenient, &plain);
    }

    let limited = feed_three_ways(
        body,
        &split,
        &bytes,
        under_test.max_payload(limit),
        limit,
        lenient,
    );
    let identical = limited == plain;
    assert!(
        identical || limited == Err(BodyError::TooLarge),
        "limit {limit}: {limited:?}, unlimited {plain:?}"
    );
    if let Ok((payload, _, true)) = &plain {
        if limit == 0 || payload.len() as u64 <= limit {
            assert!(
                identical,
                "limit {limit} refused a body of {}",
                payload.len()
            );
        }
    }
}

/// Feeds `body` whole, in `split` and in `bytes` to copies of `proto`, checks the three agree,
/// and checks a finished body against independent readings.
fn feed_three_ways(
    body: &[u8],
    split: &[&[u8]],
    bytes: &[&[u8]],
    proto: ChunkedDecoder,
    limit: u64,
    lenient: bool,
) -> Outcome {
    let whole = feed(&[body], proto, limit);
    assert_eq!(feed(split, proto, limit), whole, "split, lenient {lenient}");
    assert_eq!(
        feed(bytes, proto, limit),
        whole,
        "bytewise, lenient {lenient}"
    );

    if let Ok((payload, consumed, true)) = &whole {
        let read = reference_body(&body[..*consumed], lenient).unwrap_or_else(|| {
            panic!(
                "a finished body no plain reading finishes: {:?}",
                String::from_utf8_lossy(&body[..*consumed])
            )
        });
        assert_eq!(
            &read.payload, payload,
            "payload disagrees with a plain reading"
        );
        // RFC 9112 §7.1 leaves sizes unbounded; hearth refuses what a signed reader would wrap.
        assert!(
            read.sizes.iter().all(|&s| s <= MAX_BODY_LENGTH),
            "{:?}",
            read.sizes
        );
        for line in &read.trailers {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            assert!(
                !is_known_or_alias(name),
                "trailer {:?} names a field hearth acts on",
                String::from_utf8_lossy(name)
            );
        }
        let mut again = Vec::new();
        if !payload.is_empty() {
            write_chunk_head(payload.len() as u64, &mut again);
            again.extend_from_slice(payload);
            again.extend_from_slice(b"\r\n");
        }
        again.extend_from_slice(LAST_CHUNK);
        let unbounded = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        let reframed = feed(&[&again], unbounded, 0);
        assert_eq!(reframed, Ok((payload.clone(), again.len(), true)));
    }
    whole
}

/// Feeds `pieces` in order to a copy of `proto` as a connection would, checking each call's
/// contract; `limit` is the decoder's payload limit (0: none), which no payload may pass.
pub(crate) fn feed(pieces: &[&[u8]], proto: ChunkedDecoder, limit: u64) -> Outcome {
    let mut decoder = proto;
    let mut payload = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let mut last_end = 0;
        let result = decoder.decode(piece, &mut |start, end| {
            assert!(last_end <= start && start <= end && end <= piece.len());
            last_end = end;
            payload.extend_from_slice(&piece[start..end]);
        });
        if limit > 0 {
            // TooLarge comes at the size line, before any byte of the chunk past the limit.
            assert!(
                payload.len() as u64 <= limit,
                "payload past the limit {limit}"
            );
        }
        let d = match result {
            Ok(d) => d,
            Err(e) => {
                let again = decoder.decode(b"0\r\n\r\n", &mut |_, _| panic!("data after failing"));
                assert_eq!(again, Err(e), "a failed decoder stays failed");
                assert!(!decoder.is_done());
                return Err(e);
            }
        };
        assert!(last_end <= d.consumed && d.consumed <= piece.len());
        assert_eq!(decoder.payload_len(), payload.len() as u64);
        assert_eq!(decoder.is_done(), d.done);
        consumed += d.consumed;
        if d.done {
            assert!(decoder.in_trailers());
            let rest = &piece[d.consumed..];
            let after = decoder.decode(rest, &mut |_, _| panic!("data after the end"));
            assert_eq!(after.map(|a| (a.consumed, a.done)), Ok((0, true)));
            return Ok((payload, consumed, true));
        }
        assert_eq!(
            d.consumed,
            piece.len(),
            "an unfinished body takes all its input"
        );
    }
    Ok((payload, consumed, false))
}

/// The lenient decoder only adds line ends: it moves exactly as the strict one does until the
/// strict one fails, and can differ there only on an LF. A byte-level "no lone LF" is not enough
/// for the two to agree: in `1\r\n\r\n0\r\n\r\n` the chunk's data is the CR, so the LF after it
/// is a lone LF ending the data, which the lenient decoder takes and the strict one refuses.
fn check_lenient(body: &[u8], strict: ChunkedDecoder, strict_out: &Outcome, lenient_out: &Outcome) {
    let Err(e) = strict_out else {
        assert_eq!(
            lenient_out, strict_out,
            "lenient differs where strict accepts"
        );
        return;
    };
    // Where the strict decoder fails: fed a byte at a time, the byte that makes it fail.
    let mut d = strict;
    let at = (0..body.len())
        .find(|&i| d.decode(&body[i..=i], &mut |_, _| {}).is_err())
        .expect("a decoder that fails on the whole fails on some byte");
    let before = &body[..at];
    assert_eq!(
        feed(&[before], strict.lenient(true), 0),
        feed(&[before], strict, 0),
        "lenient and strict part before byte {at}"
    );
    if body[at] != b'\n' {
        assert_eq!(
            lenient_out,
            &Err(*e),
            "strict fails on byte {at}, not an LF"
        );
    }
}

/// Reframes `feeding` (consecutive pieces of `body`) with a copy of `proto` and holds the output
/// to `plain`, the plain decoder's outcome on the same bytes.
fn check_reframe(
    body: &[u8],
    feeding: &[&[u8]],
    proto: ChunkedDecoder,
    lenient: bool,
    plain: &Outcome,
) {
    let mut dec = proto;
    // In lockstep, for the payload each call carries.
    let mut lockstep = proto;
    let mut out = b"earlier".to_vec();
    let mut chunks = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    let mut failed = None;
    let mut offset = 0;
    for piece in feeding {
        let before = out.len();
        let snapshot = (feeding.len() == 1).then(|| out.clone());
        let mut carried = Vec::new();
        let step = lockstep.decode(piece, &mut |a, b| carried.extend_from_slice(&piece[a..b]));
        match reframe(&mut dec, piece, &mut out) {
            Err(e) => {
                assert_eq!(step.map(|_| ()), Err(e), "reframe and decode fail alike");
                assert_eq!(out.len(), before, "a failed reframe wrote");
                if let Some(s) = snapshot {
                    assert_eq!(out, s, "a failed reframe changed the output");
                }
                failed = Some(e);
                break;
            }
            Ok(d) => {
                assert_eq!(step, Ok(d), "reframe and decode take the same bytes");
                let wrote = out.len() - before;
                let lone = (offset..offset + piece.len())
                    .filter(|&i| body[i] == b'\n' && (i == 0 || body[i - 1] != b'\r'))
                    .count();
                let bound = piece.len() + REFRAME_SLACK + if lenient { lone } else { 0 };
                assert!(
                    wrote <= bound,
                    "{wrote} bytes from {} (bound {bound})",
                    piece.len()
                );
                // The core reframes at most reframe_window(room) bytes into `room` bytes of
                // buffer, which truncates what does not fit: the least room whose window takes
                // this piece must hold what it became.
                let least_room = if lenient {
                    REFRAME_SLACK + 3 * piece.len().div_ceil(2)
                } else {
                    REFRAME_SLACK + piece.len()
                };
                assert!(reframe_window(least_room, lenient) >= piece.len());
                assert!(wrote <= least_room, "{wrote} bytes from {}", piece.len());
                chunks.push(carried);
                consumed += d.consumed;
                offset += piece.len();
                if d.done {
                    done = true;
                    break;
                }
                assert_eq!(d.consumed, piece.len());
            }
        }
    }
    assert!(out.starts_with(b"earlier"), "reframe appends");
    let out = &out[b"earlier".len()..];

    let (payload, plain_consumed, plain_done) = match plain {
        Err(e) => {
            assert_eq!(failed, Some(*e), "reframe fails where decoding does");
            return;
        }
        Ok(p) => p,
    };
    assert_eq!(failed, None, "reframe failed where decoding does not");
    assert_eq!(
        (consumed, done),
        (*plain_consumed, *plain_done),
        "reframe ends elsewhere"
    );
    let again = reread(out);
    assert_eq!(&again.payload, payload, "reframed payload");
    assert_eq!(again.done, done, "reframed body ends elsewhere");

    let mut want = Vec::new();
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        want.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        want.extend_from_slice(c);
        want.extend_from_slice(b"\r\n");
    }
    if done {
        let read = reference_body(&body[..consumed], lenient).expect("read above");
        assert_eq!(again.trailers, read.trailers, "trailers lost or reordered");
        want.extend_from_slice(b"0\r\n");
        for t in &read.trailers {
            want.extend_from_slice(t);
            want.extend_from_slice(b"\r\n");
        }
        want.extend_from_slice(b"\r\n");
        assert_eq!(out, want, "not framed canonically");
    } else if !again.last_chunk {
        assert_eq!(out, want, "not framed canonically");
    }
}

/// A chunked body hearth wrote, read back with a strict decoder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reread {
    pub(crate) payload: Vec<u8>,
    /// Trailer field lines, without their CRLF.
    pub(crate) trailers: Vec<Vec<u8>>,
    /// The start of a trailer line the bytes end inside.
    pub(crate) partial: Vec<u8>,
    pub(crate) last_chunk: bool,
    pub(crate) done: bool,
}

/// Reads `out`, bytes hearth framed for a peer, with a strict decoder and no bounds, asserting
/// that every byte of it is a valid chunked body so far (so its framing has CRLF line ends only)
/// and, if the body ends, that it ends at the last byte.
pub(crate) fn reread(out: &[u8]) -> Reread {
    let mut r = Reread {
        payload: Vec::new(),
        trailers: Vec::new(),
        partial: Vec::new(),
        last_chunk: false,
        done: false,
    };
    let mut d = ChunkedDecoder::new(usize::MAX, usize::MAX);
    let got = d.decode_pieces(out, &mut |p| match p {
        Piece::Data(a, b) => r.payload.extend_from_slice(&out[a..b]),
        Piece::LastChunk => r.last_chunk = true,
        Piece::Trailer(a, b) => r.partial.extend_from_slice(&out[a..b]),
        Piece::TrailerEnd => r.trailers.push(std::mem::take(&mut r.partial)),
        Piece::End => r.done = true,
    });
    match got {
        Ok(g) => {
            assert_eq!(
                g.consumed,
                out.len(),
                "hearth's framing ends before its output"
            );
            assert_eq!(g.done, r.done);
        }
        Err(e) => panic!(
            "hearth's framing does not decode strictly ({e:?}): {:?}",
            String::from_utf8_lossy(out)
        ),
    }
    // No byte-level lone-LF test here: payload may hold any byte. The strict decoder taking
    // every byte is what says the framing ends its lines in CRLF.
    r
}

/// A complete chunked body as read without hearth's code.
#[derive(Debug)]
pub(crate) struct Reading {
    pub(crate) payload: Vec<u8>,
    pub(crate) sizes: Vec<u64>,
    /// Trailer field lines without their line ends.
    pub(crate) trailers: Vec<Vec<u8>>,
}

/// Reads a complete chunked body (RFC 9112 §7.1) loosely: hex size, anything up to the line end,
/// data, line end; after the last chunk, lines up to an empty one. Line ends are CRLF, or with
/// `lenient` also LF alone (§2.2). None when the bytes do not end exactly at the end of the
/// trailer section.
pub(crate) fn reference_body(body: &[u8], lenient: bool) -> Option<Reading> {
    let mut r = Reading {
        payload: Vec::new(),
        sizes: Vec::new(),
        trailers: Vec::new(),
    };
    let mut at = 0;
    loop {
        let (line, next) = line_at(body, at, lenient)?;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
        r.sizes.push(size);
        at = next;
        if size == 0 {
            loop {
                let (line, next) = line_at(body, at, lenient)?;
                at = next;
                if line.is_empty() {
                    return (at == body.len()).then_some(r);
                }
                r.trailers.push(line.to_vec());
            }
        }
        let size = usize::try_from(size).ok()?;
        let data = body.get(at..at.checked_add(size)?)?;
        r.payload.extend_from_slice(data);
        at += size;
        at += match body.get(at..)? {
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] if lenient => 1,
            _ => return None,
        };
    }
}

/// The line starting at `at` without its line end, and where the next one starts.
fn line_at(body: &[u8], at: usize, lenient: bool) -> Option<(&[u8], usize)> {
    let rest = body.get(at..)?;
    if lenient {
        let lf = rest.iter().position(|&b| b == b'\n')?;
        let end = if lf > 0 && rest[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        Some((&rest[..end], at + lf + 1))
    } else {
        let crlf = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..crlf], at + crlf + 2))
    }
}

/// The payload of a complete chunked body with CRLF line ends, read without hearth's code.
pub(crate) fn reference_payload(body: &[u8]) -> Option<Vec<u8>> {
    reference_body(body, false).map(|r| r.payload)
}
