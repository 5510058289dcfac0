//! `hearth-demo-upstream`: a small HTTP/1.1 origin to put behind hearth when trying it by hand.
//!
//! It owns one accept thread per `--listen` address and one thread per accepted connection; std
//! blocking sockets are plenty for a demo, and keeping it free of hearth's own modules means it
//! works while those are still being written. Every answer names the listener, the connection
//! number on that listener and the request number on that connection, so a user curling through
//! the proxy sees the upstream pool reuse connections. Invariants it keeps:
//! - Nothing on the wire can make it panic: a head or body it cannot frame is answered with a
//!   400/413/431 and the connection is closed, because after a framing error the next request
//!   boundary is unknown (RFC 9112 §6.3).
//! - A connection persists by default for HTTP/1.1 and only on request for HTTP/1.0, and ends on
//!   `Connection: close` (RFC 9112 §9.3), or after `IDLE_TIMEOUT` without a byte from the client.
//! - Memory per connection is bounded: one head buffer, plus an `/echo` body of at most
//!   `MAX_ECHO_BYTES`; other bodies are read and dropped as they stream in.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clap::Parser;

/// A request head must fit in this many bytes; it is also the size of the read buffer.
const MAX_HEAD_BYTES: usize = 16_384;
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line (with extensions) or trailer field line accepted in a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 1_024;
const MAX_TRAILER_BYTES: usize = 8_192;
/// `/echo` holds the whole body in memory to send it back, so it is capped.
const MAX_ECHO_BYTES: usize = 1 << 20;
const MAX_SLOW_MS: u64 = 10_000;
/// How much unread input is drained before closing; see `linger`.
const MAX_LINGER_BYTES: usize = 65_536;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed accept so a full file table does not turn the accept loop into a spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A small HTTP/1.1 origin server for trying hearth by hand.
#[derive(Parser, Debug)]
#[command(name = "hearth-demo-upstream", version)]
struct Cli {
    /// Address to serve on (e.g. 127.0.0.1:9001); repeat the flag to serve on several.
    #[arg(long = "listen", value_name = "ADDR", required = true)]
    listen: Vec<SocketAddr>,
}

/// Figures one listener shows at `/status`. Connection threads share them, so they are atomics;
/// relaxed ordering suffices because they are only ever displayed, never used to synchronise.
#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    served: AtomicU64,
}

/// One listening address and its figures.
struct Site {
    addr: SocketAddr,
    tally: Tally,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();

    // Bind everything before announcing anything, so a taken port fails the whole start rather
    // than leaving a server that answers on only some of the addresses it was given.
    let mut bound = Vec::with_capacity(cli.listen.len());
    for addr in &cli.listen {
        let listener = match TcpListener::bind(addr) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("hearth-demo-upstream: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Ask the socket rather than echoing the flag, so `:0` prints the port actually taken.
        let addr = listener.local_addr().unwrap_or(*addr);
        bound.push((listener, addr));
    }

    let mut acceptors = Vec::with_capacity(bound.len());
    for (listener, addr) in bound {
        println!("demo upstream listening on {addr}");
        let site = Arc::new(Site {
            addr,
            tally: Tally::default(),
        });
        acceptors.push(thread::spawn(move || accept_loop(listener, site)));
    }
    // The accept loops never return; SIGINT/SIGTERM end the process with their default action.
    for acceptor in acceptors {
        let _ = acceptor.join();
    }
    ExitCode::SUCCESS
}

fn accept_loop(listener: TcpListener, site: Arc<Site>) {
    for incoming in listener.incoming() {
        match incoming {
            Ok(stream) => {
                let conn_no = site.tally.accepted.fetch_add(1, Ordering::Relaxed) + 1;
                let site_for_conn = Arc::clone(&site);
                let spawned = thread::Builder::new()
                    .name(format!("conn-{conn_no}"))
                    .spawn(move || serve(stream, &site_for_conn, conn_no));
                if let Err(e) = spawned {
                    log::warn!("{}: no thread for connection {conn_no}: {e}", site.addr);
                }
            }
            Err(e) => {
                log::warn!("{}: accept failed: {e}", site.addr);
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Runs one accepted connection to its end, then closes it politely.
fn serve(stream: TcpStream, site: &Site, conn_no: u64) {
    // The read timeout is the idle limit: a client silent for that long, between requests or in
    // the middle of one, loses its connection. The write timeout stops a client that never reads
    // from pinning the thread forever.
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IDLE_TIMEOUT)).is_err()
    {
        return;
    }
    // Answers go out in one write each; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    converse(&stream, site, conn_no);
    linger(&stream);
}

/// Closing a socket that still has unread input makes the kernel send a reset, which can destroy
/// an error answer before the client reads it. So shut our side first and drain a little of theirs
/// (the staged close of RFC 9112 §9.6).
fn linger(stream: &TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err()
        || stream.set_read_timeout(Some(LINGER_TIMEOUT)).is_err()
    {
        return;
    }
    let mut scratch = [0u8; 4_096];
    let mut drained = 0;
    let mut reader = stream;
    while drained < MAX_LINGER_BYTES {
        match reader.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Why a request is refused outright. Each refusal also ends the connection, because once the
/// framing is in doubt the start of the next request cannot be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Malformed,
    HeadTooLarge,
    BodyTooLarge,
}

impl Refusal {
    fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::Malformed => (400, "Bad Request"),
            Refusal::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Refusal::BodyTooLarge => (413, "Content Too Large"),
        }
    }
}

/// How reading a request can fail: the peer went away (EOF, reset, timeout), or it sent
/// something we refuse.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Gone,
    Refused(Refusal),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Refused(refusal)
    }
}

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// The parts of a request head that outlive the read buffer.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    minor: u8,
    framing: Framing,
    persist: bool,
    expects_continue: bool,
}

/// Parses a request head from the start of `bytes`. `Ok(None)` means more bytes are needed; on
/// success it also returns how many bytes the head took.
fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let used = match request.parse(bytes) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(Refusal::Malformed);
    };

    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive = false;
    let mut expects_continue = false;
    let mut length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            // RFC 9110 §7.6.1: a comma-separated list of case-insensitive options.
            for option in list_items(field.value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 §8.6: digits only; a list of identical values may be taken as one value,
            // differing values are an unrecoverable framing error.
            for item in list_items(field.value) {
                let value = decimal(item).ok_or(Refusal::Malformed)?;
                if length.is_some_and(|seen| seen != value) {
                    return Err(Refusal::Malformed);
                }
                length = Some(value);
            }
            if length.is_none() {
                return Err(Refusal::Malformed);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in list_items(field.value) {
                codings.push(String::from_utf8_lossy(coding).to_ascii_lowercase());
            }
        } else if name.eq_ignore_ascii_case("expect") {
            // RFC 9110 §10.1.1: other expectations may be ignored by an origin.
            expects_continue |= field
                .value
                .trim_ascii()
                .eq_ignore_ascii_case(b"100-continue");
        }
    }

    // RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host; more than one is always wrong.
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(Refusal::Malformed);
    }
    let framing = if codings.is_empty() {
        match length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    } else {
        // RFC 9112 §6.1 and §6.3: chunked must be the final coding and appear once; we reject
        // a Content-Length beside it (allowed, and it shuts the smuggling door) and any
        // Transfer-Encoding in HTTP/1.0, whose framing must then be treated as faulty.
        let chunked_once = codings.iter().filter(|c| *c == "chunked").count() == 1;
        let chunked_last = codings.last().is_some_and(|c| c == "chunked");
        if minor == 0 || length.is_some() || !chunked_once || !chunked_last {
            return Err(Refusal::Malformed);
        }
        Framing::Chunked
    };
    let head = Head {
        method: method.to_owned(),
        target: target.to_owned(),
        minor,
        framing,
        // RFC 9112 §9.3: close wins; otherwise 1.1 persists and 1.0 persists only if asked.
        persist: !close && (minor == 1 || keep_alive),
        expects_continue: expects_continue && minor == 1,
    };
    Ok(Some((head, used)))
}

/// The non-empty, whitespace-trimmed items of a comma-separated field value.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// A non-empty run of ASCII digits as a number, or `None` on anything else or on overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The size of a chunk from its chunk-size line, extensions ignored (RFC 9112 §7.1.1: a
/// recipient ignores extensions it does not understand).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    // BWS may sit between the size and a `;` that opens the extensions.
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(u64::from(digit))
    })
}

/// Where body bytes go: kept for `/echo`, dropped for everything else.
enum Sink {
    Keep(Vec<u8>),
    Drop,
}

impl Sink {
    fn take(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        if let Sink::Keep(body) = self {
            if body.len() + bytes.len() > MAX_ECHO_BYTES {
                return Err(Refusal::BodyTooLarge.into());
            }
            body.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn into_body(self) -> Vec<u8> {
        match self {
            Sink::Keep(body) => body,
            Sink::Drop => Vec::new(),
        }
    }
}

/// The reading side of a connection: a fixed buffer holding bytes not yet consumed between
/// `start` and `end`. Bytes past one request stay for the next, so pipelined requests work.
struct Inbox<S> {
    io: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<S: Read> Inbox<S> {
    fn new(io: S) -> Self {
        Inbox {
            io,
            buf: vec![0; MAX_HEAD_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once more from the peer; `Ok(false)` at end of stream.
    fn fill(&mut self) -> Result<bool, Failure> {
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Callers never ask for more while the buffer is full of unconsumed bytes (heads and lines
        // are capped below its size), but refusing beats reading into an empty slice forever.
        if self.end == self.buf.len() {
            return Err(Refusal::HeadTooLarge.into());
        }
        loop {
            match self.io.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Failure::Gone),
            }
        }
    }

    /// The next request head, or `None` if the peer closed cleanly between requests.
    fn head(&mut self) -> Result<Option<Head>, Failure> {
        loop {
            if self.start < self.end {
                match parse_head(self.buffered())? {
                    Some((head, used)) => {
                        self.consume(used);
                        return Ok(Some(head));
                    }
                    // RFC 9112 §2.3 lets a server bound the head; a full buffer is that bound.
                    None if self.end - self.start == self.buf.len() => {
                        return Err(Refusal::HeadTooLarge.into())
                    }
                    None => {}
                }
            }
            if !self.fill()? {
                // EOF between requests is how a persistent connection normally ends (RFC 9112
                // §9.6); EOF inside a head is a broken request with nobody left to answer.
                return if self.start == self.end {
                    Ok(None)
                } else {
                    Err(Failure::Gone)
                };
            }
        }
    }

    /// One CRLF-terminated line of at most `max` bytes, without its terminator. Chunked framing
    /// insists on CRLF: tolerating a bare LF here is a classic request smuggling seam.
    fn line(&mut self, max: usize) -> Result<Vec<u8>, Failure> {
        loop {
            let buffered = self.buffered();
            if let Some(at) = buffered.iter().position(|&b| b == b'\n') {
                let line = buffered[..at]
                    .strip_suffix(b"\r")
                    .filter(|line| line.len() <= max)
                    .ok_or(Refusal::Malformed)?
                    .to_vec();
                self.consume(at + 1);
                return Ok(line);
            }
            // The `+ 1` leaves room for a CR whose LF has not arrived yet.
            if buffered.len() > max + 1 {
                return Err(Refusal::Malformed.into());
            }
            if !self.fill()? {
                return Err(Failure::Gone);
            }
        }
    }

    /// Moves exactly `n` body bytes into `sink`.
    fn pass(&mut self, mut n: u64, sink: &mut Sink) -> Result<(), Failure> {
        while n > 0 {
            if self.start == self.end && !self.fill()? {
                return Err(Failure::Gone);
            }
            let available = self.end - self.start;
            let take = usize::try_from(n).map_or(available, |n| n.min(available));
            sink.take(&self.buf[self.start..self.start + take])?;
            self.consume(take);
            // `take` is at most `n`, so this cannot underflow.
            n -= take as u64;
        }
        Ok(())
    }

    fn body(&mut self, framing: Framing, sink: &mut Sink) -> Result<(), Failure> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => self.pass(n, sink),
            Framing::Chunked => self.chunked(sink),
        }
    }

    /// Decodes a chunked body (RFC 9112 §7.1) into `sink`, discarding extensions and trailers.
    fn chunked(&mut self, sink: &mut Sink) -> Result<(), Failure> {
        loop {
            let line = self.line(MAX_CHUNK_LINE_BYTES)?;
            let size = chunk_size(&line).ok_or(Refusal::Malformed)?;
            if size == 0 {
                break;
            }
            self.pass(size, sink)?;
            // Each chunk's data is followed by a bare CRLF.
            self.line(0)?;
        }
        // RFC 9112 §7.1.2: the trailer section is field lines up to an empty line. Nothing here
        // uses trailers, so they are only bounded and skipped.
        let mut trailer_bytes = 0;
        loop {
            let line = self.line(MAX_CHUNK_LINE_BYTES)?;
            if line.is_empty() {
                return Ok(());
            }
            trailer_bytes += line.len();
            if trailer_bytes > MAX_TRAILER_BYTES {
                return Err(Refusal::HeadTooLarge.into());
            }
        }
    }
}

/// A response before it is put on the wire.
struct Answer {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Answer {
    fn text(status: u16, reason: &'static str, body: String) -> Self {
        Answer {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into_bytes(),
        }
    }
}

/// Writes the whole answer in one `write_all`. `head_only` answers HEAD: the same fields, no
/// body (RFC 9110 §9.3.2). `connection` is the Connection field to send, if any.
fn write_answer<W: Write>(
    out: &mut W,
    answer: &Answer,
    head_only: bool,
    connection: Option<&str>,
) -> io::Result<()> {
    let mut wire = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        answer.status,
        answer.reason,
        answer.content_type,
        answer.body.len()
    )
    .into_bytes();
    if let Some(option) = connection {
        wire.extend_from_slice(format!("Connection: {option}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    if !head_only {
        wire.extend_from_slice(&answer.body);
    }
    out.write_all(&wire)?;
    out.flush()
}

fn refuse<W: Write>(out: &mut W, refusal: Refusal) {
    let (status, reason) = refusal.status();
    log::debug!("refusing a request: {status} {reason}");
    let answer = Answer::text(status, reason, format!("{status} {reason}\n"));
    let _ = write_answer(out, &answer, false, Some("close"));
}

/// The path and query of a request target. RFC 9112 §3.2.2 has servers accept the
/// absolute-form too, so its scheme and authority are skipped.
fn path_and_query(target: &str) -> (&str, Option<&str>) {
    let local = match target.split_once("://") {
        Some((scheme, after)) if !scheme.contains('/') => {
            let cut = after.find(['/', '?']).unwrap_or(after.len());
            &after[cut..]
        }
        _ => target,
    };
    let (path, query) = match local.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (local, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

/// What `/slow` was asked to wait: `Ok(None)` if no `ms` was given, `Err` if it is not a number.
fn slow_ms(query: Option<&str>) -> Result<Option<u64>, ()> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("ms="))
    else {
        return Ok(None);
    };
    decimal(value.as_bytes()).map(Some).ok_or(())
}

/// Builds the answer to a fully read request; `/slow` blocks the calling thread.
fn answer(site: &Site, conn_no: u64, nth: u64, head: &Head, body: Vec<u8>) -> Answer {
    let (path, query) = path_and_query(&head.target);
    let hello = || {
        format!(
            "hello from {} (connection {conn_no}, request {nth} on it)\n{} {}\n",
            site.addr, head.method, head.target
        )
    };
    match path {
        "/echo" => Answer {
            status: 200,
            reason: "OK",
            content_type: "application/octet-stream",
            body,
        },
        "/status" => Answer::text(
            200,
            "OK",
            format!(
                "demo upstream {}\nconnections accepted: {}\nrequests served: {}\n",
                site.addr,
                site.tally.accepted.load(Ordering::Relaxed),
                site.tally.served.load(Ordering::Relaxed)
            ),
        ),
        "/slow" => match slow_ms(query) {
            Ok(ms) => {
                thread::sleep(Duration::from_millis(ms.unwrap_or(0).min(MAX_SLOW_MS)));
                Answer::text(200, "OK", hello())
            }
            Err(()) => Answer::text(
                400,
                "Bad Request",
                "/slow takes ?ms=N with N in milliseconds\n".to_owned(),
            ),
        },
        _ => Answer::text(200, "OK", hello()),
    }
}

/// Serves requests on one connection until it should close. Generic over the stream so tests can
/// feed it scripted bytes in reads of any size.
fn converse<S: Read + Write>(io: S, site: &Site, conn_no: u64) {
    let mut inbox = Inbox::new(io);
    let mut nth = 0u64;
    loop {
        let head = match inbox.head() {
            Ok(Some(head)) => head,
            Ok(None) | Err(Failure::Gone) => return,
            Err(Failure::Refused(refusal)) => return refuse(&mut inbox.io, refusal),
        };
        nth += 1;
        // RFC 9110 §10.1.1: a client that sent `Expect: 100-continue` may hold its body back
        // until told to go on.
        if head.expects_continue
            && head.framing != Framing::Empty
            && inbox
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .is_err()
        {
            return;
        }
        let (path, _) = path_and_query(&head.target);
        let mut sink = if path == "/echo" {
            Sink::Keep(Vec::new())
        } else {
            Sink::Drop
        };
        match inbox.body(head.framing, &mut sink) {
            Ok(()) => {}
            Err(Failure::Gone) => return,
            Err(Failure::Refused(refusal)) => return refuse(&mut inbox.io, refusal),
        }
        // Counted before answering, so `/status` includes the request asking for it.
        site.tally.served.fetch_add(1, Ordering::Relaxed);
        let reply = answer(site, conn_no, nth, &head, sink.into_body());
        log::debug!(
            "{} conn {conn_no} req {nth}: {} {} -> {}",
            site.addr,
            head.method,
            head.target,
            reply.status
        );
        let connection = match (head.persist, head.minor) {
            (false, _) => Some("close"),
            (true, 0) => Some("keep-alive"),
            (true, _) => None,
        };
        let head_only = head.method == "HEAD";
        if write_answer(&mut inbox.io, &reply, head_only, connection).is_err() || !head.persist {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted peer: hands out `input` at most `step` bytes per read, records what is written.
    struct Peer {
        input: Vec<u8>,
        at: usize,
        step: usize,
        output: Vec<u8>,
    }

    impl Read for Peer {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.input.len() - self.at);
            buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Peer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn site() -> Site {
        Site {
            addr: "127.0.0.1:9001".parse().expect("literal address"),
            tally: Tally::default(),
        }
    }

    fn run(input: &[u8], step: usize) -> String {
        let mut peer = Peer {
            input: input.to_vec(),
            at: 0,
            step,
            output: Vec::new(),
        };
        converse(&mut peer, &site(), 7);
        String::from_utf8_lossy(&peer.output).into_owned()
    }

    /// Status codes of every response in `output`, in order.
    fn statuses(output: &str) -> Vec<u16> {
        output
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, _)| output.get(at + 9..at + 12)?.parse().ok())
            .collect()
    }

    const CHUNKED_ECHO: &[u8] =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=val\r\nhello\r\n1 ; x\r\n!\r\n0\r\nX-Sum: 1\r\n\r\n";

    /// What the case shows, the input, the expected statuses in order, then substrings the
    /// output must contain and must not contain.
    type Case<'a> = (&'a str, &'a [u8], &'a [u16], &'a [&'a str], &'a [&'a str]);

    #[test]
    fn conversations() {
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let big_echo = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}",
            MAX_ECHO_BYTES + 1,
            "b".repeat(MAX_ECHO_BYTES + 1)
        );
        let cases: &[Case] = &[
            (
                "1.1 persists and pipelines",
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
                &[200, 200],
                &[
                    "hello from 127.0.0.1:9001 (connection 7, request 1 on it)\nGET /a\n",
                    "(connection 7, request 2 on it)\nGET /b\n",
                ],
                &["Connection:"],
            ),
            (
                "close ends the conversation",
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, CLOSE\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
                &[200],
                &["Connection: close\r\n"],
                &[],
            ),
            (
                "1.0 closes by default",
                b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n",
                &[200],
                &["Connection: close\r\n"],
                &[],
            ),
            (
                "1.0 persists on request",
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
                &[200, 200],
                &["Connection: keep-alive\r\n", "request 2 on it"],
                &[],
            ),
            (
                "echo by length, then the next request",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\n\r\n",
                &[200, 200],
                &["Content-Length: 5\r\n\r\nhello", "request 2 on it"],
                &[],
            ),
            (
                "echo chunked with extensions and trailers",
                CHUNKED_ECHO,
                &[200],
                &["application/octet-stream", "Content-Length: 6\r\n\r\nhello!"],
                &[],
            ),
            (
                "body on another path is read and dropped",
                b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\n",
                &[200, 200],
                &["POST /api\n", "request 2 on it"],
                &[],
            ),
            (
                "expect 100-continue",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi",
                &[100, 200],
                &["\r\n\r\nhi"],
                &[],
            ),
            (
                "HEAD has a length but no body",
                b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
                &[200],
                &["Content-Length: ", "\r\n\r\n"],
                &["hello"],
            ),
            (
                "absolute-form target",
                b"POST http://x:1/echo?q HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok",
                &[200],
                &["\r\n\r\nok"],
                &[],
            ),
            (
                "status counts this request",
                b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n",
                &[200],
                &["requests served: 1\n"],
                &[],
            ),
            (
                "slow with a bad number is a 400 that keeps the connection",
                b"GET /slow?ms=soon HTTP/1.1\r\nHost: x\r\n\r\nGET /slow?ms=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                &[400, 200],
                &[],
                &["Connection: close"],
            ),
            ("garbage", b"\x00\x01 nonsense\r\n\r\n", &[400], &["Connection: close"], &[]),
            ("missing host", b"GET / HTTP/1.1\r\n\r\n", &[400], &[], &[]),
            (
                "two hosts",
                b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
                &[400],
                &[],
                &[],
            ),
            (
                "length and chunked together",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                &[400],
                &[],
                &[],
            ),
            (
                "chunked not last",
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                &[400],
                &[],
                &[],
            ),
            (
                "chunked in 1.0",
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                &[400],
                &[],
                &[],
            ),
            (
                "differing lengths",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
                &[400],
                &[],
                &[],
            ),
            (
                "signed length",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
                &[400],
                &[],
                &[],
            ),
            (
                "overflowing length",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                &[400],
                &[],
                &[],
            ),
            (
                "bad chunk size",
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                &[400],
                &[],
                &[],
            ),
            (
                "chunk data overruns its size",
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                &[400],
                &[],
                &[],
            ),
            (
                "bare LF in chunked framing",
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
                &[400],
                &[],
                &[],
            ),
            ("head too large", big_head.as_bytes(), &[431], &[], &[]),
            ("echo too large", big_echo.as_bytes(), &[413], &[], &[]),
            ("EOF inside a head", b"GET / HTTP/1.1\r\nHo", &[], &[], &[]),
            (
                "EOF inside a body",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc",
                &[],
                &[],
                &[],
            ),
            ("nothing at all", b"", &[], &[], &[]),
        ];
        for &(what, input, want_statuses, contains, lacks) in cases {
            // Whole reads and one-byte reads must give the same answers.
            for step in [usize::MAX, 1] {
                let output = run(input, step);
                assert_eq!(
                    statuses(&output),
                    want_statuses,
                    "{what} (step {step}): {output:?}"
                );
                for needle in contains {
                    assert!(
                        output.contains(needle),
                        "{what} (step {step}) lacks {needle:?}: {output:?}"
                    );
                }
                for needle in lacks {
                    assert!(
                        !output.contains(needle),
                        "{what} (step {step}) has {needle:?}: {output:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn chunk_sizes() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"1a", Some(26)),
            (b"FF;ext=1", Some(255)),
            (b"10 \t; ext", Some(16)),
            (b"ffffffffffffffff", Some(u64::MAX)),
            (b"10000000000000000", None),
            (b"", None),
            (b";ext", None),
            (b"-1", None),
            (b"0x10", None),
            (b"12 34", None),
        ];
        for &(line, want) in cases {
            assert_eq!(
                chunk_size(line),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn targets() {
        let cases = [
            ("/", ("/", None)),
            ("/slow?ms=5", ("/slow", Some("ms=5"))),
            ("http://h:1/echo?x", ("/echo", Some("x"))),
            ("http://h:1", ("/", None)),
            ("http://h?x", ("/", Some("x"))),
            ("/a?b=http://c/d", ("/a", Some("b=http://c/d"))),
            ("*", ("*", None)),
        ];
        for (target, want) in cases {
            assert_eq!(path_and_query(target), want, "{target}");
        }
    }

    #[test]
    fn slow_query() {
        assert_eq!(slow_ms(None), Ok(None));
        assert_eq!(slow_ms(Some("a=1&ms=250")), Ok(Some(250)));
        assert_eq!(slow_ms(Some("ms=")), Err(()));
        assert_eq!(slow_ms(Some("ms=-4")), Err(()));
    }

    /// Over real sockets: connection numbers count per listener, a connection is reused across
    /// requests, and `/status` reports both figures.
    #[test]
    fn listener_counts_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("bound socket has an address");
        let site = Arc::new(Site {
            addr,
            tally: Tally::default(),
        });
        thread::spawn(move || accept_loop(listener, site));

        let exchange = |stream: &mut TcpStream, request: &str| -> String {
            stream.write_all(request.as_bytes()).expect("write request");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            // Every answer here is a few lines of text; read until its body has all arrived.
            loop {
                let n = stream.read(&mut buf).expect("read answer");
                assert!(
                    n > 0,
                    "server closed early: {:?}",
                    String::from_utf8_lossy(&got)
                );
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse::<usize>().ok())
                        .expect("answer has a length");
                    if body.len() >= length {
                        return text.into_owned();
                    }
                }
            }
        };
        let open = || {
            let stream = TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("set timeout");
            stream
        };
        let mut first = open();
        let get = "GET /hi HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(exchange(&mut first, get).contains("(connection 1, request 1 on it)"));
        assert!(exchange(&mut first, get).contains("(connection 1, request 2 on it)"));
        let mut second = open();
        assert!(exchange(&mut second, get).contains("(connection 2, request 1 on it)"));
        let status = exchange(&mut second, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(status.contains("connections accepted: 2\n"), "{status}");
        assert!(status.contains("requests served: 4\n"), "{status}");
    }
}
