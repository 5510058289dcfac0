//! Message framing shared by the test client and the mock upstream.
//!
//! `Wire` owns one socket and the bytes read from it but not yet consumed, so a reader can take a
//! head, then a body, then the next pipelined head without losing anything read ahead. It is
//! deliberately strict (CRLF only, exact chunk syntax) so that sloppy framing from hearth shows up
//! as a test failure instead of being forgiven. Every read is bounded by the socket's read
//! timeout; nothing here loops without either progress or an error.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Largest head either side accepts; hearth's own limit is smaller, so hitting this means a
/// framing bug (e.g. a body read as a head).
pub const MAX_HEAD_BYTES: usize = 1 << 20;
/// Longest chunk-size or trailer line accepted (RFC 9112 section 7.1).
const MAX_LINE_BYTES: usize = 16 * 1024;
const READ_SLICE: usize = 64 * 1024;

/// How a message body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (HEAD answers, 1xx, 204, 304, requests without CL/TE).
    Empty,
    Length(usize),
    Chunked,
    /// Read until the peer closes (responses only).
    Close,
}

/// A decoded chunked body plus what came with it.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// The body exactly as it was on the wire, chunk framing included.
    pub raw: Vec<u8>,
    /// Chunks of data it came in (the last, empty chunk not counted).
    pub chunks: usize,
}

pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Bytes read from the socket but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Whether the peer has already been seen closing its side.
    pub fn saw_eof(&self) -> bool {
        self.eof
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        (&self.stream).write_all(bytes)?;
        (&self.stream).flush()
    }

    /// Reads once from the socket into the buffer; `Ok(0)` means end of stream.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut tmp = vec![0u8; READ_SLICE];
        let n = loop {
            match (&self.stream).read(&mut tmp) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Takes one head, terminator included. `Ok(None)` when the peer closed cleanly before
    /// sending any byte of it (the normal end of a persistent connection).
    pub fn read_head(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0;
        loop {
            if let Some(pos) = find(&self.buf[searched..], b"\r\n\r\n") {
                let end = searched + pos + 4;
                return Ok(Some(self.buf.drain(..end).collect()));
            }
            // Resume the search where a terminator could still start, so a head trickling in a
            // byte at a time is not rescanned from the start on every read.
            searched = self.buf.len().saturating_sub(3);
            if self.buf.len() > max {
                return Err(invalid(format!("head longer than {max} bytes")));
            }
            if self.fill()? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "peer closed in the middle of a head: {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ))
                };
            }
        }
    }

    pub fn take_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("peer closed after {} of {n} expected bytes", self.buf.len()),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Takes one CRLF-terminated line and returns it without the CRLF.
    fn take_line(&mut self) -> io::Result<Vec<u8>> {
        let mut searched = 0;
        loop {
            if let Some(pos) = find(&self.buf[searched..], b"\r\n") {
                let end = searched + pos;
                let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                return Ok(line);
            }
            searched = self.buf.len().saturating_sub(1);
            if self.buf.len() > MAX_LINE_BYTES {
                return Err(invalid("line too long in chunked body".into()));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed inside a chunked body",
                ));
            }
        }
    }

    /// Decodes a chunked body (RFC 9112 section 7.1): chunk-size [;ext] CRLF data CRLF ...,
    /// then a last-chunk of size zero, trailer fields and an empty line.
    pub fn read_chunked(&mut self) -> io::Result<Chunked> {
        let mut out = Chunked::default();
        loop {
            let line = self.take_line()?;
            out.raw.extend_from_slice(&line);
            out.raw.extend_from_slice(b"\r\n");
            let size_text = line.split(|&b| b == b';').next().unwrap_or(&[]);
            let size_text = std::str::from_utf8(size_text)
                .map_err(|_| invalid("chunk size is not ASCII".into()))?
                .trim_end_matches([' ', '\t']);
            if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!("bad chunk size line {:?}", size_text)));
            }
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid(format!("chunk size {size_text:?} overflows")))?;
            if size == 0 {
                break;
            }
            let data = self.take_exact(size)?;
            out.raw.extend_from_slice(&data);
            out.body.extend_from_slice(&data);
            out.chunks += 1;
            let crlf = self.take_exact(2)?;
            if crlf != b"\r\n" {
                return Err(invalid(format!(
                    "chunk data not followed by CRLF: {crlf:?}"
                )));
            }
            out.raw.extend_from_slice(b"\r\n");
        }
        loop {
            let line = self.take_line()?;
            out.raw.extend_from_slice(&line);
            out.raw.extend_from_slice(b"\r\n");
            if line.is_empty() {
                return Ok(out);
            }
            let text = String::from_utf8_lossy(&line);
            let Some((name, value)) = text.split_once(':') else {
                return Err(invalid(format!("bad trailer line {text:?}")));
            };
            out.trailers
                .push((name.trim().to_string(), value.trim().to_string()));
        }
    }

    /// Takes everything until the peer closes.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(self.take_pending())
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Copies httparse's borrowed headers into owned pairs; values that are not UTF-8 are kept
/// lossily because the tests only ever compare ASCII values.
pub fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// First value of a header, by case-insensitive name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of a header, in order.
pub fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Whether a comma-separated header (Connection, Transfer-Encoding) lists `token`, across all
/// its field lines (RFC 9110 section 5.3 lets a list be split over several lines).
pub fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header_all(headers, name)
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Framing of a message from its headers alone (RFC 9112 section 6.3 rules 3 to 7). The caller
/// handles the cases decided by method or status before calling this.
pub fn framing_from_headers(
    headers: &[(String, String)],
    is_response: bool,
) -> io::Result<Framing> {
    let codings: Vec<String> = header_all(headers, "transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(last) = codings.last() {
        return if last == "chunked" {
            Ok(Framing::Chunked)
        } else if is_response {
            Ok(Framing::Close)
        } else {
            Err(invalid(format!("request with final coding {last:?}")))
        };
    }
    let lengths = header_all(headers, "content-length");
    if let Some(first) = lengths.first() {
        if lengths.iter().any(|l| l.trim() != first.trim()) {
            return Err(invalid(format!("conflicting Content-Length {lengths:?}")));
        }
        let n: usize = first
            .trim()
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {first:?}")))?;
        return Ok(Framing::Length(n));
    }
    Ok(if is_response {
        Framing::Close
    } else {
        Framing::Empty
    })
}
