//! `client_codec`: the client side of a connection as the core runs it, over a stream of
//! pipelined requests that arrives in arbitrary reads.
//!
//! Input: `[config, count, count & 15 u16 split points] ++ client bytes`. `config`: its value
//! modulo the number of limit sets picks the limits (clamped to what a buffer can hold), bit 7
//! makes the read buffer exactly as large as the head limit instead of the core's 16 KiB floor.
//! The high nibble of `count` picks how many body bytes each step may move on ([`crate::ROOMS`],
//! standing in for the room left in the upstream buffer).
//!
//! The run under test mirrors `Core::step_head` and `Core::pump_request`: read into a fixed-size
//! `hearth::buf::Buf`, parse a head once one is whole, consume it, move the body on by
//! Content-Length, or framed afresh by `body::reframe` (the decoder lenient when the limits
//! accept bare LF) at most `reframe_window(room)` bytes at a time, then parse the next head from
//! what is left, and stop after a request that does not keep the connection. The reference parses
//! the whole stream in place at increasing offsets with no buffer at all, and reframes each body
//! in one call. Both must tell the same story: the same heads, the same body bytes (for a chunked
//! body, whose chunks follow the reads, the same payload and trailers read back strictly), the
//! same ending. The one difference allowed is the kind of refusal: a request line whose target is
//! already too long when a read ends is refused with 414 at once, while the whole line may show a
//! 400 first. What a chunked body becomes decodes strictly with CRLF only, and no step writes
//! more than the room `to_up` had.

use hearth::buf::BufPool;
use hearth::http::body::{self, BodyError, ChunkedDecoder, REFRAME_SLACK};
use hearth::http::head::{parse_request, HeadError, Limits, ReqBody, MAX_HEAD_BYTES};

use crate::chunked::{reread, Reread};
use crate::request_head::OwnedRequest;
use crate::{pieces, read_boundaries, reframe_window, Input, BUF_BYTES, LIMITS, ROOMS};

#[derive(Debug, PartialEq, Eq)]
struct Request {
    head: OwnedRequest,
    /// The body bytes moved on; None when the body failed, since how much went out before the
    /// failure depends on the reads.
    body: Option<Moved>,
}

/// A request body as it went upstream.
#[derive(Debug, PartialEq, Eq)]
enum Moved {
    /// Delimited by Content-Length: the bytes as received.
    Bytes(Vec<u8>),
    /// Chunked, framed afresh: what a strict decoder reads in it.
    Reframed(Reread),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The input ended between requests.
    Idle,
    /// The input ended inside a head.
    InHead,
    /// The input ended inside a body.
    InBody,
    /// A request without keep-alive was read to its end; the core closes after its response.
    Closed,
    HeadRefused(HeadError),
    BodyRefused(BodyError),
}

#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    requests: Vec<Request>,
    end: End,
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let config = input.byte();
    let mut limits = LIMITS[usize::from(config & 0x7f) % LIMITS.len()];
    if limits.max_head_bytes > MAX_HEAD_BYTES {
        // The core sizes its buffers to hold the largest head, so it cannot run unbounded.
        limits.max_head_bytes = MAX_HEAD_BYTES;
    }
    let capacity = if config & 0x80 != 0 {
        limits.max_head_bytes.max(1)
    } else {
        limits.max_head_bytes.max(BUF_BYTES)
    };
    let (points, room) = input.splits();
    let stream = input.rest();

    let reference = in_place(stream, &limits);
    let cuts = read_boundaries(&points, stream.len());
    let got = buffered(
        &pieces(stream, &cuts),
        &limits,
        capacity,
        ROOMS[usize::from(room) % 8],
    );
    if got == reference {
        return;
    }
    let early_414 = matches!(
        (got.end, reference.end),
        (End::HeadRefused(HeadError::UriTooLong), End::HeadRefused(_))
    );
    assert!(
        early_414 && got.requests == reference.requests,
        "reads cut at {cuts:?} into a {capacity}-byte buffer tell another story:\n\
         got       {got:?}\nreference {reference:?}"
    );
}

/// The reference: every head and body parsed straight from the stream.
fn in_place(stream: &[u8], limits: &Limits) -> Transcript {
    let mut requests = Vec::new();
    let mut headers = Vec::new();
    let mut at = 0;
    let end = loop {
        let rest = &stream[at..];
        if rest.is_empty() {
            break End::Idle;
        }
        let h = match parse_request(rest, limits, &mut headers) {
            Ok(Some(h)) => h,
            Ok(None) => break End::InHead,
            Err(e) => break End::HeadRefused(e),
        };
        let head = OwnedRequest::new(rest, &h, &headers);
        at += h.head_len;
        let rest = &stream[at..];
        let (taken, ended, moved) = match h.body {
            ReqBody::None => (0, true, Moved::Bytes(Vec::new())),
            ReqBody::Length(n) => {
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                (take, take as u64 == n, Moved::Bytes(rest[..take].to_vec()))
            }
            ReqBody::Chunked => {
                let mut d = decoder(limits);
                let mut out = Vec::new();
                match body::reframe(&mut d, rest, &mut out) {
                    Ok(d) => (d.consumed, d.done, Moved::Reframed(reread(&out))),
                    Err(e) => {
                        requests.push(Request { head, body: None });
                        break End::BodyRefused(e);
                    }
                }
            }
        };
        requests.push(Request {
            head,
            body: Some(moved),
        });
        at += taken;
        if !ended {
            break End::InBody;
        }
        if !h.keep_alive {
            break End::Closed;
        }
    };
    Transcript { requests, end }
}

/// A socket whose bytes arrive in `pieces`: a read never spans two of them.
struct Socket<'a> {
    pieces: &'a [&'a [u8]],
    next: usize,
    pending: &'a [u8],
}

impl Socket<'_> {
    /// Fills what it can of `spare`; 0 means end of input.
    fn read(&mut self, spare: &mut [u8]) -> usize {
        while self.pending.is_empty() && self.next < self.pieces.len() {
            self.pending = self.pieces[self.next];
            self.next += 1;
        }
        let n = spare.len().min(self.pending.len());
        spare[..n].copy_from_slice(&self.pending[..n]);
        self.pending = &self.pending[n..];
        n
    }
}

/// The decoder `Core::step_head` makes for a chunked request body (`max_body_bytes` unset).
fn decoder(limits: &Limits) -> ChunkedDecoder {
    ChunkedDecoder::from_limits(limits).lenient(limits.accept_bare_lf)
}

enum BodyIn {
    Length(u64),
    /// The decoder, and what has gone upstream so far.
    Chunked(ChunkedDecoder, Vec<u8>),
}

/// Chunked bodies a step left in framed form, read back now that they are whole (or cut).
fn settle(requests: &mut [Request], reading: &mut Option<(BodyIn, bool)>) {
    if let (Some((BodyIn::Chunked(_, out), _)), Some(r)) = (reading.take(), requests.last_mut()) {
        if r.body.is_some() {
            r.body = Some(Moved::Reframed(reread(&out)));
        }
    }
}

/// The run under test: the core's read, parse, consume and pump loop over one fixed buffer.
fn buffered(pieces: &[&[u8]], limits: &Limits, capacity: usize, room: usize) -> Transcript {
    let mut pool = BufPool::new(capacity, 1);
    let mut buf = pool.checkout().expect("a pool of one has one buffer");
    let mut sock = Socket {
        pieces,
        next: 0,
        pending: &[],
    };
    let mut headers = Vec::new();
    let mut requests: Vec<Request> = Vec::new();
    let mut reading: Option<(BodyIn, bool)> = None;
    let end = loop {
        match reading.as_mut() {
            None => {
                if !buf.is_empty() {
                    match parse_request(buf.filled(), limits, &mut headers) {
                        Ok(Some(h)) => {
                            let head = OwnedRequest::new(buf.filled(), &h, &headers);
                            buf.consume(h.head_len);
                            requests.push(Request {
                                head,
                                body: Some(Moved::Bytes(Vec::new())),
                            });
                            let body = match h.body {
                                ReqBody::None | ReqBody::Length(0) => None,
                                ReqBody::Length(n) => Some(BodyIn::Length(n)),
                                ReqBody::Chunked => {
                                    Some(BodyIn::Chunked(decoder(limits), Vec::new()))
                                }
                            };
                            match body {
                                Some(b) => reading = Some((b, h.keep_alive)),
                                None if !h.keep_alive => break End::Closed,
                                None => {}
                            }
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => break End::HeadRefused(e),
                    }
                }
                let spare = buf.spare_mut();
                assert!(
                    !spare.is_empty(),
                    "stalled: an incomplete head of {} bytes fills the buffer",
                    buf.len()
                );
                match sock.read(spare) {
                    0 if buf.is_empty() => break End::Idle,
                    0 => break End::InHead,
                    n => buf.fill(n),
                }
            }
            Some((body_in, keep_alive)) => {
                if buf.is_empty() {
                    match sock.read(buf.spare_mut()) {
                        0 => break End::InBody,
                        n => buf.fill(n),
                    }
                    continue;
                }
                let keep_alive = *keep_alive;
                let (n, done) = match body_in {
                    BodyIn::Length(rem) => {
                        let n = buf
                            .len()
                            .min(room)
                            .min(usize::try_from(*rem).unwrap_or(usize::MAX));
                        *rem -= n as u64;
                        match requests.last_mut().and_then(|r| r.body.as_mut()) {
                            Some(Moved::Bytes(b)) => b.extend_from_slice(&buf.filled()[..n]),
                            other => panic!("a length-delimited body in {other:?}"),
                        }
                        (n, *rem == 0)
                    }
                    BodyIn::Chunked(dec, sent) => {
                        // The core makes room in `to_up` (dropping what the upstream has taken)
                        // before it reframes into less than twice the slack; here the upstream
                        // has taken everything.
                        let room = if room <= 2 * REFRAME_SLACK {
                            BUF_BYTES
                        } else {
                            room
                        };
                        let take = buf
                            .len()
                            .min(room)
                            .min(reframe_window(room, limits.accept_bare_lf));
                        let mut wrote = Vec::new();
                        match body::reframe(dec, &buf.filled()[..take], &mut wrote) {
                            Ok(d) => {
                                // `to_up` truncates what does not fit.
                                assert!(wrote.len() <= room, "{} bytes into {room}", wrote.len());
                                sent.extend_from_slice(&wrote);
                                (d.consumed, d.done)
                            }
                            Err(e) => {
                                requests.last_mut().expect("checked above").body = None;
                                break End::BodyRefused(e);
                            }
                        }
                    }
                };
                buf.consume(n);
                if done {
                    settle(&mut requests, &mut reading);
                    if !keep_alive {
                        break End::Closed;
                    }
                }
            }
        }
    };
    settle(&mut requests, &mut reading);
    pool.give_back(buf);
    Transcript { requests, end }
}
