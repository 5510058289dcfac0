//! Chunked body framing (RFC 9112 §7.1), sans-io.
//!
//! [`ChunkedDecoder`] owns the question "where does this chunked body end, and which of its bytes
//! are payload", which decides where the next message on the connection begins. It is a byte-wise
//! state machine over the framing and a bulk skip over chunk data, so input may be split anywhere
//! and nothing is buffered: the decoder is a few words of `Copy` state, and the caller forwards or
//! drops bytes as it likes. It is strict for the same reason the head parser is: bare CR or LF,
//! signs, spaces around the size, oversized sizes and malformed extensions or trailers all end the
//! body with an error instead of a guess another parser might not share. Once it has failed it
//! keeps failing with the same error.
//!
//! Two relaxations are opt-in, per body: [`ChunkedDecoder::lenient`] takes a lone LF as a line
//! end (RFC 9112 §2.2; for upstreams that send them), and [`ChunkedDecoder::max_payload`] refuses
//! a chunk whose declared size would take the payload past a limit as soon as its size line is
//! read, before any of its data. Chunk sizes at or above 2^63 are refused always, as
//! Content-Length is: a peer that reads them into a signed integer would frame differently.
//! [`reframe`] decodes a body and writes it out again canonically (one chunk per call, CRLF line
//! ends, no extensions), which is how a body of many tiny chunks, or one with bare LF, is relayed.
//!
//! Trailer fields are forwarded as received (the decoder never rewrites), so the decoder refuses
//! any trailer field that hearth interprets or writes when it sees it in a head: framing
//! (Content-Length, Transfer-Encoding), routing (Host), hop-by-hop fields, X-Forwarded-*, Expect
//! and Idempotency-Key, and their underscore aliases. RFC 9110 §6.5.1 forbids most of these in
//! trailers, and an upstream that merges trailers into the header section (some do) would
//! otherwise take them as if hearth had checked them. The refusal comes at the colon, so a
//! caller that forwards what [`ChunkedDecoder::decode`] accepted has sent at most part of the
//! name, never a field line.

use super::field::{alias_of, field_name, is_tchar, FieldName, LONGEST_KNOWN_NAME};
use super::limits::{Limits, MAX_BODY_LENGTH};

pub use super::limits::{MAX_EXT_BYTES, MAX_TRAILER_BYTES};

/// Longest chunk size accepted, in hex digits: 16 fit a u64, so a valid size can never overflow.
const MAX_SIZE_DIGITS: u8 = 16;
/// Largest chunk size accepted, 2^63 - 1, as for Content-Length.
const MAX_CHUNK_SIZE: u64 = MAX_BODY_LENGTH;

/// The last chunk with an empty trailer section, for re-framing a body as chunked.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The bytes are not a chunked body.
    BadChunk,
    /// A chunk line's extensions exceed the decoder's bound.
    ExtTooLong,
    /// The trailer section exceeds the decoder's bound.
    TrailerTooLarge,
    /// A trailer field names a field hearth interprets or writes in a head (see the module docs).
    ForbiddenTrailer,
    /// A chunk's declared size takes the payload past [`ChunkedDecoder::max_payload`].
    TooLarge,
}

/// What [`ChunkedDecoder::decode_pieces`] reports of the input, in order: ranges are into the
/// input of that call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Payload bytes.
    Data(usize, usize),
    /// The last chunk's size line ended: trailer fields, if any, follow.
    LastChunk,
    /// Bytes of a trailer field line, name through value, without its line end; a line cut by
    /// the end of the input continues in the next call.
    Trailer(usize, usize),
    /// A trailer field line ended.
    TrailerEnd,
    /// The blank line that ends the body.
    End,
}

/// What one call to [`ChunkedDecoder::decode`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input that belong to this body: all of it unless the body ended inside it.
    pub consumed: usize,
    /// The last chunk and the trailer section have been read.
    pub done: bool,
}

/// Where in the grammar of RFC 9112 §7.1 the decoder stands, named for what it expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size, `digits` read so far.
    Size {
        digits: u8,
    },
    /// Whitespace after the size or an extension value; only `;` may follow (BWS, §7.1.1).
    BwsBeforeSemi,
    /// After `;`: optional whitespace, then an extension name.
    ExtNameStart,
    ExtName,
    /// Whitespace after an extension name; `=` or `;` must follow.
    BwsAfterName,
    /// After `=`: optional whitespace, then a token or quoted string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    ExtAfterQuoted,
    /// The LF ending a chunk line.
    SizeLf,
    /// Chunk data still to come.
    Data {
        remaining: u64,
    },
    /// The CRLF that must follow chunk data.
    DataCr,
    DataLf,
    /// Start of a trailer field line, or the CR of the blank line ending the body.
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed(BodyError),
}

impl State {
    fn in_trailers(self) -> bool {
        use State::*;
        matches!(
            self,
            TrailerLineStart | TrailerName | TrailerValue | TrailerLf | FinalLf | Done
        )
    }

    fn is_extension(self) -> bool {
        use State::*;
        matches!(
            self,
            BwsBeforeSemi
                | ExtNameStart
                | ExtName
                | BwsAfterName
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedEscape
                | ExtAfterQuoted
        )
    }
}

/// Decoder for one chunked body; make a new one per body.
#[derive(Clone, Copy, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk whose line is being read.
    size: u64,
    ext_bytes: usize,
    trailer_bytes: usize,
    payload: u64,
    max_ext_bytes: usize,
    max_trailer_bytes: usize,
    /// The name of the trailer field being read, as far as it could name a known field.
    trailer_name: [u8; LONGEST_KNOWN_NAME],
    /// Bytes of that name, up to `LONGEST_KNOWN_NAME + 1`, which means too long to be known.
    trailer_name_len: u8,
    /// Take a lone LF as a line end.
    lenient: bool,
    /// Most payload bytes the body may declare; 0 for no limit.
    max_payload: u64,
}

impl ChunkedDecoder {
    pub fn new(max_ext_bytes: usize, max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            payload: 0,
            max_ext_bytes,
            max_trailer_bytes,
            trailer_name: [0; LONGEST_KNOWN_NAME],
            trailer_name_len: 0,
            lenient: false,
            max_payload: 0,
        }
    }

    /// This decoder, also taking a lone LF as a line end (RFC 9112 §2.2). A lone CR stays an
    /// error.
    pub fn lenient(mut self, on: bool) -> Self {
        self.lenient = on;
        self
    }

    /// This decoder, refusing with [`BodyError::TooLarge`] a chunk size line that takes the
    /// declared payload past `max` bytes (0: no limit).
    pub fn max_payload(mut self, max: u64) -> Self {
        self.max_payload = max;
        self
    }

    /// A decoder bounded by `limits.max_ext_bytes` and `limits.max_trailer_bytes`.
    pub fn from_limits(limits: &Limits) -> Self {
        ChunkedDecoder::new(limits.max_ext_bytes, limits.max_trailer_bytes)
    }

    /// Scans `input`, the next bytes of the body, validating its framing. Calls
    /// `on_data(start, end)` for each run of payload within `input[..consumed]`. State carries
    /// over between calls, so the caller need not keep any bytes.
    pub fn decode(
        &mut self,
        input: &[u8],
        on_data: &mut dyn FnMut(usize, usize),
    ) -> Result<Decoded, BodyError> {
        self.decode_pieces(input, &mut |p| {
            if let Piece::Data(s, e) = p {
                on_data(s, e);
            }
        })
    }

    /// As [`decode`](Self::decode), reporting the body's structure as well as its payload (see
    /// [`Piece`]), for writing the body out again.
    pub fn decode_pieces(
        &mut self,
        input: &[u8],
        on: &mut dyn FnMut(Piece),
    ) -> Result<Decoded, BodyError> {
        let mut at = 0;
        // Where the run of trailer line bytes being read started in this input.
        let mut run: Option<usize> = None;
        while at < input.len() {
            match self.state {
                State::Data { remaining } => {
                    let available = (input.len() - at) as u64;
                    // Fits in usize: it is at most `available`, which came from a usize.
                    let take = remaining.min(available) as usize;
                    on(Piece::Data(at, at + take));
                    at += take;
                    self.payload += take as u64;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining: left }
                    };
                }
                State::Done => break,
                State::Failed(e) => return Err(e),
                before => {
                    let b = input[at];
                    at += 1;
                    if let Err(e) = self.step(b) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                    let after = self.state;
                    if before.in_trailers() || after.in_trailers() {
                        self.report_trailer_byte(before, after, at - 1, &mut run, on);
                    }
                }
            }
        }
        if let Some(start) = run {
            on(Piece::Trailer(start, at));
        }
        match self.state {
            State::Failed(e) => Err(e),
            state => Ok(Decoded {
                consumed: at,
                done: state == State::Done,
            }),
        }
    }

    /// Says what the framing byte at `i`, which moved the decoder from `before` to `after`, was
    /// in the trailer section: the end of the last chunk's line, part of a field line, a field
    /// line's end, or the end of the body.
    fn report_trailer_byte(
        &self,
        before: State,
        after: State,
        i: usize,
        run: &mut Option<usize>,
        on: &mut dyn FnMut(Piece),
    ) {
        use State::*;
        match (before, after) {
            (_, TrailerLineStart) if !before.in_trailers() => on(Piece::LastChunk),
            (TrailerLineStart | TrailerName | TrailerValue, TrailerName | TrailerValue) => {
                run.get_or_insert(i);
            }
            // CR, or with `lenient` a lone LF, after a value.
            (TrailerValue, TrailerLf | TrailerLineStart) => {
                if let Some(start) = run.take() {
                    on(Piece::Trailer(start, i));
                }
                on(Piece::TrailerEnd);
            }
            (_, Done) => on(Piece::End),
            _ => {}
        }
    }

    /// Payload bytes seen so far, for body size limits.
    pub fn payload_len(&self) -> u64 {
        self.payload
    }

    /// The last chunk has been read and the trailer section has begun or ended.
    pub fn in_trailers(&self) -> bool {
        self.state.in_trailers()
    }

    /// The body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// A chunk size line ended: where the decoder goes next.
    fn size_line_done(&mut self) -> Result<State, BodyError> {
        self.ext_bytes = 0;
        if self.size == 0 {
            return Ok(State::TrailerLineStart);
        }
        if self.max_payload > 0 && self.size > self.max_payload.saturating_sub(self.payload) {
            return Err(BodyError::TooLarge);
        }
        Ok(State::Data {
            remaining: self.size,
        })
    }

    /// Advances over one framing byte (anything but chunk data).
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        use State::*;
        // Trailer bytes are counted as they are read, extension bytes as they are accepted into
        // an extension state (everything after the size digits up to the CR), so neither a long
        // trailer nor a long run of BWS can hold the decoder for free.
        if self.in_trailers() {
            self.trailer_bytes += 1;
            if self.trailer_bytes > self.max_trailer_bytes {
                return Err(BodyError::TrailerTooLarge);
            }
        }
        let ws = b == b' ' || b == b'\t';
        let next = match (self.state, b) {
            // §7.1: chunk-size = 1*HEXDIG, no sign, no leading whitespace.
            (Size { digits }, _) if b.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return Err(BodyError::BadChunk);
                }
                // Cannot overflow: at most 16 hex digits, checked above.
                self.size = (self.size << 4) | u64::from(hex_value(b));
                if self.size > MAX_CHUNK_SIZE {
                    return Err(BodyError::BadChunk);
                }
                Size { digits: digits + 1 }
            }
            (Size { digits: 0 }, _) => return Err(BodyError::BadChunk),
            (Size { .. }, b';') => ExtNameStart,
            (Size { .. }, _) if ws => BwsBeforeSemi,
            (Size { .. }, b'\r') => SizeLf,
            (Size { .. } | ExtName | ExtToken | ExtAfterQuoted, b'\n') if self.lenient => {
                self.size_line_done()?
            }
            // §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).
            (BwsBeforeSemi, _) if ws => BwsBeforeSemi,
            (BwsBeforeSemi, b';') => ExtNameStart,
            (ExtNameStart, _) if ws => ExtNameStart,
            (ExtNameStart, _) if is_tchar(b) => ExtName,
            (ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, b'=') => ExtValueStart,
            (ExtName, b';') => ExtNameStart,
            (ExtName, b'\r') => SizeLf,
            (ExtName, _) if ws => BwsAfterName,
            (BwsAfterName, _) if ws => BwsAfterName,
            (BwsAfterName, b'=') => ExtValueStart,
            (BwsAfterName, b';') => ExtNameStart,
            (ExtValueStart, _) if ws => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart, _) if is_tchar(b) => ExtToken,
            (ExtToken, _) if is_tchar(b) => ExtToken,
            (ExtToken, b';') => ExtNameStart,
            (ExtToken, b'\r') => SizeLf,
            (ExtToken, _) if ws => BwsBeforeSemi,
            // RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE.
            (ExtQuoted, b'"') => ExtAfterQuoted,
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted, _) if is_field_vchar(b) || ws => ExtQuoted,
            (ExtQuotedEscape, _) if is_field_vchar(b) || ws => ExtQuoted,
            (ExtAfterQuoted, b';') => ExtNameStart,
            (ExtAfterQuoted, b'\r') => SizeLf,
            (ExtAfterQuoted, _) if ws => BwsBeforeSemi,
            (SizeLf, b'\n') => self.size_line_done()?,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.size = 0;
                Size { digits: 0 }
            }
            (DataCr, b'\n') if self.lenient => {
                self.size = 0;
                Size { digits: 0 }
            }
            // §7.1.2: trailer-section = *( field-line CRLF ), field lines as in a head, so no
            // obs-fold (a line may not start with whitespace) and no space before the colon.
            (TrailerLineStart, b'\r') => FinalLf,
            (TrailerLineStart, b'\n') if self.lenient => Done,
            (TrailerLineStart, _) if is_tchar(b) => {
                self.trailer_name_len = 0;
                self.push_name_byte(b);
                TrailerName
            }
            (TrailerName, _) if is_tchar(b) => {
                self.push_name_byte(b);
                TrailerName
            }
            (TrailerName, b':') => {
                if self.trailer_names_known_field() {
                    return Err(BodyError::ForbiddenTrailer);
                }
                TrailerValue
            }
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, b'\n') if self.lenient => TrailerLineStart,
            (TrailerValue, _) if is_field_vchar(b) || ws => TrailerValue,
            (TrailerLf, b'\n') => TrailerLineStart,
            (FinalLf, b'\n') => Done,
            _ => return Err(BodyError::BadChunk),
        };
        if next.is_extension() {
            self.ext_bytes += 1;
            if self.ext_bytes > self.max_ext_bytes {
                return Err(BodyError::ExtTooLong);
            }
        }
        self.state = next;
        Ok(())
    }
}

impl ChunkedDecoder {
    fn push_name_byte(&mut self, b: u8) {
        let len = usize::from(self.trailer_name_len);
        if let Some(slot) = self.trailer_name.get_mut(len) {
            *slot = b;
        }
        // Stops one past the array, which is enough to say "longer than any known name".
        if len <= LONGEST_KNOWN_NAME {
            self.trailer_name_len += 1;
        }
    }

    fn trailer_names_known_field(&self) -> bool {
        let len = usize::from(self.trailer_name_len);
        let Some(name) = self.trailer_name.get(..len) else {
            return false; // Longer than any known name.
        };
        field_name(name) != FieldName::Other || alias_of(name) != FieldName::Other
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// VCHAR or obs-text (RFC 9110 §5.5): what a field value may hold besides SP and HTAB.
fn is_field_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Room [`reframe`] keeps for a chunk-size line before it knows the size: 16 hex digits and CRLF.
const CHUNK_HEAD_ROOM: usize = 18;

/// Most bytes [`reframe`] may add to the input it is given: a chunk-size line, the CRLF after the
/// data, and the CR of the last chunk's line.
pub const REFRAME_SLACK: usize = CHUNK_HEAD_ROOM + 3;

/// Decodes the next bytes of a chunked body with `dec` and appends them to `out` framed afresh:
/// all the payload of this call as one chunk, then, where the body ends in `input`, the last
/// chunk, the trailer field lines (each ending in CRLF) and the final CRLF. Chunk extensions are
/// dropped (RFC 9112 §7.1.1: a recipient ignores the ones it does not know).
///
/// A body that arrives as many small chunks thus leaves in as many chunks as it took reads, and
/// the upstream parses a buffer's worth of payload as one; a body with bare LF leaves with CRLF.
/// Output is at most `input.len() + REFRAME_SLACK` bytes from a strict decoder; a lenient one
/// adds one byte for each lone LF it reads in the trailer section as well.
/// On error `out` is left as it was.
pub fn reframe(
    dec: &mut ChunkedDecoder,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<Decoded, BodyError> {
    let was = out.len();
    // A chunk is opened only while the body is still in its data: the size is written into the
    // room once the call's payload is known.
    let mut open = (!dec.in_trailers()).then(|| {
        out.extend_from_slice(&[0; CHUNK_HEAD_ROOM]);
        was
    });
    let r = dec.decode_pieces(input, &mut |p| match p {
        Piece::Data(s, e) => out.extend_from_slice(&input[s..e]),
        Piece::LastChunk => {
            if let Some(at) = open.take() {
                close_chunk(out, at);
            }
            out.extend_from_slice(b"0\r\n");
        }
        Piece::Trailer(s, e) => out.extend_from_slice(&input[s..e]),
        Piece::TrailerEnd | Piece::End => out.extend_from_slice(b"\r\n"),
    });
    if r.is_err() {
        out.truncate(was);
        return r;
    }
    if let Some(at) = open {
        close_chunk(out, at);
    }
    r
}

/// Ends the chunk whose size line room starts at `at`: writes the size of the data after the
/// room into it and closes the gap, or, with no data, takes the room away (an empty chunk would
/// end the body).
fn close_chunk(out: &mut Vec<u8>, at: usize) {
    let data = at + CHUNK_HEAD_ROOM;
    let len = out.len() - data;
    if len == 0 {
        out.truncate(at);
        return;
    }
    let mut digits = [0u8; CHUNK_HEAD_ROOM];
    let n = chunk_head(len as u64, &mut digits);
    out[at..at + n].copy_from_slice(&digits[..n]);
    out.copy_within(data.., at + n);
    out.truncate(at + n + len);
    out.extend_from_slice(b"\r\n");
}

/// Writes `{len:x}\r\n` at the start of `to`; returns its length.
fn chunk_head(len: u64, to: &mut [u8; CHUNK_HEAD_ROOM]) -> usize {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let k = digits.len() - i;
    to[..k].copy_from_slice(&digits[i..]);
    to[k..k + 2].copy_from_slice(b"\r\n");
    k + 2
}

/// Appends a chunk-size line, `{len:x}\r\n`, for re-framing a body as chunked; the chunk data and
/// its CRLF follow, and [`LAST_CHUNK`] ends the body.
pub fn write_chunk_head(len: u64, out: &mut Vec<u8>) {
    let mut line = [0u8; CHUNK_HEAD_ROOM];
    let n = chunk_head(len, &mut line);
    out.extend_from_slice(&line[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` in order, as a connection would, and returns the payload, the bytes
    /// consumed in total and whether the body ended.
    fn run(
        pieces: &[&[u8]],
        max_ext: usize,
        max_trailer: usize,
    ) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut decoder = ChunkedDecoder::new(max_ext, max_trailer);
        let mut payload = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let d = decoder.decode(piece, &mut |s, e| payload.extend_from_slice(&piece[s..e]))?;
            assert!(d.consumed <= piece.len());
            consumed += d.consumed;
            assert_eq!(decoder.payload_len(), payload.len() as u64);
            if d.done {
                assert!(decoder.in_trailers());
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

    /// Checks that `input` gives `want` whole, split in two at every byte boundary, and fed one
    /// byte at a time.
    fn check_splits(
        input: &[u8],
        max_ext: usize,
        max_trailer: usize,
        want: Result<(Vec<u8>, usize, bool), BodyError>,
    ) {
        let name = String::from_utf8_lossy(input);
        assert_eq!(run(&[input], max_ext, max_trailer), want, "whole: {name:?}");
        for k in 0..=input.len() {
            let got = run(&[&input[..k], &input[k..]], max_ext, max_trailer);
            assert_eq!(got, want, "split at {k}: {name:?}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            run(&bytes, max_ext, max_trailer),
            want,
            "bytewise: {name:?}"
        );
    }

    #[test]
    fn valid_bodies() {
        // (body, payload); every body is followed by the start of the next message.
        let table: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"0\r\n\r\n", b""),
            (b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n", b"abcdef"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"0005\r\nhello\r\n0000\r\n\r\n", b"hello"),
            (b"0000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
            (b"5;a=b;c\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5 ; a = b ; c\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                b"5;a=\"q \\\"x\\\" ;\"\r\nhello\r\n0;last\r\n\r\n",
                b"hello",
            ),
            (b"5;a=\"v\" ;b\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r"),
            (
                b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nY:\r\nZ: a b\t\xc3\xa9\r\n\r\n",
                b"abc",
            ),
        ];
        for (body, payload) in table {
            let input = [*body, b"GET / HTTP/1.1\r\n"].concat();
            check_splits(
                &input,
                MAX_EXT_BYTES,
                MAX_TRAILER_BYTES,
                Ok((payload.to_vec(), body.len(), true)),
            );
        }
    }

    #[test]
    fn invalid_bodies() {
        use BodyError::*;
        let table: &[(&str, &[u8], BodyError)] = &[
            ("empty size", b"\r\n", BadChunk),
            ("minus", b"-5\r\nhello\r\n", BadChunk),
            ("plus", b"+5\r\nhello\r\n", BadChunk),
            ("0x prefix", b"0x5\r\nhello\r\n", BadChunk),
            ("leading space", b" 5\r\nhello\r\n", BadChunk),
            ("trailing space", b"5 \r\nhello\r\n", BadChunk),
            ("trailing tab", b"5\t\r\nhello\r\n", BadChunk),
            ("17 digits", b"00000000000000005\r\nhello\r\n", BadChunk),
            ("overflow", b"10000000000000000\r\n", BadChunk),
            // A signed 64-bit reader would wrap these.
            ("2^63", b"8000000000000000\r\n", BadChunk),
            ("u64 max", b"ffffffffffffffff\r\n", BadChunk),
            ("non-hex", b"5g\r\nhello\r\n", BadChunk),
            ("bare lf after size", b"5\nhello\r\n0\r\n\r\n", BadChunk),
            ("bare cr after size", b"5\rhello\r\n0\r\n\r\n", BadChunk),
            ("data too long", b"5\r\nhelloX\r\n0\r\n\r\n", BadChunk),
            ("bare lf after data", b"5\r\nhello\n0\r\n\r\n", BadChunk),
            ("bare cr after data", b"5\r\nhello\r0\r\n\r\n", BadChunk),
            ("no crlf after data", b"5\r\nhello0\r\n\r\n", BadChunk),
            ("empty ext name", b"5;\r\nhello\r\n", BadChunk),
            ("ext starts with =", b"5;=x\r\nhello\r\n", BadChunk),
            ("empty ext value", b"5;a=\r\nhello\r\n", BadChunk),
            ("space inside ext name", b"5;a b\r\nhello\r\n", BadChunk),
            ("space inside ext value", b"5;a=b c\r\nhello\r\n", BadChunk),
            ("trailing space after ext", b"5;a=b \r\nhello\r\n", BadChunk),
            ("unterminated quote", b"5;a=\"x\r\nhello\r\n", BadChunk),
            ("ctl in quote", b"5;a=\"x\x01\"\r\nhello\r\n", BadChunk),
            ("text after quote", b"5;a=\"x\"y\r\nhello\r\n", BadChunk),
            ("lf in ext", b"5;a\nhello\r\n", BadChunk),
            ("bare lf ends body", b"0\r\n\n", BadChunk),
            ("bare cr ends body", b"0\r\n\rX", BadChunk),
            ("bare lf after last chunk", b"0\n\r\n", BadChunk),
            ("trailer obs-fold", b"0\r\nX: a\r\n b\r\n\r\n", BadChunk),
            ("trailer leading space", b"0\r\n X: a\r\n\r\n", BadChunk),
            (
                "trailer space before colon",
                b"0\r\nX : a\r\n\r\n",
                BadChunk,
            ),
            ("trailer without colon", b"0\r\nX\r\n\r\n", BadChunk),
            ("trailer nul", b"0\r\nX: a\0\r\n\r\n", BadChunk),
            ("trailer del", b"0\r\nX: \x7f\r\n\r\n", BadChunk),
            ("trailer bare lf", b"0\r\nX: a\n\r\n", BadChunk),
            ("trailer bare cr", b"0\r\nX: a\rb\r\n\r\n", BadChunk),
            ("trailer non-token name", b"0\r\nX@: a\r\n\r\n", BadChunk),
            (
                "trailer non-ascii name",
                b"0\r\nX\xc3\xa9: a\r\n\r\n",
                BadChunk,
            ),
            ("trailer empty name", b"0\r\n: a\r\n\r\n", BadChunk),
            ("trailer ctl in value", b"0\r\nX: \x01\r\n\r\n", BadChunk),
            // §7.1: after the size only an extension or CRLF may follow.
            ("size then garbage", b"5x\r\nhello\r\n", BadChunk),
            ("size then comma", b"5,6\r\nhello\r\n", BadChunk),
            ("size then nul", b"5\0\r\nhello\r\n", BadChunk),
            ("size underscore", b"1_0\r\n", BadChunk),
            ("ext name non-token", b"5;a@b\r\nhello\r\n", BadChunk),
            ("ext non-ascii", b"5;\xc3\xa9\r\nhello\r\n", BadChunk),
            ("ext nul", b"5;a=\0\r\nhello\r\n", BadChunk),
            ("ext bare cr", b"5;a\rb\r\nhello\r\n", BadChunk),
            ("ext del in quote", b"5;a=\"\x7f\"\r\nhello\r\n", BadChunk),
            ("ext two values", b"5;a=b=c\r\nhello\r\n", BadChunk),
            ("last chunk bare cr", b"0\r\r\n\r\n", BadChunk),
            ("empty size after data", b"1\r\nx\r\n\r\n", BadChunk),
        ];
        for (name, input, want) in table {
            let got = run(&[input], MAX_EXT_BYTES, MAX_TRAILER_BYTES);
            assert_eq!(got, Err(*want), "{name}");
            check_splits(input, MAX_EXT_BYTES, MAX_TRAILER_BYTES, Err(*want));
        }
    }

    #[test]
    fn forbidden_trailers() {
        // Each name is refused as a trailer field, in any case and as an underscore alias.
        let names: &[&[u8]] = &[
            b"Content-Length",
            b"content-length",
            b"Content_Length",
            b"Transfer-Encoding",
            b"TRANSFER_ENCODING",
            b"Host",
            b"host",
            b"Connection",
            b"Keep-Alive",
            b"Keep_Alive",
            b"Proxy-Connection",
            b"TE",
            b"Trailer",
            b"Upgrade",
            b"Expect",
            b"Idempotency-Key",
            b"X-Forwarded-For",
            b"x_forwarded_for",
            b"X-Forwarded-Proto",
            b"X-Forwarded-Host",
        ];
        for name in names {
            for body in [
                [&b"0\r\n"[..], name, b": 5\r\n\r\n"].concat(),
                [&b"0\r\nX-Sum: 1\r\n"[..], name, b":5\r\n\r\n"].concat(),
                [&b"3\r\nabc\r\n0\r\n"[..], name, b":\r\n\r\n"].concat(),
            ] {
                check_splits(
                    &body,
                    MAX_EXT_BYTES,
                    MAX_TRAILER_BYTES,
                    Err(BodyError::ForbiddenTrailer),
                );
            }
        }
        // The refusal comes at the colon: the whole name may have been accepted (and forwarded)
        // but never a field line.
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        let r = d.decode(b"0\r\nContent-Length", &mut |_, _| {});
        assert_eq!(
            r,
            Ok(Decoded {
                consumed: 17,
                done: false
            })
        );
        assert_eq!(
            d.decode(b": 5\r\n\r\n", &mut |_, _| {}),
            Err(BodyError::ForbiddenTrailer)
        );
    }

    #[test]
    fn permitted_trailers() {
        // Names that share a prefix, a length or a spelling with a forbidden one.
        let names: &[&[u8]] = &[
            b"Hosts",
            b"Hos",
            b"X-Host",
            b"Content-Lengths",
            b"Content-Length-X",
            b"Content-Length-Is-Long-Enough",
            b"Transfer-Encodings",
            b"X-Transfer-Encoding",
            b"Content-Type",
            b"Content.Length",
            b"Server-Timing",
            b"Digest",
            b"X-Checksum",
            b"TE_",
            b"Expects",
            b"X_Api_Key",
        ];
        for name in names {
            let body = [&b"2\r\nhi\r\n0\r\n"[..], name, b": 1\r\n\r\n"].concat();
            check_splits(
                &body,
                MAX_EXT_BYTES,
                MAX_TRAILER_BYTES,
                Ok((b"hi".to_vec(), body.len(), true)),
            );
        }
    }

    #[test]
    fn decoder_from_limits() {
        let limits = Limits {
            max_ext_bytes: 8,
            max_trailer_bytes: 8,
            ..Limits::default()
        };
        // (input, outcome): the bounds are exactly the ones given, and no others.
        let table: &[(&[u8], Result<bool, BodyError>)] = &[
            (b"1;a=bcdef\r\nx\r\n0\r\nX: 1\r\n\r\n", Ok(true)),
            (b"1;a=bcdefg\r\nx\r\n", Err(BodyError::ExtTooLong)),
            (b"0\r\nX: 12\r\n\r\n", Err(BodyError::TrailerTooLarge)),
        ];
        for (input, want) in table {
            let mut d = ChunkedDecoder::from_limits(&limits);
            let got = d.decode(input, &mut |_, _| {}).map(|r| r.done);
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(input));
        }
        // The default bound: ";a=" and 4094 bytes of value is one byte over.
        let mut d = ChunkedDecoder::from_limits(&Limits::default());
        let long_ext = [&b"1;a="[..], &[b'b'; MAX_EXT_BYTES - 2][..], b"\r\n"].concat();
        assert_eq!(
            d.decode(&long_ext, &mut |_, _| {}),
            Err(BodyError::ExtTooLong)
        );
    }

    #[test]
    fn extension_limit() {
        // Extension bytes are everything between the size and the CR: ";a=bcdef" is 8.
        let ok = b"5;a=bcdef\r\nhello\r\n0;a=bcdef\r\n\r\n";
        check_splits(
            ok,
            8,
            MAX_TRAILER_BYTES,
            Ok((b"hello".to_vec(), ok.len(), true)),
        );
        check_splits(
            b"5;a=bcdefg\r\nhello\r\n0\r\n\r\n",
            8,
            MAX_TRAILER_BYTES,
            Err(BodyError::ExtTooLong),
        );
        // The bound is per chunk line, not per body.
        let many = b"1;aaaaaaa\r\nx\r\n1;aaaaaaa\r\ny\r\n0\r\n\r\n";
        check_splits(
            many,
            8,
            MAX_TRAILER_BYTES,
            Ok((b"xy".to_vec(), many.len(), true)),
        );
        // Whitespace counts too, so BWS cannot be used to stall the decoder for free.
        let spaces = [&b"5"[..], &[b' '; 9][..], b";a\r\n"].concat();
        check_splits(&spaces, 8, MAX_TRAILER_BYTES, Err(BodyError::ExtTooLong));
    }

    #[test]
    fn trailer_limit() {
        // The trailer section counts from the first trailer byte to the final LF: "X: 1\r\n\r\n" is 8.
        let ok = b"0\r\nX: 1\r\n\r\n";
        check_splits(ok, MAX_EXT_BYTES, 8, Ok((Vec::new(), ok.len(), true)));
        check_splits(
            b"0\r\nX: 12\r\n\r\n",
            MAX_EXT_BYTES,
            8,
            Err(BodyError::TrailerTooLarge),
        );
    }

    #[test]
    fn stays_failed_and_stays_done() {
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        assert_eq!(d.decode(b"z", &mut |_, _| {}), Err(BodyError::BadChunk));
        assert_eq!(
            d.decode(b"0\r\n\r\n", &mut |_, _| {}),
            Err(BodyError::BadChunk)
        );
        assert_eq!(d.decode(b"", &mut |_, _| {}), Err(BodyError::BadChunk));

        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        let end = Decoded {
            consumed: 5,
            done: true,
        };
        assert_eq!(d.decode(b"0\r\n\r\nmore", &mut |_, _| {}), Ok(end));
        assert_eq!(
            d.decode(b"more", &mut |_, _| panic!("no payload after the end")),
            Ok(Decoded {
                consumed: 0,
                done: true
            })
        );
    }

    #[test]
    fn large_chunk_streams_without_buffering() {
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        let r = d.decode(b"7fffffffffffffff\r\n", &mut |_, _| {});
        assert_eq!(
            r,
            Ok(Decoded {
                consumed: 18,
                done: false
            })
        );
        let block = [7u8; 4096];
        let mut seen = 0;
        for _ in 0..4 {
            let r = d.decode(&block, &mut |s, e| seen += e - s).unwrap();
            assert_eq!(r.consumed, block.len());
        }
        assert_eq!(seen, 4 * 4096);
        assert_eq!(d.payload_len(), 4 * 4096);
        assert!(!d.in_trailers());
    }

    #[test]
    fn lenient_takes_lone_lf_as_a_line_end() {
        let table: &[(&[u8], &[u8])] = &[
            (b"5\nhello\n0\n\n", b"hello"),
            (b"5;ext\nhello\r\n0\n\r\n", b"hello"),
            (b"5;a=b\nhello\n0;a=\"q\"\nX: 1\nY: 2\r\n\n", b"hello"),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        ];
        for (body, payload) in table {
            let input = [*body, b"GET / HTTP/1.1\r\n"].concat();
            for k in 0..=input.len() {
                let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES).lenient(true);
                let mut got = Vec::new();
                let mut consumed = 0;
                for part in [&input[..k], &input[k..]] {
                    let r = d
                        .decode(part, &mut |a, b| got.extend_from_slice(&part[a..b]))
                        .unwrap();
                    consumed += r.consumed;
                    if r.done {
                        break;
                    }
                }
                assert_eq!(got, *payload, "split at {k}");
                assert_eq!(consumed, body.len(), "split at {k}");
                assert!(d.is_done());
            }
        }
        // A lone CR is still an error, lenient or not.
        for bad in [
            &b"5\rhello\r\n"[..],
            b"5\r\nhello\r0\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ] {
            let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES).lenient(true);
            assert_eq!(d.decode(bad, &mut |_, _| {}), Err(BodyError::BadChunk));
        }
    }

    #[test]
    fn max_payload_refuses_at_the_size_line() {
        // 16 bytes allowed: a chunk declaring more fails before any of its data is seen.
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES).max_payload(16);
        assert_eq!(
            d.decode(b"fffffffffffffff\r\n", &mut |_, _| panic!("no data")),
            Err(BodyError::TooLarge)
        );
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES).max_payload(16);
        let mut seen = 0;
        let r = d.decode(b"a\r\n0123456789\r\n6\r\n012345\r\n", &mut |a, b| {
            seen += b - a
        });
        assert_eq!(r.map(|d| d.done), Ok(false));
        assert_eq!(seen, 16);
        assert_eq!(
            d.decode(b"1\r\n", &mut |_, _| panic!("no data")),
            Err(BodyError::TooLarge)
        );
        // Exactly at the limit passes, and the last chunk always does.
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES).max_payload(5);
        assert_eq!(
            d.decode(b"5\r\nhello\r\n0\r\n\r\n", &mut |_, _| {})
                .map(|d| d.done),
            Ok(true)
        );
    }

    /// Re-frames `input` split at `cuts`, and checks the result reads back strictly as the same
    /// payload and trailers, framed canonically. Returns the re-framed bytes.
    fn reframed(input: &[u8], cuts: &[usize], lenient: bool) -> Vec<u8> {
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES).lenient(lenient);
        let mut out = b"kept".to_vec();
        let mut from = 0;
        for &to in cuts.iter().chain([&input.len()]) {
            let part = &input[from..to];
            let before = out.len();
            let r = reframe(&mut d, part, &mut out).expect("reframes");
            if !lenient {
                assert!(out.len() - before <= part.len() + REFRAME_SLACK, "slack");
            }
            if r.done {
                break;
            }
            assert_eq!(r.consumed, part.len());
            from = to;
        }
        assert!(d.is_done(), "body ended");
        assert_eq!(&out[..4], b"kept", "appends");
        out.split_off(4)
    }

    #[test]
    fn reframe_writes_one_chunk_per_call_and_keeps_trailers() {
        // A thousand one-byte chunks in one call: one chunk out.
        let mut tiny = Vec::new();
        for i in 0..1000u32 {
            tiny.extend_from_slice(b"1\r\n");
            tiny.push(b'a' + (i % 26) as u8);
            tiny.extend_from_slice(b"\r\n");
        }
        tiny.extend_from_slice(b"0\r\nX-Sum: 7\r\n\r\n");
        let payload: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let want = [&b"3e8\r\n"[..], &payload, b"\r\n0\r\nX-Sum: 7\r\n\r\n"].concat();
        assert_eq!(reframed(&tiny, &[], false), want);
        // Cut anywhere, the same body comes out, however it is split into chunks.
        for k in (0..tiny.len()).step_by(7) {
            let out = reframed(&tiny, &[k], false);
            let (got, n, done) = run(&[&out], MAX_EXT_BYTES, MAX_TRAILER_BYTES).unwrap();
            assert_eq!(
                (got, n, done),
                (payload.clone(), out.len(), true),
                "cut at {k}"
            );
            assert!(out.ends_with(b"0\r\nX-Sum: 7\r\n\r\n"), "cut at {k}");
        }
        // Bare LF and extensions in, canonical CRLF framing out; the trailers byte for byte.
        let legacy = b"5;name=v\nhello\n3\nabc\n0\nX: 1\nY:  two words\n\n";
        let want = b"8\r\nhelloabc\r\n0\r\nX: 1\r\nY:  two words\r\n\r\n";
        assert_eq!(reframed(legacy, &[], true), want);
        for k in 0..=legacy.len() {
            let out = reframed(legacy, &[k], true);
            let (got, n, done) = run(&[&out], MAX_EXT_BYTES, MAX_TRAILER_BYTES).unwrap();
            assert_eq!(
                (&got[..], n, done),
                (&b"helloabc"[..], out.len(), true),
                "cut at {k}"
            );
            assert!(
                out.ends_with(b"\r\n0\r\nX: 1\r\nY:  two words\r\n\r\n"),
                "cut at {k}"
            );
        }
        // Bytes after the body are not taken.
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        let mut out = Vec::new();
        let r = reframe(&mut d, b"2\r\nhi\r\n0\r\n\r\nGET /", &mut out).unwrap();
        assert_eq!((r.consumed, r.done), (12, true));
        assert_eq!(out, b"2\r\nhi\r\n0\r\n\r\n");
        // An empty body, and a call that carries only framing, write no empty chunk.
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        let mut out = Vec::new();
        reframe(&mut d, b"5\r\n", &mut out).unwrap();
        assert!(out.is_empty());
        reframe(&mut d, b"hello\r\n0\r\n\r\n", &mut out).unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
        // A failure leaves the output as it was.
        let mut d = ChunkedDecoder::new(MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        let mut out = b"x".to_vec();
        assert_eq!(
            reframe(&mut d, b"2\r\nhiX", &mut out),
            Err(BodyError::BadChunk)
        );
        assert_eq!(out, b"x");
    }

    #[test]
    fn chunk_heads() {
        let table: &[(u64, &[u8])] = &[
            (0, b"0\r\n"),
            (5, b"5\r\n"),
            (255, b"ff\r\n"),
            (4096, b"1000\r\n"),
            (u64::MAX, b"ffffffffffffffff\r\n"),
        ];
        let mut out = Vec::new();
        for (len, want) in table {
            out.clear();
            write_chunk_head(*len, &mut out);
            assert_eq!(out, *want, "{len}");
        }
        // What the helpers write, the decoder reads.
        out.clear();
        write_chunk_head(5, &mut out);
        out.extend_from_slice(b"hello\r\n");
        out.extend_from_slice(LAST_CHUNK);
        check_splits(
            &out,
            MAX_EXT_BYTES,
            MAX_TRAILER_BYTES,
            Ok((b"hello".to_vec(), out.len(), true)),
        );
    }
}
