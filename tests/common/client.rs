//! A raw HTTP/1.1 test client: it writes exactly the bytes a test gives it and parses what comes
//! back strictly, one response at a time, so pipelined responses are read in sequence.
//!
//! Every socket read is bounded by a read timeout (`DEFAULT_TIMEOUT` unless changed), so a
//! missing response fails the test within seconds instead of hanging the suite. The `read_*`
//! methods panic with a message saying what was expected; the `try_*` forms return the error for
//! tests that expect a failure.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::wire::{self, Framing, Wire, MAX_HEAD_BYTES};

/// Long enough for a debug build of hearth on a loaded 2-core machine, short enough that a
/// missing answer fails fast.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const HEADER_SLOTS: usize = 256;

/// One parsed response. `body` is decoded (chunk framing removed); `raw` is every byte of the
/// response as received, head included.
#[derive(Debug, Clone)]
pub struct Response {
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub framing: Framing,
    pub raw: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        wire::header_all(&self.headers, name)
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        wire::has_token(&self.headers, name, token)
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        wire::header(&self.trailers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn head_text(&self) -> String {
        let end = wire::find(&self.raw, b"\r\n\r\n").map_or(self.raw.len(), |p| p + 4);
        String::from_utf8_lossy(&self.raw[..end]).into_owned()
    }
}

pub struct Client {
    wire: Wire,
    timeout: Duration,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("client: connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
        stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            wire: Wire::new(stream),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Changes the per-read timeout used from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.apply_read_timeout(timeout);
    }

    fn apply_read_timeout(&self, timeout: Duration) {
        // A zero timeout would mean "block forever" to std; the harness never wants that.
        let t = Some(timeout.max(Duration::from_millis(1)));
        self.wire
            .stream()
            .set_read_timeout(t)
            .expect("client: set_read_timeout on an open socket");
    }

    pub fn stream(&self) -> &TcpStream {
        self.wire.stream()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.wire
            .stream()
            .local_addr()
            .expect("client: local_addr of a connected socket")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("client: send of {} bytes failed: {e}", bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.write_all(bytes)
    }

    /// Writes one byte per write call with `gap` between them, so the peer sees every possible
    /// split point of the message.
    pub fn send_bytewise(&mut self, bytes: &[u8], gap: Duration) {
        for (i, b) in bytes.iter().enumerate() {
            self.wire
                .write_all(std::slice::from_ref(b))
                .unwrap_or_else(|e| panic!("client: bytewise send failed at byte {i}: {e}"));
            thread::sleep(gap);
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.wire.stream().shutdown(Shutdown::Write);
    }

    /// Reads one response to a request that was not HEAD.
    pub fn read_response(&mut self) -> Response {
        let timeout = self.timeout;
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("client: no valid response: {}", explain(&e, timeout)))
    }

    /// Reads one response to a HEAD request (never has a body, RFC 9110 section 9.3.2).
    pub fn read_head_response(&mut self) -> Response {
        let timeout = self.timeout;
        self.try_read_response(true).unwrap_or_else(|e| {
            panic!(
                "client: no valid response to HEAD: {}",
                explain(&e, timeout)
            )
        })
    }

    /// Reads one response; 1xx answers are returned on their own like any other response, so
    /// a test sees `100 Continue` and `101 Switching Protocols` explicitly.
    pub fn try_read_response(&mut self, to_head: bool) -> io::Result<Response> {
        let head = self.wire.read_head(MAX_HEAD_BYTES)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => unreachable!("read_head returned a terminated head"),
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "unparsable response head ({e}): {:?}",
                        String::from_utf8_lossy(&head)
                    ),
                ))
            }
        }
        // httparse fills these three for every complete parse.
        let version = parsed.version.unwrap_or(1);
        let status = parsed.code.unwrap_or(0);
        let reason = parsed.reason.unwrap_or("").to_string();
        let headers = wire::owned_headers(parsed.headers);
        // RFC 9112 section 6.3 rules 1 and 2: these never carry a body, whatever the headers say.
        let framing = if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::Empty
        } else {
            wire::framing_from_headers(&headers, true)?
        };
        let mut raw = head;
        let (body, trailers) = match framing {
            Framing::Empty => (Vec::new(), Vec::new()),
            Framing::Length(n) => {
                let b = self.wire.take_exact(n)?;
                raw.extend_from_slice(&b);
                (b, Vec::new())
            }
            Framing::Chunked => {
                let c = self.wire.read_chunked()?;
                raw.extend_from_slice(&c.raw);
                (c.body, c.trailers)
            }
            Framing::Close => {
                let b = self.wire.read_to_close()?;
                raw.extend_from_slice(&b);
                (b, Vec::new())
            }
        };
        Ok(Response {
            version,
            status,
            reason,
            headers,
            body,
            trailers,
            framing,
            raw,
        })
    }

    /// Takes exactly `n` raw bytes (for tunnels after a 101).
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let timeout = self.timeout;
        self.wire
            .take_exact(n)
            .unwrap_or_else(|e| panic!("client: expected {n} raw bytes: {}", explain(&e, timeout)))
    }

    /// Reads whatever arrives until the peer closes or `within` passes.
    pub fn read_until_close(&mut self, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && !self.wire.saw_eof() {
            self.apply_read_timeout(deadline.saturating_duration_since(Instant::now()));
            match self.wire.fill() {
                Ok(_) => {}
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.apply_read_timeout(self.timeout);
        self.wire.take_pending()
    }

    /// True when the peer closes (EOF or reset) within `within` and sent nothing more first.
    /// Bytes that arrive instead make it false; they stay buffered for the next read.
    pub fn is_closed(&mut self, within: Duration) -> bool {
        if !self.wire.pending().is_empty() {
            return false;
        }
        if self.wire.saw_eof() {
            return true;
        }
        let deadline = Instant::now() + within;
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.apply_read_timeout(left);
            match self.wire.fill() {
                Ok(0) => break true,
                Ok(_) => break false,
                Err(e) if is_timeout(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A reset or abort is a close as far as the client can tell.
                Err(_) => break true,
            }
        };
        self.apply_read_timeout(self.timeout);
        closed
    }

    /// True as soon as anything arrives (bytes, EOF or reset) within `within`. Lets a test keep
    /// writing a slow request until the server answers, without a second thread.
    pub fn wait_readable(&mut self, within: Duration) -> bool {
        if !self.wire.pending().is_empty() || self.wire.saw_eof() {
            return true;
        }
        let deadline = Instant::now() + within;
        let readable = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.apply_read_timeout(left);
            match self.wire.fill() {
                Ok(_) => break true,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        self.apply_read_timeout(self.timeout);
        readable
    }

    /// Bytes received but not consumed by any read so far.
    pub fn pending(&self) -> &[u8] {
        self.wire.pending()
    }

    /// Sends `GET path` with a fixed Host and reads the answer.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(&get(path));
        self.read_response()
    }

    /// Sends a request and reads the answer, returning the error instead of panicking.
    pub fn exchange(&mut self, request: &[u8]) -> io::Result<Response> {
        let to_head = request.starts_with(b"HEAD ");
        self.try_send(request)?;
        self.try_read_response(to_head)
    }
}

/// Says "timed out" in words instead of EAGAIN's "Resource temporarily unavailable".
pub fn explain(e: &io::Error, timeout: Duration) -> String {
    if is_timeout(e) {
        format!("nothing more arrived within {timeout:?} (read timeout)")
    } else {
        e.to_string()
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Host sent by the helpers below when a test does not care which.
pub const HOST: &str = "hearth.test";

/// `GET path HTTP/1.1` with only a Host header.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()
}

/// An HTTP/1.1 request with the given extra headers; Content-Length is added when there is a
/// body and the caller did not frame it itself.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        out.push_str(&format!("Host: {HOST}\r\n"));
    }
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let framed = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if !framed && (!body.is_empty() || method == "POST" || method == "PUT") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Encodes a chunked body (RFC 9112 section 7.1) from the given chunks and trailer fields.
pub fn chunked_body(chunks: &[&[u8]], trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (n, v) in trailers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}
