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
//! Content-Length or through a `ChunkedDecoder`, then parse the next head from what is left, and
//! stop after a request that does not keep the connection. The reference parses the whole stream
//! in place at increasing offsets with no buffer at all. Both must tell the same story: the same
//! heads, the same body bytes, the same ending. The one difference allowed is the kind of
//! refusal: a request line whose target is already too long when a read ends is refused with 414
//! at once, while the whole line may show a 400 first.

use hearth::buf::BufPool;
use hearth::http::body::{BodyError, ChunkedDecoder, MAX_EXT_BYTES, MAX_TRAILER_BYTES};
use hearth::http::head::{parse_request, HeadError, Limits, ReqBody, MAX_HEAD_BYTES};

use crate::request_head::OwnedRequest;
use crate::{pieces, read_boundaries, Input, LIMITS, ROOMS};

/// The core's smallest buffer: `BufPool::new(max_head_bytes.max(16_384), ..)`.
const CORE_MIN_BUF: usize = 16_384;

#[derive(Debug, PartialEq, Eq)]
struct Request {
    head: OwnedRequest,
    /// The body bytes moved on as received (chunked framing included); None when the body
    /// failed, since how much went out before the failure depends on the reads.
    body: Option<Vec<u8>>,
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
        limits.max_head_bytes.max(CORE_MIN_BUF)
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
        let (taken, ended) = match h.body {
            ReqBody::None => (0, true),
            ReqBody::Length(n) => {
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                (take, take as u64 == n)
            }
            ReqBody::Chunked => {
                let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
                match d.decode(rest, &mut |_, _| {}) {
                    Ok(d) => (d.consumed, d.done),
                    Err(e) => {
                        requests.push(Request { head, body: None });
                        break End::BodyRefused(e);
                    }
                }
            }
        };
        requests.push(Request {
            head,
            body: Some(rest[..taken].to_vec()),
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

enum BodyIn {
    Length(u64),
    Chunked(ChunkedDecoder),
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
                                body: Some(Vec::new()),
                            });
                            let body = match h.body {
                                ReqBody::None | ReqBody::Length(0) => None,
                                ReqBody::Length(n) => Some(BodyIn::Length(n)),
                                ReqBody::Chunked => Some(BodyIn::Chunked(ChunkedDecoder::new(
                                    MAX_EXT_BYTES,
                                    MAX_TRAILER_BYTES,
                                ))),
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
                let avail = buf.len().min(room);
                let (n, done) = match body_in {
                    BodyIn::Length(rem) => {
                        let n = avail.min(usize::try_from(*rem).unwrap_or(usize::MAX));
                        *rem -= n as u64;
                        (n, *rem == 0)
                    }
                    BodyIn::Chunked(dec) => {
                        match dec.decode(&buf.filled()[..avail], &mut |_, _| {}) {
                            Ok(d) => (d.consumed, d.done),
                            Err(e) => {
                                requests.last_mut().expect("checked above").body = None;
                                break End::BodyRefused(e);
                            }
                        }
                    }
                };
                requests
                    .last_mut()
                    .and_then(|r| r.body.as_mut())
                    .expect("a body follows its head")
                    .extend_from_slice(&buf.filled()[..n]);
                buf.consume(n);
                if done {
                    if !*keep_alive {
                        break End::Closed;
                    }
                    reading = None;
                }
            }
        }
    };
    pool.give_back(buf);
    Transcript { requests, end }
}
