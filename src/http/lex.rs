//! The tokeniser under [`head`](super::head): splits a request line or status line and the field
//! lines after it into spans, in one pass over the bytes, and checks each byte against the grammar
//! of RFC 9112 §2-§5 as it goes.
//!
//! It accepts exactly what httparse's default (strict) configuration accepts, span for span and
//! error for error: only one SP between the parts of a start line, no whitespace before a colon,
//! no obs-fold, field values of HTAB, SP, VCHAR and obs-text, CRLF or LF line endings, too many
//! field lines refused once the first extra line is complete. The unit tests hold it to httparse
//! on generated inputs. It does not refuse a bare LF itself: it reports one in
//! [`Lexed::bare_lf`], so that the caller keeps the order in which its own checks answer (a head
//! whose target is too long is a 414 whether or not a line of it also ends in a bare LF).
//!
//! Why not httparse itself: for the short heads of API traffic its per-line costs dominate, and
//! the checks the caller had to make after it (bare LF, the reason's span) each took another pass.
//! Field values, where most of a head's bytes are, are scanned eight bytes at a time.
//!
//! What it produces, [`Span`] and [`Header`], is defined here, below every module that reads a
//! parsed head; [`head`](super::head) re-exports both, which is where the rest of the crate names
//! them.

/// A byte range in the buffer a head was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes this span covers. A span applied to a buffer it was not parsed from yields an
    /// empty slice rather than panicking, since a panic aborts the whole process.
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// A sub-range of this span, `from..to` relative to its start.
    pub(crate) fn sub(self, from: usize, to: usize) -> Span {
        Span {
            start: self.start + from as u32,
            end: self.start + to as u32,
        }
    }
}

/// One field line: name and value (value without leading or trailing whitespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Span,
    pub value: Span,
}

/// A head that is complete: where it ends, and whether a line in it ended in LF alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lexed<L> {
    pub line: L,
    /// Bytes up to and including the empty line that ends the head.
    pub head_len: usize,
    pub bare_lf: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestLine {
    pub method: Span,
    pub target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StatusLine {
    pub minor: u8,
    pub status: u16,
    /// From the byte after the SP that follows the code to the line's CR; empty at 12 when no
    /// SP follows the code.
    pub reason: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LexError {
    Malformed,
    /// A complete field line found no free slot.
    TooManyHeaders,
}

/// What the lexer makes of a buffer: a complete head, or `None` when it needs more bytes.
pub(crate) type Outcome<L> = Result<Option<Lexed<L>>, LexError>;

/// Tokenises a request head at the start of `buf`, skipping empty lines before the request line
/// (RFC 9112 §2.2). At most `slots` field lines go into `headers`, which is cleared first and
/// holds them only when the head is complete.
pub(crate) fn request(buf: &[u8], slots: usize, headers: &mut Vec<Header>) -> Outcome<RequestLine> {
    fields_if_complete(headers, |headers| request_fields(buf, slots, headers))
}

fn request_fields(buf: &[u8], slots: usize, headers: &mut Vec<Header>) -> Outcome<RequestLine> {
    let mut lx = Lexer::new(buf);
    loop {
        match buf.get(lx.at) {
            None => return Ok(None),
            Some(b'\r') | Some(b'\n') => {
                if !lx.eol()? {
                    return Ok(None);
                }
            }
            Some(_) => break,
        }
    }
    let method_start = lx.at;
    let Some(i) = token_then(buf, method_start, b' ')? else {
        return Ok(None);
    };
    let method = span(method_start, i);
    let target_start = i + 1;
    let end = target_end(buf, target_start);
    match buf.get(end) {
        None => return Ok(None),
        Some(b' ') if end > target_start => {}
        Some(_) => return Err(LexError::Malformed),
    }
    let target = &buf[target_start..end];
    // httparse hands the target back as a str, so bytes above 0x7F must be UTF-8.
    if !target.is_ascii() && std::str::from_utf8(target).is_err() {
        return Err(LexError::Malformed);
    }
    lx.at = end + 1;
    let Some(minor) = lx.version()? else {
        return Ok(None);
    };
    if !lx.eol()? {
        return Ok(None);
    }
    let line = RequestLine {
        method,
        target: span(target_start, end),
        minor,
    };
    lx.fields(slots, headers, line)
}

/// Tokenises a response head at the start of `buf`. Unlike a request, no empty line may come
/// first: that would mean the previous response ran longer than its framing said.
pub(crate) fn response(buf: &[u8], slots: usize, headers: &mut Vec<Header>) -> Outcome<StatusLine> {
    fields_if_complete(headers, |headers| response_fields(buf, slots, headers))
}

/// Runs `lex` on a cleared `headers` and leaves them there only if the head came out complete.
fn fields_if_complete<L>(
    headers: &mut Vec<Header>,
    lex: impl FnOnce(&mut Vec<Header>) -> Outcome<L>,
) -> Outcome<L> {
    headers.clear();
    let lexed = lex(headers);
    if !matches!(lexed, Ok(Some(_))) {
        headers.clear();
    }
    lexed
}

fn response_fields(buf: &[u8], slots: usize, headers: &mut Vec<Header>) -> Outcome<StatusLine> {
    let mut lx = Lexer::new(buf);
    match buf.first() {
        None => return Ok(None),
        Some(b'\r' | b'\n') => return Err(LexError::Malformed),
        Some(_) => {}
    }
    let Some(minor) = lx.version()? else {
        return Ok(None);
    };
    // "HTTP/1.x" SP 3DIGIT: bytes 8 to 11.
    let mut status = 0u16;
    for at in 8..12 {
        match buf.get(at) {
            None => return Ok(None),
            Some(b' ') if at == 8 => {}
            Some(&d) if at > 8 && d.is_ascii_digit() => status = status * 10 + u16::from(d - b'0'),
            Some(_) => return Err(LexError::Malformed),
        }
    }
    let reason = match buf.get(12) {
        None => return Ok(None),
        Some(b' ') => {
            let end = value_end(buf, 13);
            lx.at = end;
            span(13, end)
        }
        Some(b'\r' | b'\n') => {
            lx.at = 12;
            span(12, 12)
        }
        Some(_) => return Err(LexError::Malformed),
    };
    if !lx.eol()? {
        return Ok(None);
    }
    let line = StatusLine {
        minor,
        status,
        reason,
    };
    lx.fields(slots, headers, line)
}

struct Lexer<'a> {
    b: &'a [u8],
    at: usize,
    bare_lf: bool,
}

impl<'a> Lexer<'a> {
    fn new(b: &'a [u8]) -> Self {
        Lexer {
            b,
            at: 0,
            bare_lf: false,
        }
    }

    /// Consumes a line ending at `at`: Ok(false) when the buffer ends inside it.
    fn eol(&mut self) -> Result<bool, LexError> {
        match self.b.get(self.at) {
            None => Ok(false),
            Some(b'\n') => {
                self.bare_lf = true;
                self.at += 1;
                Ok(true)
            }
            Some(b'\r') => match self.b.get(self.at + 1) {
                None => Ok(false),
                Some(b'\n') => {
                    self.at += 2;
                    Ok(true)
                }
                Some(_) => Err(LexError::Malformed),
            },
            Some(_) => Err(LexError::Malformed),
        }
    }

    /// "HTTP/1.0" or "HTTP/1.1" at `at`, as its minor digit. A prefix of "HTTP/1." that the
    /// buffer cuts short is `None`; anything else is refused at once.
    fn version(&mut self) -> Result<Option<u8>, LexError> {
        let rest = &self.b[self.at..];
        match rest.get(..8) {
            Some(b"HTTP/1.1") => {
                self.at += 8;
                Ok(Some(1))
            }
            Some(b"HTTP/1.0") => {
                self.at += 8;
                Ok(Some(0))
            }
            Some(_) => Err(LexError::Malformed),
            None if b"HTTP/1.".starts_with(&rest[..rest.len().min(7)]) => Ok(None),
            None => Err(LexError::Malformed),
        }
    }

    /// The field lines from `at` to the empty line that ends the head.
    fn fields<L>(mut self, slots: usize, headers: &mut Vec<Header>, line: L) -> Outcome<L> {
        let b = self.b;
        loop {
            let start = self.at;
            match b.get(start) {
                None => return Ok(None),
                Some(b'\r' | b'\n') => {
                    if !self.eol()? {
                        return Ok(None);
                    }
                    return Ok(Some(Lexed {
                        line,
                        head_len: self.at,
                        bare_lf: self.bare_lf,
                    }));
                }
                Some(_) => {}
            }
            let Some(colon) = token_then(b, start, b':')? else {
                return Ok(None);
            };
            let name = span(start, colon);
            let mut i = colon + 1;
            while i < b.len() && matches!(b[i], b' ' | b'\t') {
                i += 1;
            }
            let value_start = i;
            let end = value_end(b, i);
            self.at = end;
            if !self.eol()? {
                return Ok(None);
            }
            if headers.len() >= slots {
                return Err(LexError::TooManyHeaders);
            }
            let mut trimmed = end;
            while trimmed > value_start && matches!(b[trimmed - 1], b' ' | b'\t') {
                trimmed -= 1;
            }
            headers.push(Header {
                name,
                value: span(value_start, trimmed),
            });
        }
    }
}

/// A method or field name: a non-empty run of tchar from `start`, ended by `delim`. The index of
/// the delimiter, or `None` when the buffer ends first.
#[inline(always)]
fn token_then(b: &[u8], start: usize, delim: u8) -> Result<Option<usize>, LexError> {
    let mut i = start;
    while i < b.len() && TCHAR[usize::from(b[i])] {
        i += 1;
    }
    match b.get(i) {
        None => Ok(None),
        Some(&d) if d == delim && i > start => Ok(Some(i)),
        Some(_) => Err(LexError::Malformed),
    }
}

fn span(start: usize, end: usize) -> Span {
    // Callers cap the buffer at u32::MAX bytes.
    Span {
        start: start as u32,
        end: end as u32,
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bytes below `n` (at most 0x80) in `w`, as their high bits. The lowest one marked is exact:
/// a false mark can only follow a true one, from the borrow it leaves, so `trailing_zeros` of the
/// result finds the first byte below `n`.
#[inline(always)]
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// Bytes equal to DEL (0x7F) in `w`, marked as in [`below`].
#[inline(always)]
fn dels(w: u64) -> u64 {
    below(w ^ (ONES * 0x7f), 1)
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The first index from `i` whose byte cannot be in a field value or reason phrase (anything but
/// HTAB, SP, VCHAR and obs-text: a control, DEL, or the CR or LF that ends the line), or
/// `b.len()`. Eight bytes at a time; a tab stops the word scan for one byte.
fn value_end(b: &[u8], mut i: usize) -> usize {
    while i + 8 <= b.len() {
        let w = word(b, i);
        let stops = below(w, 0x20) | dels(w);
        if stops == 0 {
            i += 8;
            continue;
        }
        let j = i + (stops.trailing_zeros() / 8) as usize;
        if b[j] != b'\t' {
            return j;
        }
        i = j + 1;
    }
    while i < b.len() && VALUE[usize::from(b[i])] {
        i += 1;
    }
    i
}

/// The first index from `i` whose byte cannot be in a request-target as httparse reads one (SP,
/// controls and DEL; bytes above 0x7F pass here and are the caller's to judge), or `b.len()`.
fn target_end(b: &[u8], mut i: usize) -> usize {
    while i + 8 <= b.len() {
        let w = word(b, i);
        let stops = below(w, 0x21) | dels(w);
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i] > b' ' && b[i] != 0x7f {
        i += 1;
    }
    i
}

/// tchar, RFC 9110 §5.6.2: what a method or field name is made of.
static TCHAR: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

/// A byte class as a lookup table, built at compile time: ASCII letters and digits, and `extra`.
pub(crate) const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// HTAB, SP, VCHAR and obs-text: what a field value or reason phrase may hold (RFC 9110 §5.5).
static VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i == 0x09 || (i >= 0x20 && i != 0x7f);
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use std::mem::MaybeUninit;

    /// What httparse made of a head, and the fields of a complete one.
    type Oracle<L> = (Outcome<L>, Vec<Header>);

    /// httparse's reading of a head, in this module's terms: `line` builds the start line's
    /// spans from a complete parse, with `at` turning a slice of `buf` into its span.
    fn oracle<L>(
        buf: &[u8],
        parsed: httparse::Result<usize>,
        fields: &[httparse::Header],
        line: impl FnOnce(&dyn Fn(&[u8]) -> Span) -> L,
    ) -> Oracle<L> {
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - buf.as_ptr() as usize;
            span(start, start + s.len())
        };
        match parsed {
            Ok(httparse::Status::Complete(n)) => {
                let headers = fields
                    .iter()
                    .map(|h| Header {
                        name: at(h.name.as_bytes()),
                        value: at(h.value),
                    })
                    .collect();
                let lexed = Lexed {
                    line: line(&at),
                    head_len: n,
                    bare_lf: has_bare_lf(&buf[..n]),
                };
                (Ok(Some(lexed)), headers)
            }
            Ok(httparse::Status::Partial) => (Ok(None), Vec::new()),
            Err(httparse::Error::TooManyHeaders) => (Err(LexError::TooManyHeaders), Vec::new()),
            Err(_) => (Err(LexError::Malformed), Vec::new()),
        }
    }

    fn httparse_request(buf: &[u8], slots: usize) -> Oracle<RequestLine> {
        let mut scratch = vec![MaybeUninit::<httparse::Header>::uninit(); slots];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut scratch,
        );
        oracle(buf, parsed, req.headers, |at| RequestLine {
            method: at(req.method.unwrap().as_bytes()),
            target: at(req.path.unwrap().as_bytes()),
            minor: req.version.unwrap(),
        })
    }

    fn httparse_response(buf: &[u8], slots: usize) -> Oracle<StatusLine> {
        // head.rs refused these before calling httparse, which would skip them.
        if matches!(buf.first(), Some(b'\r' | b'\n')) {
            return (Err(LexError::Malformed), Vec::new());
        }
        let mut scratch = vec![MaybeUninit::<httparse::Header>::uninit(); slots];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut scratch,
        );
        oracle(buf, parsed, resp.headers, |_| StatusLine {
            minor: resp.version.unwrap(),
            status: resp.code.unwrap(),
            // httparse gives no span for a reason holding obs-text, so it is found here.
            reason: if buf[12] == b' ' {
                let end = buf[13..].iter().position(|&b| b == b'\r' || b == b'\n');
                span(13, 13 + end.unwrap())
            } else {
                span(12, 12)
            },
        })
    }

    fn has_bare_lf(head: &[u8]) -> bool {
        head.iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    }

    /// Pieces that heads are made of, including the ones parsers disagree on.
    const PIECES: &[&[u8]] = &[
        b"GET",
        b"POST",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/1.",
        b"HTTP/2.0",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 404",
        b" ",
        b"  ",
        b"\t",
        b"\r\n",
        b"\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"/",
        b"/a?b=c",
        b"http://h/x",
        b"*",
        b"Host",
        b"Content-Length",
        b"X-Y",
        b":",
        b": ",
        b"value",
        b"a b",
        b"0123456789abcdef",
        b"\x00",
        b"\x01",
        b"\x7f",
        b"\x80",
        b"\xc3\xa9",
        b"\xff",
        b"#",
        b"@",
        b"(",
        b",",
        b";",
        b"200",
        b"20",
        b"2x0",
    ];

    fn pick<'a>(rng: &mut StdRng, from: &[&'a [u8]]) -> &'a [u8] {
        from[rng.random_range(0..from.len())]
    }

    /// A head built line by line from pieces, mostly well-formed, then noise: `start` is the
    /// first line's parts (each picked from its list, SP between them).
    fn random_input(rng: &mut StdRng, start: &[&[&[u8]]]) -> Vec<u8> {
        const EOL: &[&[u8]] = &[
            b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"",
        ];
        const NAMES: &[&[u8]] = &[
            b"Host",
            b"Content-Length",
            b"X-Y",
            b"a",
            b"Accept",
            b"ETag",
            b"",
            b"A B",
            b"\x80",
        ];
        const VALUES: &[&[u8]] = &[
            b"value",
            b"a b",
            b",",
            b"chunked",
            b"0",
            b"\t",
            b"\x80",
            b"\xc3\xa9",
            b"\x00",
            b"\x7f",
        ];
        const OWS: &[&[u8]] = &[b"", b" ", b"  ", b"\t", b" \t "];
        let mut buf = Vec::new();
        if rng.random_bool(0.8) {
            for (i, part) in start.iter().enumerate() {
                if i > 0 {
                    buf.push(b' ');
                }
                let twice = i == 1 && rng.random_bool(0.2);
                for _ in 0..1 + usize::from(twice) {
                    buf.extend_from_slice(pick(rng, part));
                }
            }
            buf.extend_from_slice(pick(rng, EOL));
            for _ in 0..rng.random_range(0..5) {
                buf.extend_from_slice(pick(rng, NAMES));
                buf.push(b':');
                buf.extend_from_slice(pick(rng, OWS));
                for _ in 0..rng.random_range(0..3) {
                    buf.extend_from_slice(pick(rng, VALUES));
                }
                buf.extend_from_slice(pick(rng, OWS));
                buf.extend_from_slice(pick(rng, EOL));
            }
        }
        if rng.random_bool(0.3) {
            for _ in 0..rng.random_range(1..4) {
                buf.extend_from_slice(pick(rng, PIECES));
            }
        }
        if rng.random_bool(0.8) {
            buf.extend_from_slice(b"\r\n");
        }
        buf
    }

    const METHODS: &[&[u8]] = &[b"GET", b"POST", b"M-SEARCH", b"G(T", b"", b"\x80"];
    const TARGETS: &[&[u8]] = &[
        b"/",
        b"/a?b=c",
        b"*",
        b"http://h:80/x",
        b"#",
        b"\x80",
        b"\xc3\xa9",
        b"\xff",
        b"\x7f",
        b"0123456789abcdef",
    ];
    const VERSIONS: &[&[u8]] = &[
        b"HTTP/1.1",
        b"HTTP/1.1",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/1.",
        b"HTTP/2.0",
        b"http/1.1",
    ];
    const CODES: &[&[u8]] = &[
        b"200", b"200", b"204", b"101", b"999", b"20", b"2x0", b"1000",
    ];
    const REASONS: &[&[u8]] = &[b"OK", b"", b"No Content", b"\t", b"\xe9", b"\x7f", b"\x00"];

    /// Reads 150,000 generated heads, then every prefix of `whole`, with `ours` and with
    /// httparse (`theirs`): the same outcome each time and, when complete, the same spans and
    /// bare-LF verdict. Returns how many generated heads were complete.
    fn compare<L: Copy + PartialEq + std::fmt::Debug>(
        seed: u64,
        start: &[&[&[u8]]],
        whole: &[u8],
        ours: fn(&[u8], usize, &mut Vec<Header>) -> Outcome<L>,
        theirs: fn(&[u8], usize) -> Oracle<L>,
    ) -> usize {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut complete = 0;
        for round in 0..150_000 {
            let buf = random_input(&mut rng, start);
            let slots = if round % 7 == 0 { 2 } else { 16 };
            let mut headers = Vec::new();
            let got = ours(&buf, slots, &mut headers);
            let (want, want_headers) = theirs(&buf, slots);
            let shown = String::from_utf8_lossy(&buf);
            assert_eq!(got, want, "{shown:?}");
            if matches!(got, Ok(Some(_))) {
                assert_eq!(headers, want_headers, "{shown:?}");
                complete += 1;
            }
        }
        for cut in 0..=whole.len() {
            let got = ours(&whole[..cut], 16, &mut Vec::new());
            assert_eq!(got, theirs(&whole[..cut], 16).0, "cut at {cut}");
        }
        complete
    }

    #[test]
    fn requests_read_as_httparse_reads_them() {
        let whole = b"\r\nPATCH /x/y?z=1 HTTP/1.0\r\nHost: a.b:80\r\nX-A:\t v \t\r\nE:\r\n\r\n";
        let start = &[METHODS, TARGETS, VERSIONS];
        let complete = compare(0x6865_6172_7468, start, whole, request, httparse_request);
        // Enough of the inputs got through for the comparison to mean something.
        assert!(complete > 2_500, "only {complete} complete requests");
    }

    #[test]
    fn responses_read_as_httparse_reads_them() {
        let whole = b"HTTP/1.1 204 No \t Content\xe9\r\nServer: x\r\nA: b  c \r\n\r\n";
        let start = &[VERSIONS, CODES, REASONS];
        let complete = compare(
            0x7570_7374_7265_616d,
            start,
            whole,
            response,
            httparse_response,
        );
        assert!(complete > 2_500, "only {complete} complete responses");
    }

    #[test]
    fn word_scans_stop_at_the_first_byte_outside_the_class() {
        // Every position of a stop byte, in buffers long enough for the word loop, with a byte
        // that would borrow (0x00) or a high byte just before it.
        for len in 8..40 {
            for at in 0..len {
                for stop in [0u8, 0x08, 0x0a, 0x0d, 0x1f, 0x7f] {
                    let mut v = vec![b'a'; len];
                    v[at] = stop;
                    if at > 0 {
                        v[at - 1] = 0xff;
                    }
                    assert_eq!(value_end(&v, 0), at, "{v:?}");
                    assert_eq!(target_end(&v, 0), at, "{v:?}");
                }
                let mut v = vec![b'a'; len];
                v[at] = b'\t';
                assert_eq!(value_end(&v, 0), len, "a tab is part of a value");
                v[at] = b' ';
                assert_eq!(target_end(&v, 0), at, "a space ends a target");
            }
        }
    }
}
