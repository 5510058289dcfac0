//! A scriptable, recording HTTP/1.1 upstream for the integration tests.
//!
//! `MockUpstream` accepts on 127.0.0.1:0 with one thread per connection. Each connection reads
//! whole requests (head via httparse, body by Content-Length or chunked, decoded), records them,
//! and asks the test's handler for a `Reply`: a short script of raw writes, pauses, closes,
//! resets or an echo tunnel. The mock counts connections accepted and the most simultaneously
//! open, and notes when and how each one ended, because those counts are what the pool tests
//! assert on. It answers `100 Continue` itself whenever a request carries
//! `Expect: 100-continue` and a body, as a real origin server would.
//!
//! Invariants: every connection thread ends when its peer closes, when its script closes, or
//! when the mock is dropped (drop sets a flag, wakes the accept loop by connecting to itself and
//! shuts every socket down), so no test leaves threads blocked behind it. The counters are only
//! touched when a connection opens or closes, never guessed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::wire::{self, Framing, Wire, MAX_HEAD_BYTES};

const HEADER_SLOTS: usize = 256;
/// Longest a drop waits for connection threads to notice the shutdown.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Pauses are sliced so a dropped mock is not kept alive by a long `Sleep`.
const NAP_SLICE: Duration = Duration::from_millis(10);
/// A write blocked longer than this means the proxy stopped reading; fail instead of hanging.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Accept order of the connection, from 0.
    pub conn_id: usize,
    /// Position of this request on its connection, from 0.
    pub index: usize,
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The head exactly as received, terminator included.
    pub head_text: String,
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Whether the body came with chunked framing, and in how many chunks of data.
    pub chunked: bool,
    pub chunks: usize,
    pub trailers: Vec<(String, String)>,
    /// Whether the mock answered `100 Continue` before reading the body.
    pub continued: bool,
    /// When the whole request had been read.
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        wire::header_all(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        wire::has_token(&self.headers, name, token)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How a mock connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEnd {
    /// The proxy closed it cleanly between requests (EOF where a head would start).
    PeerClosed,
    /// The proxy reset it, or closed it in the middle of a message.
    PeerAborted,
    /// The handler's script closed or reset it.
    MockClosed,
    /// The proxy sent something the mock could not parse (see `errors()`).
    BadInput,
    /// The mock was dropped while the connection was open.
    Stopped,
}

/// Life of one accepted connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: usize,
    pub accepted_at: Instant,
    pub requests: usize,
    /// When the last reply script on it finished.
    pub last_reply_at: Option<Instant>,
    pub closed_at: Option<Instant>,
    pub end: Option<ConnEnd>,
}

/// One step of a reply script.
#[derive(Debug, Clone)]
pub enum Action {
    Write(Vec<u8>),
    Sleep(Duration),
    /// Close cleanly (FIN) and stop serving the connection.
    Close,
    /// Close with SO_LINGER 0 so the peer sees a reset.
    Reset,
    /// Act as a tunnel: send back every byte received until the peer closes.
    Echo,
    /// Read this many bytes and drop them (with `MockUpstream::early`: part of the body, as a
    /// server reads before it decides to refuse the rest).
    Read(usize),
}

/// What the mock does with a request. Without a `Close`, `Reset` or `Echo` the connection stays
/// open for the next request after the script runs.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub actions: Vec<Action>,
}

impl Reply {
    /// Writes `bytes` verbatim and keeps the connection open.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            actions: vec![Action::Write(bytes.into())],
        }
    }

    /// `200 OK` with Content-Length.
    pub fn ok(body: impl AsRef<[u8]>) -> Reply {
        Reply::status(200, body)
    }

    /// Any status with Content-Length.
    pub fn status(code: u16, body: impl AsRef<[u8]>) -> Reply {
        Reply::with_headers(code, &[], body)
    }

    /// Any status with the given headers plus Content-Length.
    pub fn with_headers(code: u16, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Reply {
        let body = body.as_ref();
        let len = body.len().to_string();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.push(("Content-Length", &len));
        Reply::raw(response_bytes(&status_line(1, code), &all, body))
    }

    /// `200 OK`, chunked, with the given chunks and trailer fields.
    pub fn chunked(chunks: &[&[u8]], trailers: &[(&str, &str)]) -> Reply {
        let mut bytes = response_bytes(
            &status_line(1, 200),
            &[("Transfer-Encoding", "chunked")],
            b"",
        );
        bytes.extend_from_slice(&super::client::chunked_body(chunks, trailers));
        Reply::raw(bytes)
    }

    /// `200 OK` with `Connection: close`, then closes.
    pub fn ok_close(body: impl AsRef<[u8]>) -> Reply {
        Reply::with_headers(200, &[("Connection", "close")], body).then_close()
    }

    /// `HTTP/1.0 200 OK` with Content-Length and no keep-alive, then closes.
    pub fn http10(body: impl AsRef<[u8]>) -> Reply {
        let body = body.as_ref();
        let len = body.len().to_string();
        Reply::raw(response_bytes(
            &status_line(0, 200),
            &[("Content-Length", &len)],
            body,
        ))
        .then_close()
    }

    /// `200 OK` with neither Content-Length nor Transfer-Encoding: the close ends the body
    /// (RFC 9112 section 6.3 rule 8).
    pub fn close_delimited(body: impl AsRef<[u8]>) -> Reply {
        Reply::raw(response_bytes(&status_line(1, 200), &[], body.as_ref())).then_close()
    }

    /// `200 OK` with `Connection: keep-alive` and `Keep-Alive: timeout=T, max=M` (either part
    /// may be left out).
    pub fn keep_alive(body: impl AsRef<[u8]>, timeout: Option<u64>, max: Option<u64>) -> Reply {
        let mut params = Vec::new();
        if let Some(t) = timeout {
            params.push(format!("timeout={t}"));
        }
        if let Some(m) = max {
            params.push(format!("max={m}"));
        }
        let ka = params.join(", ");
        Reply::with_headers(
            200,
            &[("Connection", "keep-alive"), ("Keep-Alive", &ka)],
            body,
        )
    }

    /// Closes without answering.
    pub fn close() -> Reply {
        Reply {
            actions: vec![Action::Close],
        }
    }

    /// Resets without answering.
    pub fn reset() -> Reply {
        Reply {
            actions: vec![Action::Reset],
        }
    }

    /// Says nothing for `d`, then closes.
    pub fn hang(d: Duration) -> Reply {
        Reply {
            actions: vec![Action::Sleep(d), Action::Close],
        }
    }

    /// Reads and drops `n` bytes before the rest of the script.
    pub fn after_reading(mut self, n: usize) -> Reply {
        self.actions.insert(0, Action::Read(n));
        self
    }

    /// Waits `d` before the rest of the script.
    pub fn after(mut self, d: Duration) -> Reply {
        self.actions.insert(0, Action::Sleep(d));
        self
    }

    pub fn then_write(mut self, bytes: impl Into<Vec<u8>>) -> Reply {
        self.actions.push(Action::Write(bytes.into()));
        self
    }

    pub fn then_sleep(mut self, d: Duration) -> Reply {
        self.actions.push(Action::Sleep(d));
        self
    }

    pub fn then_close(mut self) -> Reply {
        self.actions.push(Action::Close);
        self
    }

    pub fn then_reset(mut self) -> Reply {
        self.actions.push(Action::Reset);
        self
    }

    pub fn then_echo(mut self) -> Reply {
        self.actions.push(Action::Echo);
        self
    }
}

/// `HTTP/1.x CODE Reason`.
pub fn status_line(minor: u8, code: u16) -> String {
    format!("HTTP/1.{minor} {code} {}", reason(code))
}

/// A head from a status line and headers written verbatim, then `body`. No header is added.
pub fn response_bytes(status_line: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{status_line}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    /// Answer as soon as the head is in, then read the body (see `MockUpstream::early`).
    early: bool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    live_threads: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    conns: Mutex<Vec<ConnInfo>>,
    /// Clones of open sockets, so a drop can shut them down and unblock their threads.
    sockets: Mutex<Vec<(usize, TcpStream)>>,
    errors: Mutex<Vec<String>>,
}

/// A poisoned lock only means some handler panicked; the data is still worth reading.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts a mock whose `handler` is called with each request and its index on the connection.
    pub fn start<F>(handler: F) -> MockUpstream
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        MockUpstream::launch(handler, false)
    }

    /// A mock that answers each request as soon as its head has arrived (the handler sees an
    /// empty body) and reads the body afterwards, as servers do that answer without reading:
    /// auth failures, redirects, fixed answers. A reply script that closes leaves the body
    /// unread. `requests()` records each request with its body once that has been read.
    pub fn early<F>(handler: F) -> MockUpstream
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        MockUpstream::launch(handler, true)
    }

    /// As [`MockUpstream::start`], listening on `addr` (another loopback address beside
    /// 127.0.0.1, or a given port) rather than 127.0.0.1 port 0; Err when it cannot bind.
    pub fn start_at<F>(addr: SocketAddr, handler: F) -> std::io::Result<MockUpstream>
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        Ok(MockUpstream::serve(
            TcpListener::bind(addr)?,
            handler,
            false,
        ))
    }

    fn launch<F>(handler: F, early: bool) -> MockUpstream
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("mock: bind 127.0.0.1:0");
        MockUpstream::serve(listener, handler, early)
    }

    fn serve<F>(listener: TcpListener, handler: F, early: bool) -> MockUpstream
    where
        F: Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        let addr = listener
            .local_addr()
            .expect("mock: local_addr of a bound listener");
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            early,
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            live_threads: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("mock-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))
            .expect("mock: spawn accept thread");
        MockUpstream {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// A mock answering every request `200` with the request target as the body.
    pub fn echo_target() -> MockUpstream {
        MockUpstream::start(|req, _| Reply::ok(req.target.as_bytes()))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open_now(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Most connections that were open at the same time.
    pub fn max_open(&self) -> usize {
        self.shared.max_open.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Requests whose target is exactly `target`.
    pub fn requests_to(&self, target: &str) -> Vec<Recorded> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.target == target)
            .cloned()
            .collect()
    }

    /// Every accepted connection, by id.
    pub fn conns(&self) -> Vec<ConnInfo> {
        lock(&self.shared.conns).clone()
    }

    pub fn conn(&self, id: usize) -> Option<ConnInfo> {
        lock(&self.shared.conns)
            .iter()
            .find(|c| c.id == id)
            .cloned()
    }

    /// Protocol errors the mock met (unparsable heads or bodies from the proxy).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }

    /// Waits until at least `n` requests have arrived; false if `within` passes first.
    pub fn wait_requests(&self, n: usize, within: Duration) -> bool {
        super::wait_until(within, || self.request_count() >= n)
    }

    /// Waits until connection `id` has ended; false if `within` passes first.
    pub fn wait_conn_end(&self, id: usize, within: Duration) -> bool {
        super::wait_until(within, || {
            self.conn(id).is_some_and(|c| c.closed_at.is_some())
        })
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The accept loop is blocked in accept(); one connection wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        for (_, s) in lock(&self.shared.sockets).iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        super::wait_until(STOP_GRACE, || {
            self.shared.live_threads.load(Ordering::SeqCst) == 0
        });
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                // Transient (e.g. out of descriptors); back off instead of spinning.
                thread::sleep(NAP_SLICE);
                continue;
            }
        };
        let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
        let now_open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_open.fetch_max(now_open, Ordering::SeqCst);
        shared.live_threads.fetch_add(1, Ordering::SeqCst);
        lock(&shared.conns).push(ConnInfo {
            id,
            accepted_at: Instant::now(),
            requests: 0,
            last_reply_at: None,
            closed_at: None,
            end: None,
        });
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.sockets).push((id, clone));
        }
        let s = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("mock-conn-{id}"))
            .spawn(move || serve(s, stream, id));
        if spawned.is_err() {
            finish(&shared, id, ConnEnd::Stopped);
        }
    }
}

/// Marks a connection ended and releases its counters; runs exactly once per connection (the
/// guard in `serve`, or the accept loop if the thread never started).
fn finish(shared: &Shared, id: usize, end: ConnEnd) {
    lock(&shared.sockets).retain(|(i, _)| *i != id);
    if let Some(c) = lock(&shared.conns).iter_mut().find(|c| c.id == id) {
        c.closed_at = Some(Instant::now());
        c.end = Some(end);
    }
    shared.open.fetch_sub(1, Ordering::SeqCst);
    shared.live_threads.fetch_sub(1, Ordering::SeqCst);
}

/// Ends the connection's bookkeeping even if the handler panics.
struct ConnGuard<'a> {
    shared: &'a Shared,
    id: usize,
    end: ConnEnd,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        finish(self.shared, self.id, self.end);
    }
}

fn serve(shared: Arc<Shared>, stream: TcpStream, id: usize) {
    let mut guard = ConnGuard {
        shared: &shared,
        id,
        end: ConnEnd::Stopped,
    };
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut wire = Wire::new(stream);
    guard.end = serve_requests(&shared, &mut wire, id);
    // Release the clone first so the close below is the last descriptor and takes effect now.
    lock(&shared.sockets).retain(|(i, _)| *i != id);
    drop(wire);
}

fn stopping(shared: &Shared) -> bool {
    shared.stop.load(Ordering::SeqCst)
}

fn note_error(shared: &Shared, id: usize, what: String) -> ConnEnd {
    if stopping(shared) {
        return ConnEnd::Stopped;
    }
    lock(&shared.errors).push(format!("conn {id}: {what}"));
    ConnEnd::BadInput
}

fn read_error_end(shared: &Shared, id: usize, e: io::Error, during: &str) -> ConnEnd {
    if stopping(shared) {
        return ConnEnd::Stopped;
    }
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => ConnEnd::PeerAborted,
        _ => note_error(shared, id, format!("{during}: {e}")),
    }
}

fn serve_requests(shared: &Shared, wire: &mut Wire, id: usize) -> ConnEnd {
    let mut index = 0;
    loop {
        let head = match wire.read_head(MAX_HEAD_BYTES) {
            Ok(Some(h)) => h,
            Ok(None) if stopping(shared) => return ConnEnd::Stopped,
            Ok(None) => return ConnEnd::PeerClosed,
            Err(e) => return read_error_end(shared, id, e, "reading a request head"),
        };
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let mut parsed = httparse::Request::new(&mut slots);
        if let Err(e) = parsed.parse(&head) {
            return note_error(
                shared,
                id,
                format!(
                    "unparsable request head ({e}): {:?}",
                    String::from_utf8_lossy(&head)
                ),
            );
        }
        // A complete parse always sets method, path and version.
        let method = parsed.method.unwrap_or("").to_string();
        let target = parsed.path.unwrap_or("").to_string();
        let version = parsed.version.unwrap_or(1);
        let headers = wire::owned_headers(parsed.headers);
        let framing = match wire::framing_from_headers(&headers, false) {
            Ok(f) => f,
            Err(e) => return note_error(shared, id, format!("request framing: {e}")),
        };
        // RFC 9110 section 10.1.1: a server that wants the body says 100 Continue first.
        let continued = framing != Framing::Empty
            && framing != Framing::Length(0)
            && wire::header(&headers, "expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if continued && !shared.early {
            if let Err(e) = wire.write_all(b"HTTP/1.1 100 Continue\r\n\r\n") {
                return read_error_end(shared, id, e, "writing 100 Continue");
            }
        }
        let mut rec = Recorded {
            conn_id: id,
            index,
            method,
            target,
            version,
            head_text: String::from_utf8_lossy(&head).into_owned(),
            headers,
            body: Vec::new(),
            chunked: false,
            chunks: 0,
            trailers: Vec::new(),
            continued: continued && !shared.early,
            at: Instant::now(),
        };
        let early_end = if shared.early {
            let reply = (shared.handler)(&rec, index);
            run_script(shared, wire, id, reply)
        } else {
            None
        };
        if let Some(end) = early_end {
            return end;
        }
        match framing {
            Framing::Empty | Framing::Close => {}
            Framing::Length(n) => match wire.take_exact(n) {
                Ok(b) => rec.body = b,
                Err(e) => return read_error_end(shared, id, e, "reading a body"),
            },
            Framing::Chunked => match wire.read_chunked() {
                Ok(c) => {
                    rec.body = c.body;
                    rec.chunked = true;
                    rec.chunks = c.chunks;
                    rec.trailers = c.trailers;
                }
                Err(e) => return read_error_end(shared, id, e, "reading a chunked body"),
            },
        }
        rec.at = Instant::now();
        lock(&shared.requests).push(rec.clone());
        if let Some(c) = lock(&shared.conns).iter_mut().find(|c| c.id == id) {
            c.requests += 1;
        }
        if !shared.early {
            let reply = (shared.handler)(&rec, index);
            if let Some(end) = run_script(shared, wire, id, reply) {
                return end;
            }
        }
        index += 1;
        if let Some(c) = lock(&shared.conns).iter_mut().find(|c| c.id == id) {
            c.last_reply_at = Some(Instant::now());
        }
    }
}

/// Runs a reply script; `Some(end)` when the connection is over.
fn run_script(shared: &Shared, wire: &mut Wire, id: usize, reply: Reply) -> Option<ConnEnd> {
    for action in reply.actions {
        match action {
            Action::Write(bytes) => {
                if let Err(e) = wire.write_all(&bytes) {
                    return Some(read_error_end(shared, id, e, "writing a reply"));
                }
            }
            Action::Sleep(d) => {
                nap(shared, d);
                if stopping(shared) {
                    return Some(ConnEnd::Stopped);
                }
            }
            Action::Close => {
                let _ = wire.stream().shutdown(Shutdown::Both);
                return Some(ConnEnd::MockClosed);
            }
            Action::Reset => {
                // Linger zero turns the close into a RST once the last descriptor goes, which
                // `serve` arranges right after this returns.
                let _ = socket2::SockRef::from(wire.stream()).set_linger(Some(Duration::ZERO));
                return Some(ConnEnd::MockClosed);
            }
            Action::Echo => return Some(echo(shared, wire, id)),
            Action::Read(n) => {
                if let Err(e) = wire.take_exact(n) {
                    return Some(read_error_end(shared, id, e, "reading before the reply"));
                }
            }
        }
    }
    None
}

fn echo(shared: &Shared, wire: &mut Wire, id: usize) -> ConnEnd {
    let early = wire.take_pending();
    if !early.is_empty() {
        if let Err(e) = wire.write_all(&early) {
            return read_error_end(shared, id, e, "echoing");
        }
    }
    let mut stream = wire.stream();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) if stopping(shared) => return ConnEnd::Stopped,
            Ok(0) => {
                let _ = stream.shutdown(Shutdown::Both);
                return ConnEnd::PeerClosed;
            }
            Ok(n) => {
                if let Err(e) = stream.write_all(&buf[..n]) {
                    return read_error_end(shared, id, e, "echoing");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return read_error_end(shared, id, e, "echo read"),
        }
    }
}

fn nap(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stopping(shared) {
            return;
        }
        thread::sleep(left.min(NAP_SLICE));
    }
}
