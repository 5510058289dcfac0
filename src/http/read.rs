//! One HTTP/1.1 message read off a connection hearth owns outside the cores: requests on the admin
//! listener, answers from etcd and from health probes. [`MessageDecoder`] is the sans-io part: it
//! is fed bytes as they arrive and says, event by event, when the head is complete (parsed by
//! [`head`](super::head) to the same strict rules the data path applies), which bytes are payload,
//! and where the message ends, by the framing of RFC 9112 §6.3: no body, Content-Length, chunked
//! (through [`ChunkedDecoder`], RFC 9112 §7.1), or, for a response, until the peer closes.
//! [`MessageReader`] is the thin blocking wrapper that feeds it from a `std::io::Read`, for whole
//! bodies and for bodies that never end (etcd's watch stream), whose payload it hands out as it
//! comes.
//!
//! Invariants:
//! - The head event comes before any payload and before any error about the body, so a caller
//!   always learns the status or the request line of a message it refuses for its body.
//! - A decoder holds only bytes it has not decoded yet: a head still arriving, which fails with
//!   `HeadTooLarge` once it reaches `Limits::max_head_bytes`, the rest of the last feed, and bytes
//!   past the end of the message, which stay for the next one (RFC 9112 §9.3, keep-alive). It
//!   never gathers payload beyond one feed; whoever keeps a whole body keeps at most `max_body`,
//!   since payload past that bound is refused before it is handed out, and a declared
//!   Content-Length or chunk size past it before any of its bytes.
//! - Input may be split anywhere: the head, the payload, where the message ends and any error
//!   are the same for every split.
//! - Once it has failed, a decoder fails with the same error whatever it is fed.

use std::fmt;
use std::io::{self, Read};

use super::body::{BodyError, ChunkedDecoder};
use super::head::{
    parse_request, parse_response, HeadError, Header, Limits, ReqBody, RequestHead, RespBody,
    ResponseHead, Span,
};

/// Bytes [`MessageReader`] asks of its reader at a time.
const READ_BYTES: usize = 16 * 1024;

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the peer closes; responses only.
    Close,
}

/// A head [`MessageDecoder`] can read: [`RequestHead`] or [`ResponseHead`].
pub trait MessageHead: Copy {
    /// Whether empty lines may come before the start line and mean nothing (RFC 9112 §2.2 asks
    /// a server to ignore them before a request; before a response they are an error).
    const EMPTY_LINES_FIRST: bool;

    /// Parses a head at the start of `buf`, as [`parse_request`] and [`parse_response`] do.
    /// `to_head`: the request was HEAD (responses only).
    fn parse(
        buf: &[u8],
        limits: &Limits,
        to_head: bool,
        fields: &mut Vec<Header>,
    ) -> Result<Option<Self>, HeadError>;

    /// Bytes of the head, blank line included.
    fn head_len(&self) -> usize;

    fn framing(&self) -> Framing;

    /// Whether a chunked body after this head may end its lines in LF alone.
    fn lenient_chunks(&self, limits: &Limits) -> bool;
}

impl MessageHead for RequestHead {
    const EMPTY_LINES_FIRST: bool = true;

    fn parse(
        buf: &[u8],
        limits: &Limits,
        _to_head: bool,
        fields: &mut Vec<Header>,
    ) -> Result<Option<Self>, HeadError> {
        parse_request(buf, limits, fields)
    }

    fn head_len(&self) -> usize {
        self.head_len
    }

    fn framing(&self) -> Framing {
        match self.body {
            ReqBody::None => Framing::None,
            ReqBody::Length(n) => Framing::Length(n),
            ReqBody::Chunked => Framing::Chunked,
        }
    }

    /// As for the head: only when the caller accepts bare LF from this peer at all.
    fn lenient_chunks(&self, limits: &Limits) -> bool {
        limits.accept_bare_lf
    }
}

impl MessageHead for ResponseHead {
    const EMPTY_LINES_FIRST: bool = false;

    fn parse(
        buf: &[u8],
        limits: &Limits,
        to_head: bool,
        fields: &mut Vec<Header>,
    ) -> Result<Option<Self>, HeadError> {
        parse_response(buf, limits, to_head, fields)
    }

    fn head_len(&self) -> usize {
        self.head_len
    }

    fn framing(&self) -> Framing {
        match self.body {
            RespBody::None => Framing::None,
            RespBody::Length(n) => Framing::Length(n),
            RespBody::Chunked => Framing::Chunked,
            RespBody::Close => Framing::Close,
        }
    }

    /// Response heads may always end lines in LF alone (see [`head`](super::head)), and nothing
    /// read here is passed on, so their chunk lines may too.
    fn lenient_chunks(&self, _limits: &Limits) -> bool {
        true
    }
}

/// What went wrong with a message, whatever the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// The input ended before a message began (for requests, before anything but the empty
    /// lines RFC 9112 §2.2 lets a client send first): the peer closed between messages.
    Closed,
    /// The input ended inside the head.
    HeadCut,
    /// The input ended before the body did.
    BodyCut,
    Head(HeadError),
    Body(BodyError),
    /// The body carries more than the decoder's `max_body`.
    BodyTooLarge,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageError::Closed => "the connection closed before a message began",
            MessageError::HeadCut => "the connection closed inside the head",
            MessageError::BodyCut => "the connection closed inside the body",
            MessageError::Head(HeadError::Malformed) => "malformed head",
            MessageError::Head(HeadError::HeadTooLarge) => "head too large",
            MessageError::Head(HeadError::TooManyHeaders) => "too many header fields",
            MessageError::Head(HeadError::UriTooLong) => "request-target too long",
            MessageError::Head(HeadError::UnsupportedCoding) => {
                "a transfer coding other than chunked"
            }
            MessageError::Body(BodyError::BadChunk) => "malformed chunked framing",
            MessageError::Body(BodyError::ExtTooLong) => "chunk extensions too long",
            MessageError::Body(BodyError::TrailerTooLarge) => "trailer section too large",
            MessageError::Body(BodyError::ForbiddenTrailer) => {
                "a trailer field that must not be a trailer"
            }
            MessageError::Body(BodyError::TooLarge) | MessageError::BodyTooLarge => {
                "body too large"
            }
        })
    }
}

impl std::error::Error for MessageError {}

/// What one call to [`MessageDecoder::next_event`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Everything fed has been decoded: feed more, or say the input ended.
    NeedMore,
    /// The head is complete; see [`MessageDecoder::head`].
    Head,
    /// The next payload bytes, never empty.
    Data(&'a [u8]),
    /// The message is complete. Bytes fed past its end are [`MessageDecoder::leftover`].
    End,
}

/// Where the decoder stands in the message, named for what it reads next.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Head,
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    Close,
    Done,
    Failed(MessageError),
}

/// What [`MessageDecoder::advance`] found, as ranges so the borrow of the payload is taken last.
enum Step {
    NeedMore,
    Head,
    /// Payload at `pending[from..to]`.
    Pending {
        from: usize,
        to: usize,
    },
    /// Payload gathered from chunks into `gathered`.
    Gathered,
    End,
}

/// Sans-io reader of one HTTP/1.1 message at a time, requests or responses by `H`.
#[derive(Debug)]
pub struct MessageDecoder<H> {
    limits: Limits,
    /// Most payload bytes the message may carry.
    max_body: u64,
    /// The message answers a HEAD request (responses only).
    to_head: bool,
    /// Bytes fed and not yet decoded start at `pending[at..]`.
    pending: Vec<u8>,
    at: usize,
    /// The input has ended: no more bytes will be fed.
    ended: bool,
    head: Option<H>,
    /// The head's bytes, which its spans and `fields` index.
    head_bytes: Vec<u8>,
    fields: Vec<Header>,
    /// Chunk payload of one event: chunk framing splits it, so it cannot be lent from `pending`.
    gathered: Vec<u8>,
    /// Payload handed out so far.
    payload: u64,
    phase: Phase,
}

/// Reads requests.
pub type RequestDecoder = MessageDecoder<RequestHead>;
/// Reads responses.
pub type ResponseDecoder = MessageDecoder<ResponseHead>;

impl<H: MessageHead> MessageDecoder<H> {
    /// A decoder for heads within `limits` and bodies of at most `max_body` payload bytes.
    pub fn new(limits: Limits, max_body: u64) -> Self {
        MessageDecoder {
            limits,
            max_body,
            to_head: false,
            pending: Vec::new(),
            at: 0,
            ended: false,
            head: None,
            head_bytes: Vec::new(),
            fields: Vec::new(),
            gathered: Vec::new(),
            payload: 0,
            phase: Phase::Head,
        }
    }

    /// Changes the bound on this message's payload, counting what was handed out already. A
    /// caller that consumes a body as it arrives and bounds what it keeps itself (an endless
    /// stream) may lift it with `u64::MAX`.
    pub fn set_max_body(&mut self, max: u64) {
        self.max_body = max;
        if let Phase::Chunked(d) = self.phase {
            self.phase = Phase::Chunked(d.max_payload(max));
        }
    }

    /// Hands the decoder the next bytes of the input. Meant for when [`next_event`] asked for
    /// them: bytes fed meanwhile are held until decoded. Bytes fed after the input ended are
    /// ignored.
    ///
    /// [`next_event`]: Self::next_event
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.ended {
            return;
        }
        // Decoded bytes are dropped here, so the buffer holds no more than was not yet decoded.
        if self.at > 0 {
            self.pending.drain(..self.at);
            self.at = 0;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// Says the input has ended (the peer closed): a message still open then ends or fails.
    pub fn end_input(&mut self) {
        self.ended = true;
    }

    /// The head, once [`Event::Head`] has been returned for this message.
    pub fn head(&self) -> Option<&H> {
        self.head.as_ref()
    }

    /// The bytes `span` of the head covers.
    pub fn bytes(&self, span: Span) -> &[u8] {
        span.of(&self.head_bytes)
    }

    /// The values of the head's fields named `name`, in order; names compare case-insensitively
    /// (RFC 9110 §5.1). Empty before the head is complete.
    pub fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| {
                f.name
                    .of(&self.head_bytes)
                    .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|f| f.value.of(&self.head_bytes))
    }

    /// Payload bytes handed out for this message so far.
    pub fn payload_len(&self) -> u64 {
        self.payload
    }

    /// Bytes fed and not decoded: after [`Event::End`], those past the end of the message.
    pub fn leftover(&self) -> &[u8] {
        &self.pending[self.at..]
    }

    /// Starts on the next message, keeping the bytes fed past the end of this one, once this one
    /// has ended; false, changing nothing, before that.
    pub fn next_message(&mut self) -> bool {
        if !matches!(self.phase, Phase::Done) {
            return false;
        }
        self.head = None;
        self.head_bytes.clear();
        self.fields.clear();
        self.payload = 0;
        self.phase = Phase::Head;
        true
    }

    /// Decodes as far as the bytes fed allow and says what it found; see [`Event`]. After
    /// `End` it keeps returning `End`, and after an error the same error.
    pub fn next_event(&mut self) -> Result<Event<'_>, MessageError> {
        let step = match self.advance() {
            Ok(step) => step,
            Err(e) => {
                self.phase = Phase::Failed(e);
                return Err(e);
            }
        };
        Ok(match step {
            Step::NeedMore => Event::NeedMore,
            Step::Head => Event::Head,
            Step::Pending { from, to } => Event::Data(&self.pending[from..to]),
            Step::Gathered => Event::Data(&self.gathered),
            Step::End => Event::End,
        })
    }

    /// Appends to `out` all the payload the bytes fed so far carry, reading past the head if it
    /// has not been read; true once the message has ended.
    pub fn decode_payload(&mut self, out: &mut Vec<u8>) -> Result<bool, MessageError> {
        loop {
            match self.next_event()? {
                Event::Head => {}
                Event::Data(bytes) => out.extend_from_slice(bytes),
                Event::NeedMore => return Ok(false),
                Event::End => return Ok(true),
            }
        }
    }

    fn advance(&mut self) -> Result<Step, MessageError> {
        let available = self.pending.len() - self.at;
        match self.phase {
            Phase::Failed(e) => Err(e),
            Phase::Done => Ok(Step::End),
            Phase::Head => self.read_head(),
            // RFC 9112 §6.3 item 6: exactly the declared number of bytes.
            Phase::Length { remaining } => {
                if self.payload.saturating_add(remaining) > self.max_body {
                    return Err(MessageError::BodyTooLarge);
                }
                if remaining == 0 {
                    self.phase = Phase::Done;
                    return Ok(Step::End);
                }
                if available == 0 {
                    return self.starved(MessageError::BodyCut);
                }
                // At most `available`, which is a usize.
                let take = remaining.min(available as u64) as usize;
                self.phase = Phase::Length {
                    remaining: remaining - take as u64,
                };
                Ok(self.hand_out(take))
            }
            // RFC 9112 §6.3 item 8: a response without framing runs until the peer closes.
            Phase::Close => {
                if available == 0 {
                    if self.ended {
                        self.phase = Phase::Done;
                        return Ok(Step::End);
                    }
                    return Ok(Step::NeedMore);
                }
                if self.payload.saturating_add(available as u64) > self.max_body {
                    return Err(MessageError::BodyTooLarge);
                }
                Ok(self.hand_out(available))
            }
            Phase::Chunked(mut chunks) => {
                if chunks.is_done() {
                    self.phase = Phase::Done;
                    return Ok(Step::End);
                }
                if available == 0 {
                    return self.starved(MessageError::BodyCut);
                }
                let input = &self.pending[self.at..];
                let gathered = &mut self.gathered;
                gathered.clear();
                let decoded = chunks
                    .decode(input, &mut |from, to| {
                        gathered.extend_from_slice(&input[from..to])
                    })
                    .map_err(|e| match e {
                        BodyError::TooLarge => MessageError::BodyTooLarge,
                        e => MessageError::Body(e),
                    })?;
                self.phase = Phase::Chunked(chunks);
                self.at += decoded.consumed;
                self.payload += self.gathered.len() as u64;
                if !self.gathered.is_empty() {
                    // The end, if it came too, is reported by the next call.
                    Ok(Step::Gathered)
                } else if decoded.done {
                    self.phase = Phase::Done;
                    Ok(Step::End)
                } else {
                    Ok(Step::NeedMore)
                }
            }
        }
    }

    fn read_head(&mut self) -> Result<Step, MessageError> {
        let input = &self.pending[self.at..];
        let parsed = H::parse(input, &self.limits, self.to_head, &mut self.fields)
            .map_err(MessageError::Head)?;
        let Some(head) = parsed else {
            if !self.ended {
                return Ok(Step::NeedMore);
            }
            let nothing = input.is_empty()
                || (H::EMPTY_LINES_FIRST && input.iter().all(|&b| b == b'\r' || b == b'\n'));
            return Err(if nothing {
                MessageError::Closed
            } else {
                MessageError::HeadCut
            });
        };
        // The spans index `input`, so a copy of it from the same start keeps them valid once
        // `pending` moves on.
        self.head_bytes.clear();
        self.head_bytes.extend_from_slice(&input[..head.head_len()]);
        self.at += head.head_len();
        self.phase = match head.framing() {
            Framing::None => Phase::Done,
            Framing::Length(n) => Phase::Length { remaining: n },
            Framing::Close => Phase::Close,
            Framing::Chunked => Phase::Chunked(
                ChunkedDecoder::from_limits(&self.limits)
                    .lenient(head.lenient_chunks(&self.limits))
                    .max_payload(self.max_body),
            ),
        };
        self.head = Some(head);
        Ok(Step::Head)
    }

    /// Nothing is left to decode: more input is needed, or, when there will be none, the body
    /// was cut short.
    fn starved(&self, cut: MessageError) -> Result<Step, MessageError> {
        if self.ended {
            Err(cut)
        } else {
            Ok(Step::NeedMore)
        }
    }

    /// Lends out the next `len` undecoded bytes as payload.
    fn hand_out(&mut self, len: usize) -> Step {
        let from = self.at;
        self.at += len;
        self.payload += len as u64;
        Step::Pending { from, to: self.at }
    }
}

impl MessageDecoder<ResponseHead> {
    /// This decoder, for the answer to a HEAD request, which has no body whatever its head says
    /// (RFC 9110 §9.3.2, RFC 9112 §6.3 item 1).
    pub fn to_head_request(mut self) -> Self {
        self.to_head = true;
        self
    }
}

/// A read that failed: the transport, or the message.
#[derive(Debug)]
pub enum ReadError {
    /// Includes the read timeouts of the stream (`WouldBlock` or `TimedOut`), after which the
    /// reader may be asked again: no byte is lost.
    Io(io::Error),
    Message(MessageError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => e.fmt(f),
            ReadError::Message(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::Message(e) => Some(e),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<MessageError> for ReadError {
    fn from(e: MessageError) -> Self {
        ReadError::Message(e)
    }
}

/// A [`MessageDecoder`] fed from a blocking reader. Each method reads only as much as it needs,
/// so bytes past the message stay in the decoder for the next one.
#[derive(Debug)]
pub struct MessageReader<R, H> {
    io: R,
    decoder: MessageDecoder<H>,
    buf: Box<[u8]>,
}

impl<R: Read, H: MessageHead> MessageReader<R, H> {
    pub fn new(io: R, decoder: MessageDecoder<H>) -> Self {
        MessageReader {
            io,
            decoder,
            buf: vec![0; READ_BYTES].into_boxed_slice(),
        }
    }

    pub fn decoder(&self) -> &MessageDecoder<H> {
        &self.decoder
    }

    pub fn decoder_mut(&mut self) -> &mut MessageDecoder<H> {
        &mut self.decoder
    }

    pub fn io(&self) -> &R {
        &self.io
    }

    pub fn io_mut(&mut self) -> &mut R {
        &mut self.io
    }

    pub fn into_parts(self) -> (R, MessageDecoder<H>) {
        (self.io, self.decoder)
    }

    /// Reads until the head is complete, and returns it; at once if it has been read.
    pub fn read_head(&mut self) -> Result<H, ReadError> {
        loop {
            if let Some(head) = self.decoder.head() {
                return Ok(*head);
            }
            if matches!(self.decoder.next_event()?, Event::NeedMore) {
                self.fill()?;
            }
        }
    }

    /// Reads the rest of the body and returns its payload: at most the decoder's `max_body`
    /// bytes, which is what this may allocate.
    pub fn read_body(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        while !self.read_payload(&mut body)? {}
        Ok(body)
    }

    /// Appends to `out` the payload already received or, when there is none, what one read
    /// brings (possibly nothing, when it brought only framing); true once the body has ended.
    /// This is how a body that never ends is followed: a read timeout on the stream comes back
    /// as [`ReadError::Io`], and the next call carries on where this one stopped.
    pub fn read_payload(&mut self, out: &mut Vec<u8>) -> Result<bool, ReadError> {
        let before = out.len();
        if self.decoder.decode_payload(out)? {
            return Ok(true);
        }
        if out.len() > before {
            return Ok(false);
        }
        self.fill()?;
        Ok(self.decoder.decode_payload(out)?)
    }

    /// One read into the decoder; the end of the stream ends its input.
    fn fill(&mut self) -> Result<(), ReadError> {
        loop {
            match self.io.read(&mut self.buf) {
                Ok(0) => {
                    self.decoder.end_input();
                    return Ok(());
                }
                Ok(n) => {
                    self.decoder.feed(&self.buf[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Method;
    use MessageError::*;

    const MAX_BODY: u64 = 64;

    /// What a run made of its input: a line describing the head, the payload, whether the
    /// message ended, and the bytes left past it.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        head: String,
        body: Vec<u8>,
        ended: bool,
        leftover: Vec<u8>,
    }

    fn describe_request(d: &RequestDecoder) -> String {
        let h = d.head().expect("head");
        let method = String::from_utf8_lossy(d.bytes(h.method_span));
        let target = String::from_utf8_lossy(d.bytes(h.target));
        format!("{method} {target}")
    }

    fn describe_response(d: &ResponseDecoder) -> String {
        d.head().expect("head").status.to_string()
    }

    /// Feeds `parts` in order, taking every event each allows, then ends the input if `eof`.
    /// Parts after the end of the message are fed all the same and come back as leftover.
    fn run<H: MessageHead>(
        mut d: MessageDecoder<H>,
        parts: &[&[u8]],
        eof: bool,
        describe: fn(&MessageDecoder<H>) -> String,
    ) -> Result<Seen, MessageError> {
        let mut seen = Seen {
            head: String::new(),
            body: Vec::new(),
            ended: false,
            leftover: Vec::new(),
        };
        let drain = |d: &mut MessageDecoder<H>, seen: &mut Seen| -> Result<(), MessageError> {
            loop {
                match d.next_event()? {
                    Event::NeedMore => return Ok(()),
                    Event::Head => {
                        assert!(seen.head.is_empty(), "one head");
                        seen.head = describe(d);
                    }
                    Event::Data(bytes) => {
                        assert!(!bytes.is_empty(), "data events carry bytes");
                        assert!(!seen.head.is_empty(), "data after the head");
                        seen.body.extend_from_slice(bytes);
                    }
                    Event::End => {
                        seen.ended = true;
                        return Ok(());
                    }
                }
            }
        };
        for part in parts {
            d.feed(part);
            if !seen.ended {
                drain(&mut d, &mut seen)?;
            }
        }
        if eof {
            d.end_input();
            if !seen.ended {
                drain(&mut d, &mut seen)?;
            }
        }
        assert_eq!(seen.body.len() as u64, d.payload_len());
        seen.leftover = d.leftover().to_vec();
        Ok(seen)
    }

    /// `run` on `input` whole, split in two at every byte, and a byte at a time: the outcome
    /// must not depend on the split.
    fn every_split<H: MessageHead>(
        make: &dyn Fn() -> MessageDecoder<H>,
        input: &[u8],
        eof: bool,
        describe: fn(&MessageDecoder<H>) -> String,
        name: &str,
    ) -> Result<Seen, MessageError> {
        let whole = run(make(), &[input], eof, describe);
        for k in 0..=input.len() {
            let split = run(make(), &[&input[..k], &input[k..]], eof, describe);
            assert_eq!(split, whole, "{name}: split at {k}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            run(make(), &bytes, eof, describe),
            whole,
            "{name}: a byte at a time"
        );
        whole
    }

    fn seen(head: &str, body: &[u8], ended: bool, leftover: &[u8]) -> Seen {
        Seen {
            head: head.to_owned(),
            body: body.to_vec(),
            ended,
            leftover: leftover.to_vec(),
        }
    }

    fn admin_limits() -> Limits {
        Limits {
            max_head_bytes: 256,
            max_headers: 8,
            accept_bare_lf: true,
            ..Limits::default()
        }
    }

    #[test]
    fn requests() {
        type Case = (
            &'static str,
            &'static [u8],
            bool,
            Result<Seen, MessageError>,
        );
        let long_head = [
            &b"GET / HTTP/1.1\r\nHost: h\r\nX: "[..],
            &[b'a'; 300],
            b"\r\n\r\n",
        ]
        .concat();
        let long_head: &'static [u8] = Box::leak(long_head.into_boxed_slice());
        let table: &[Case] = &[
            (
                "no body, the next request left over",
                b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n",
                false,
                Ok(seen("GET /a", b"", true, b"GET /b HTTP/1.1\r\n")),
            ),
            (
                "content-length",
                b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloPUT",
                false,
                Ok(seen("POST /p", b"hello", true, b"PUT")),
            ),
            (
                "content-length zero",
                b"PUT /z HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
                false,
                Ok(seen("PUT /z", b"", true, b"")),
            ),
            (
                "content-length at the bound",
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 64\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123",
                false,
                Ok(seen(
                    "POST /",
                    b"0123456789012345678901234567890123456789012345678901234567890123",
                    true,
                    b"",
                )),
            ),
            (
                "chunked, extensions and trailers",
                b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nX-Sum: 1\r\n\r\nnext",
                false,
                Ok(seen("POST /c", b"hello!", true, b"next")),
            ),
            (
                "bare LF, accepted by these limits, in the head and the chunks",
                b"POST /l HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n2\nhi\n0\n\n",
                false,
                Ok(seen("POST /l", b"hi", true, b"")),
            ),
            (
                "empty lines before the request line are skipped",
                b"\r\n\r\nGET /e HTTP/1.1\r\nHost: h\r\n\r\n",
                false,
                Ok(seen("GET /e", b"", true, b"")),
            ),
            (
                "a head still arriving",
                b"GET /a HTTP/1.1\r\nHo",
                false,
                Ok(seen("", b"", false, b"GET /a HTTP/1.1\r\nHo")),
            ),
            (
                "a body still arriving",
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nabc",
                false,
                Ok(seen("POST /", b"abc", false, b"")),
            ),
            ("closed before a message", b"", true, Err(Closed)),
            ("closed after empty lines", b"\r\n\n", true, Err(Closed)),
            ("closed inside the head", b"GET / HTTP/1.1\r\n", true, Err(HeadCut)),
            (
                "closed inside a sized body",
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nabc",
                true,
                Err(BodyCut),
            ),
            (
                "closed inside a chunked body",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                true,
                Err(BodyCut),
            ),
            (
                "declared length past the bound",
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\nabc",
                false,
                Err(BodyTooLarge),
            ),
            (
                "chunk size past the bound",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n0123456789abcdef0123456789abcdef\r\n21\r\n",
                false,
                Err(BodyTooLarge),
            ),
            ("head past its bound", long_head, false, Err(Head(HeadError::HeadTooLarge))),
            (
                "no Host in HTTP/1.1 (RFC 9112 §3.2)",
                b"GET / HTTP/1.1\r\n\r\n",
                false,
                Err(Head(HeadError::Malformed)),
            ),
            (
                "too many fields",
                b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n\r\n",
                false,
                Err(Head(HeadError::TooManyHeaders)),
            ),
            ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n", false, Err(Head(HeadError::Malformed))),
            (
                "both framings",
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Err(Head(HeadError::Malformed)),
            ),
            (
                "bad chunk",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
                Err(Body(BodyError::BadChunk)),
            ),
            (
                "forbidden trailer",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 1\r\n\r\n",
                false,
                Err(Body(BodyError::ForbiddenTrailer)),
            ),
        ];
        let make = || RequestDecoder::new(admin_limits(), MAX_BODY);
        for (name, input, eof, want) in table {
            let got = every_split(&make, input, *eof, describe_request, name);
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn requests_refuse_bare_lf_by_default() {
        let make = || RequestDecoder::new(Limits::default(), MAX_BODY);
        let got = every_split(
            &make,
            b"GET / HTTP/1.1\nHost: h\n\n",
            false,
            describe_request,
            "bare lf",
        );
        assert_eq!(got, Err(Head(HeadError::Malformed)));
        // Nor in the chunk lines after a CRLF head.
        let got = every_split(
            &make,
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\nhi\n0\n\n",
            false,
            describe_request,
            "bare lf in chunks",
        );
        assert_eq!(got, Err(Body(BodyError::BadChunk)));
    }

    #[test]
    fn responses() {
        type Case = (
            &'static str,
            &'static [u8],
            bool,
            Result<Seen, MessageError>,
        );
        let table: &[Case] = &[
            (
                "content-length",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, extra",
                false,
                Ok(seen("200", b"hello", true, b", extra")),
            ),
            (
                "chunked, with the next response left over",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\nHTTP/1.1 204",
                false,
                Ok(seen("200", b"hello", true, b"HTTP/1.1 204")),
            ),
            (
                "chunked with bare LF, which responses may use",
                b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5;ext=1\nhello\n0\nTrailer-X: 1\n\n",
                false,
                Ok(seen("200", b"hello", true, b"")),
            ),
            (
                "until close",
                b"HTTP/1.1 200 OK\r\n\r\nhello",
                true,
                Ok(seen("200", b"hello", true, b"")),
            ),
            (
                "until close, still open",
                b"HTTP/1.1 200 OK\r\n\r\nhello",
                false,
                Ok(seen("200", b"hello", false, b"")),
            ),
            (
                "a coding other than chunked runs until close (RFC 9112 §6.3 item 4)",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
                true,
                Ok(seen("200", b"zz", true, b"")),
            ),
            (
                "no body on 204, whatever follows",
                b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n",
                false,
                Ok(seen("204", b"", true, b"HTTP/1.1 200 OK\r\n")),
            ),
            (
                "no body on 304 despite its length",
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false,
                Ok(seen("304", b"", true, b"")),
            ),
            (
                "an interim response is a message of its own",
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
                false,
                Ok(seen("100", b"", true, b"HTTP/1.1 200 OK\r\n")),
            ),
            (
                "a status line without a reason",
                b"HTTP/1.0 503\r\nContent-Length: 1\r\n\r\nx",
                false,
                Ok(seen("503", b"x", true, b"")),
            ),
            ("closed before a response", b"", true, Err(Closed)),
            (
                "an empty line first is an error, not nothing",
                b"\r\n",
                true,
                Err(Head(HeadError::Malformed)),
            ),
            ("closed inside the status line", b"HTTP/1.1 20", true, Err(HeadCut)),
            (
                "closed inside the body",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
                true,
                Err(BodyCut),
            ),
            (
                "until close, past the bound",
                b"HTTP/1.1 200 OK\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123!",
                true,
                Err(BodyTooLarge),
            ),
            ("not HTTP/1.x", b"HTTP/2 200\r\n\r\n", false, Err(Head(HeadError::Malformed))),
            ("garbage", b"SSH", false, Err(Head(HeadError::Malformed))),
            ("a two-digit status", b"HTTP/1.1 20 OK\r\n\r\n", false, Err(Head(HeadError::Malformed))),
            (
                "a bad length",
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                false,
                Err(Head(HeadError::Malformed)),
            ),
            (
                "a length too long for its chunk",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n",
                false,
                Err(Body(BodyError::BadChunk)),
            ),
        ];
        let make = || ResponseDecoder::new(Limits::default(), MAX_BODY);
        for (name, input, eof, want) in table {
            let got = every_split(&make, input, *eof, describe_response, name);
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn the_answer_to_head_has_no_body() {
        let make = || ResponseDecoder::new(Limits::default(), MAX_BODY).to_head_request();
        let got = every_split(
            &make,
            b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\nHTTP/1.1",
            false,
            describe_response,
            "head",
        );
        assert_eq!(got, Ok(seen("200", b"", true, b"HTTP/1.1")));
    }

    #[test]
    fn the_head_comes_before_a_refused_body() {
        let mut d = ResponseDecoder::new(Limits::default(), 4);
        d.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(d.next_event(), Ok(Event::Head));
        assert_eq!(d.head().map(|h| h.status), Some(200));
        assert_eq!(d.next_event(), Err(BodyTooLarge));
        assert_eq!(d.payload_len(), 0, "nothing of it handed out");
        // Failed for good, whatever comes.
        d.feed(b"more");
        d.end_input();
        assert_eq!(d.next_event(), Err(BodyTooLarge));
    }

    #[test]
    fn fields_by_name() {
        let mut d = RequestDecoder::new(Limits::default(), MAX_BODY);
        assert_eq!(d.fields("host").count(), 0, "no head yet");
        d.feed(b"GET /x HTTP/1.1\r\nHost: h\r\nX-API-KEY: one\r\nx-api-key:  two \r\nX-Other: 3\r\n\r\n");
        assert_eq!(d.next_event(), Ok(Event::Head));
        let keys: Vec<&[u8]> = d.fields("X-Api-Key").collect();
        assert_eq!(keys, [&b"one"[..], b"two"]);
        let h = *d.head().unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(d.bytes(h.target), b"/x");
        assert_eq!(d.next_event(), Ok(Event::End));
    }

    #[test]
    fn keep_alive_reads_message_after_message() {
        let wire: &[u8] = b"POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\none\
            POST /2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n\
            GET /3 HTTP/1.1\r\nHost: h\r\n\r\n";
        let want = [
            ("POST /1", &b"one"[..]),
            ("POST /2", b"two"),
            ("GET /3", b""),
        ];
        for k in 0..=wire.len() {
            let mut d = RequestDecoder::new(Limits::default(), MAX_BODY);
            let mut parts = [&wire[..k], &wire[k..]].into_iter();
            let mut got = Vec::new();
            let mut body = Vec::new();
            loop {
                match d.next_event().unwrap() {
                    Event::NeedMore => match parts.next() {
                        Some(p) => d.feed(p),
                        None => break,
                    },
                    Event::Head => {}
                    Event::Data(bytes) => body.extend_from_slice(bytes),
                    Event::End => {
                        got.push((describe_request(&d), std::mem::take(&mut body)));
                        assert!(d.next_message());
                    }
                }
            }
            let want: Vec<(String, Vec<u8>)> = want
                .iter()
                .map(|(h, b)| (h.to_string(), b.to_vec()))
                .collect();
            assert_eq!(got, want, "split at {k}");
            assert!(d.leftover().is_empty());
        }
        // Not before the message has ended.
        let mut d = RequestDecoder::new(Limits::default(), MAX_BODY);
        d.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\non");
        assert_eq!(d.next_event(), Ok(Event::Head));
        assert!(!d.next_message());
        assert_eq!(d.head().map(|h| h.method), Some(Method::Post));
    }

    /// An endless chunked response, as etcd's watch is: each chunk's payload is handed out as
    /// soon as it is fed, and lifting the bound lets the stream run past it.
    #[test]
    fn a_stream_is_handed_out_as_it_arrives() {
        let mut d = ResponseDecoder::new(Limits::default(), MAX_BODY);
        d.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(d.next_event(), Ok(Event::Head));
        d.set_max_body(u64::MAX);
        let mut total = 0;
        for i in 0..100u32 {
            let message = format!("{{\"n\":{i}}}\n");
            let wire = format!("{:x}\r\n{message}\r\n", message.len());
            // Split inside the chunk, so half of it comes now and the rest with the next feed.
            let (a, b) = wire.as_bytes().split_at(wire.len() / 2);
            let mut out = Vec::new();
            d.feed(a);
            assert_eq!(d.decode_payload(&mut out), Ok(false));
            d.feed(b);
            assert_eq!(d.decode_payload(&mut out), Ok(false));
            assert_eq!(out, message.as_bytes(), "message {i}");
            total += out.len() as u64;
        }
        assert!(total > MAX_BODY);
        assert_eq!(d.payload_len(), total);
        let mut out = Vec::new();
        d.feed(b"0\r\n\r\n");
        assert_eq!(d.decode_payload(&mut out), Ok(true));
        assert!(out.is_empty());
    }

    #[test]
    fn a_flood_is_refused_within_its_bounds() {
        // A head that never ends fails once max_head_bytes are in, and holds no more than that
        // and one feed meanwhile.
        let limits = Limits {
            max_head_bytes: 1024,
            ..Limits::default()
        };
        let mut d = ResponseDecoder::new(limits, MAX_BODY);
        d.feed(b"HTTP/1.1 200 OK\r\n");
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut fed = 0;
        let err = loop {
            match d.next_event() {
                Ok(Event::NeedMore) => {
                    assert!(d.pending.len() <= 1024 + line.len());
                    d.feed(line);
                    fed += 1;
                }
                other => break other,
            }
        };
        assert_eq!(err, Err(Head(HeadError::HeadTooLarge)));
        assert!(fed < 1024 / line.len() + 2, "{fed}");
        // A body runs through in pieces: the decoder keeps none of it once handed out.
        let mut d = ResponseDecoder::new(Limits::default(), u64::MAX);
        d.feed(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(d.next_event(), Ok(Event::Head));
        for _ in 0..1000 {
            d.feed(&[7; 4096]);
            assert!(matches!(d.next_event(), Ok(Event::Data(b)) if b.len() == 4096));
            assert!(d.pending.len() <= 4096);
        }
    }

    /// A reader that returns one scripted result per call.
    struct Script(std::collections::VecDeque<io::Result<Vec<u8>>>);

    impl Script {
        fn new(steps: Vec<io::Result<&[u8]>>) -> Script {
            Script(steps.into_iter().map(|s| s.map(<[u8]>::to_vec)).collect())
        }
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(bytes)) => {
                    assert!(bytes.len() <= buf.len());
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
            }
        }
    }

    fn timeout() -> io::Error {
        io::Error::from(io::ErrorKind::WouldBlock)
    }

    #[test]
    fn blocking_reads_survive_timeouts_and_interruptions() {
        let script = Script::new(vec![
            Ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"),
            Err(io::Error::from(io::ErrorKind::Interrupted)),
            Ok(b"\r\n4\r\nab"),
            Err(timeout()),
            Ok(b"cd\r\n"),
            Ok(b"2\r\n"),
            Err(timeout()),
            Ok(b"ef\r\n0\r\n\r\nleft"),
        ]);
        let mut r = MessageReader::new(script, ResponseDecoder::new(Limits::default(), MAX_BODY));
        assert_eq!(r.read_head().unwrap().status, 200);
        assert_eq!(r.read_head().unwrap().status, 200, "once read, at once");
        let mut out = Vec::new();
        // "4\r\nab" came with the head: handed out without a read.
        assert!(!r.read_payload(&mut out).unwrap());
        assert_eq!(out, b"ab");
        assert!(
            matches!(r.read_payload(&mut out), Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock)
        );
        assert!(!r.read_payload(&mut out).unwrap());
        assert_eq!(out, b"abcd");
        // A read of framing only brings no payload.
        assert!(!r.read_payload(&mut out).unwrap());
        assert_eq!(out, b"abcd");
        assert!(r.read_payload(&mut out).is_err());
        assert!(r.read_payload(&mut out).unwrap());
        assert_eq!(out, b"abcdef");
        assert!(r.read_payload(&mut out).unwrap(), "ended stays ended");
        let (_, d) = r.into_parts();
        assert_eq!(d.leftover(), b"left");
    }

    #[test]
    fn blocking_whole_bodies() {
        type Case = (&'static [u8], Result<(u16, &'static [u8]), MessageError>);
        let table: &[Case] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, extra", Ok((200, b"hello"))),
            (
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
                Ok((404, b"hello")),
            ),
            (b"HTTP/1.1 200 OK\r\n\r\nhello", Ok((200, b"hello"))),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", Err(BodyCut)),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\nhello", Err(BodyTooLarge)),
            (b"", Err(Closed)),
        ];
        for (wire, want) in table {
            // One byte per read, and all at once.
            for step in [1, wire.len().max(1)] {
                let script = Script::new(wire.chunks(step).map(Ok).collect());
                let mut r =
                    MessageReader::new(script, ResponseDecoder::new(Limits::default(), MAX_BODY));
                let got = r
                    .read_head()
                    .and_then(|h| Ok((h.status, r.read_body()?)))
                    .map_err(|e| match e {
                        ReadError::Message(m) => m,
                        ReadError::Io(e) => panic!("{e}"),
                    });
                let want = want.map(|(s, b)| (s, b.to_vec()));
                assert_eq!(got, want, "{} by {step}", String::from_utf8_lossy(wire));
            }
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        let table: &[(MessageError, &str)] = &[
            (Closed, "the connection closed before a message began"),
            (BodyCut, "the connection closed inside the body"),
            (Head(HeadError::HeadTooLarge), "head too large"),
            (Body(BodyError::BadChunk), "malformed chunked framing"),
            (BodyTooLarge, "body too large"),
        ];
        for (e, want) in table {
            assert_eq!(e.to_string(), *want);
            assert_eq!(ReadError::from(*e).to_string(), *want);
        }
        let io = ReadError::from(io::Error::other("boom"));
        assert_eq!(io.to_string(), "boom");
    }
}
