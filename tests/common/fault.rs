//! Fault injection under load: a hashing upstream that can misbehave on request, a client that
//! checks every response end to end, a multi-threaded load driver, and the process probes the
//! soak reads (resident memory and open descriptors).
//!
//! `HashUpstream` answers every request with a body derived from the request target and two
//! headers: `X-Req-Hash`, the FNV-1a of what it received (method, target, decoded body), and
//! `X-Body-Hash`, the FNV-1a of the body it sends. The first path segment picks a behaviour
//! (`/ok`, `/reset`, `/resetfirst`, `/hang`, `/hangmid`), so the client always knows which fault
//! its request meets and what hearth owes it. From outside, a test can close idle pooled
//! connections at random moments (`close_idle`), make the upstream close some connections right
//! after a reply, or kill it and start a new one on the same address (`kill`, `start_on`).
//!
//! Invariants: a connection is only ever closed from outside while it waits for the next request
//! head after serving at least one (an idle pooled connection, from hearth's side), never while a
//! reply is being written, so every cut a test sees was asked for. A request the mock read but
//! dropped because its connection was closed under it gets no byte of answer. Every thread the
//! mock starts ends on drop or `kill` within a bounded time, and every client read is bounded by
//! a read timeout, so a hang in hearth shows up as a `Stalled` outcome instead of a stuck test.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::wire::{self, Framing, Wire, MAX_HEAD_BYTES};
use super::{checksum, payload, wait_until, Hearth, HOST};

/// Pauses in the mock are sliced so a kill is not held up by a long hang.
const NAP_SLICE: Duration = Duration::from_millis(10);
/// A mock write blocked this long means hearth stopped reading; give up on the connection.
const MOCK_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed or dropped mock waits for its connection threads.
const MOCK_STOP_GRACE: Duration = Duration::from_secs(5);
/// Longest a load client waits for any one read. Every timeout hearth is given in these tests is
/// well under this, so reaching it means hearth left the client hanging.
pub const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the `reset` and `hangmid` modes wait after the first half of a reply, so hearth has
/// relayed those bytes before the fault: the fault then is really mid-body.
const MID_BODY_PAUSE: Duration = Duration::from_millis(20);

/// Locks a mutex, reading through poisoning (a panicked test thread leaves the data usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------------------- randomness

/// splitmix64: small, seedable, good enough to pick faults; a failing seed can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u32) -> bool {
        self.below(100) < pct as usize
    }
}

// ------------------------------------------------------------------------------- requests

/// What a load request is for, and so what hearth owes the client for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A GET the upstream answers normally.
    Get,
    /// A POST (Content-Length or chunked body) the upstream answers normally.
    Post,
    /// A POST with an `Idempotency-Key`, which hearth may replay.
    PostKeyed,
    /// The upstream sends the head and half the body, then resets.
    ResetMid,
    /// The upstream resets before sending any byte of the answer (asked with a POST, which
    /// hearth must not replay).
    ResetFirst,
    /// The upstream answers nothing for longer than hearth's read timeout.
    Hang,
    /// The upstream sends half the body, then nothing for longer than hearth's read timeout.
    HangMid,
    /// The client reads part of a large response, then drops the connection.
    ClientAbort,
    /// Three requests sent back to back, split into two writes at a random byte.
    Pipelined,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::Get => "get",
            Kind::Post => "post",
            Kind::PostKeyed => "post-keyed",
            Kind::ResetMid => "reset-mid-body",
            Kind::ResetFirst => "reset-before-answer",
            Kind::Hang => "hang",
            Kind::HangMid => "hang-mid-body",
            Kind::ClientAbort => "client-abort",
            Kind::Pipelined => "pipelined",
        };
        f.write_str(s)
    }
}

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length,
    /// Chunked, in chunks of this size (the last may be shorter).
    Chunked(usize),
}

/// One request and everything needed to check its answer.
#[derive(Debug, Clone)]
pub struct Probe {
    pub method: &'static str,
    pub target: String,
    pub body: Vec<u8>,
    pub framing: BodyFraming,
    pub idempotency_key: bool,
    /// Length of the body the upstream will answer with.
    pub resp_len: usize,
}

impl Probe {
    /// `METHOD /mode/tag?len=N[&chunked=1][&ms=M]` with no body.
    pub fn new(method: &'static str, mode: &str, tag: &str, resp_len: usize) -> Probe {
        Probe {
            method,
            target: format!("/{mode}/{tag}?len={resp_len}"),
            body: Vec::new(),
            framing: BodyFraming::None,
            idempotency_key: false,
            resp_len,
        }
    }

    /// Asks the upstream to answer with chunked framing.
    pub fn chunked_answer(mut self) -> Probe {
        self.target.push_str("&chunked=1");
        self
    }

    /// Sets the pause, in milliseconds, of the `hang` and `hangmid` modes.
    pub fn pause_ms(mut self, ms: u64) -> Probe {
        self.target.push_str(&format!("&ms={ms}"));
        self
    }

    pub fn with_body(mut self, body: Vec<u8>, framing: BodyFraming) -> Probe {
        self.body = body;
        self.framing = framing;
        self
    }

    pub fn keyed(mut self) -> Probe {
        self.idempotency_key = true;
        self
    }

    /// The request exactly as the client sends it.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {HOST}\r\n",
            self.method, self.target
        );
        if self.idempotency_key {
            out.push_str(&format!(
                "Idempotency-Key: {:016x}\r\n",
                checksum(self.target.as_bytes())
            ));
        }
        match self.framing {
            BodyFraming::None => {}
            BodyFraming::Length => {
                out.push_str(&format!("Content-Length: {}\r\n", self.body.len()))
            }
            BodyFraming::Chunked(_) => out.push_str("Transfer-Encoding: chunked\r\n"),
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        match self.framing {
            BodyFraming::None => {}
            BodyFraming::Length => bytes.extend_from_slice(&self.body),
            BodyFraming::Chunked(size) => {
                for c in self.body.chunks(size.max(1)) {
                    bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    bytes.extend_from_slice(c);
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
            }
        }
        bytes
    }

    /// What the upstream must report in `X-Req-Hash` if it got this request unharmed.
    pub fn req_hash(&self) -> u64 {
        req_hash(self.method, &self.target, &self.body)
    }

    /// The body the upstream answers this request with.
    pub fn expected_body(&self) -> Vec<u8> {
        answer_body(&self.target, self.resp_len)
    }
}

/// FNV-1a of `METHOD SP target LF body`: what the upstream echoes in `X-Req-Hash`.
pub fn req_hash(method: &str, target: &str, body: &[u8]) -> u64 {
    let mut bytes = Vec::with_capacity(method.len() + target.len() + 2 + body.len());
    bytes.extend_from_slice(method.as_bytes());
    bytes.push(b' ');
    bytes.extend_from_slice(target.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(body);
    checksum(&bytes)
}

/// The answer body for a target: pseudo-random bytes seeded by the target, so a body that
/// belongs to another request, or is shifted by one byte, never matches by accident.
pub fn answer_body(target: &str, len: usize) -> Vec<u8> {
    payload(len, checksum(target.as_bytes()))
}

/// The value of `key` in the target's query string.
fn query_value<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

// ------------------------------------------------------------------------------- the upstream

/// Where one mock connection is in its life; the lock around it is what keeps the outside
/// closer from cutting a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Accepted, no request served yet (a fresh connection, never "pooled").
    Fresh,
    /// Between reading a request head and finishing the reply.
    Busy,
    /// Served at least one request and waits for the next head: idle in hearth's pool.
    Idle,
    /// Closed from outside; the serving thread must not answer anything more.
    Closed,
}

struct MockConn {
    id: usize,
    /// A clone of the served socket, to shut it down from outside.
    stream: TcpStream,
    state: Mutex<ConnState>,
}

/// Counters of one `HashUpstream`; summed across restarts by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MockStats {
    pub accepted: usize,
    pub requests: usize,
    /// Idle connections closed from outside (`close_idle`).
    pub closed_idle: usize,
    /// Connections the mock closed right after a reply (`set_close_after_reply`).
    pub closed_after_reply: usize,
    /// Requests read from a connection that was closed under them: never answered.
    pub dropped: usize,
    /// Connections open at the moment of the kill.
    pub killed_open: usize,
}

impl std::ops::AddAssign for MockStats {
    fn add_assign(&mut self, o: MockStats) {
        self.accepted += o.accepted;
        self.requests += o.requests;
        self.closed_idle += o.closed_idle;
        self.closed_after_reply += o.closed_after_reply;
        self.dropped += o.dropped;
        self.killed_open += o.killed_open;
    }
}

struct MockShared {
    stop: AtomicBool,
    close_after_reply_pct: AtomicU32,
    accepted: AtomicUsize,
    requests: AtomicUsize,
    closed_idle: AtomicUsize,
    closed_after_reply: AtomicUsize,
    dropped: AtomicUsize,
    live_threads: AtomicUsize,
    conns: Mutex<Vec<Arc<MockConn>>>,
    /// Protocol errors: what hearth sent that the mock could not parse. Must stay empty.
    errors: Mutex<Vec<String>>,
}

/// The hashing upstream; see the module docs for the modes.
pub struct HashUpstream {
    addr: SocketAddr,
    shared: Arc<MockShared>,
    acceptor: Option<JoinHandle<()>>,
    rng: Mutex<Rng>,
}

impl HashUpstream {
    /// Starts on 127.0.0.1 with a port the kernel picks.
    pub fn start() -> HashUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("hash mock: bind 127.0.0.1:0");
        HashUpstream::with_listener(listener)
    }

    /// Starts on `addr`, the address of a killed mock; retries the bind for up to `within`
    /// (std sets SO_REUSEADDR, so only a listener still bound there can refuse it).
    pub fn start_on(addr: SocketAddr, within: Duration) -> HashUpstream {
        let deadline = Instant::now() + within;
        loop {
            match TcpListener::bind(addr) {
                Ok(l) => return HashUpstream::with_listener(l),
                Err(e) if Instant::now() >= deadline => {
                    panic!("hash mock: rebinding {addr} failed for {within:?}: {e}")
                }
                Err(_) => thread::sleep(NAP_SLICE),
            }
        }
    }

    fn with_listener(listener: TcpListener) -> HashUpstream {
        let addr = listener
            .local_addr()
            .expect("hash mock: local_addr of a bound listener");
        let shared = Arc::new(MockShared {
            stop: AtomicBool::new(false),
            close_after_reply_pct: AtomicU32::new(0),
            accepted: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            closed_idle: AtomicUsize::new(0),
            closed_after_reply: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            live_threads: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("hash-accept-{}", addr.port()))
            .spawn(move || mock_accept(listener, s))
            .expect("hash mock: spawn accept thread");
        HashUpstream {
            addr,
            shared,
            acceptor: Some(acceptor),
            rng: Mutex::new(Rng::new(u64::from(addr.port()))),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, close a connection right after a reply with this probability, without
    /// having said `Connection: close`: the upstream's side of the keep-alive race.
    pub fn set_close_after_reply(&self, pct: u32) {
        self.shared
            .close_after_reply_pct
            .store(pct, Ordering::SeqCst);
    }

    /// Connections open right now.
    pub fn open_now(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Connections idle (served at least once, waiting for a head) right now.
    pub fn idle_now(&self) -> usize {
        lock(&self.shared.conns)
            .iter()
            .filter(|c| *lock(&c.state) == ConnState::Idle)
            .count()
    }

    /// Closes up to `n` idle connections picked at random; returns how many it closed.
    pub fn close_idle(&self, n: usize) -> usize {
        let conns: Vec<Arc<MockConn>> = lock(&self.shared.conns).clone();
        let mut rng = lock(&self.rng);
        let mut closed = 0;
        let mut order: Vec<usize> = (0..conns.len()).collect();
        // Fisher-Yates, so the victims are spread over the pool rather than the oldest.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for i in order {
            if closed >= n {
                break;
            }
            let c = &conns[i];
            let mut state = lock(&c.state);
            if *state == ConnState::Idle {
                *state = ConnState::Closed;
                let _ = c.stream.shutdown(Shutdown::Both);
                closed += 1;
            }
        }
        self.shared.closed_idle.fetch_add(closed, Ordering::SeqCst);
        closed
    }

    /// Protocol errors the mock met in what hearth sent.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }

    pub fn stats(&self) -> MockStats {
        let s = &self.shared;
        MockStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            requests: s.requests.load(Ordering::SeqCst),
            closed_idle: s.closed_idle.load(Ordering::SeqCst),
            closed_after_reply: s.closed_after_reply.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst),
            killed_open: 0,
        }
    }

    /// Stops like a killed process: the listener goes away and every connection is closed at
    /// once, idle or in the middle of a reply. Returns the final counters and the errors met.
    pub fn kill(mut self) -> (MockStats, Vec<String>) {
        let open = self.open_now();
        self.stop();
        let mut stats = self.stats();
        stats.killed_open = open;
        (stats, self.errors())
    }

    fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // The accept loop is blocked in accept(); one connection wakes it to see the flag, and
        // joining it closes the listener before anything else happens.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = acceptor.join();
        for c in lock(&self.shared.conns).iter() {
            *lock(&c.state) = ConnState::Closed;
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        wait_until(MOCK_STOP_GRACE, || {
            self.shared.live_threads.load(Ordering::SeqCst) == 0
        });
    }
}

impl Drop for HashUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mock_accept(listener: TcpListener, shared: Arc<MockShared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((stream, _)) = accepted else {
            // Transient (e.g. out of descriptors); back off instead of spinning.
            thread::sleep(NAP_SLICE);
            continue;
        };
        let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let conn = Arc::new(MockConn {
            id,
            stream: clone,
            state: Mutex::new(ConnState::Fresh),
        });
        lock(&shared.conns).push(Arc::clone(&conn));
        shared.live_threads.fetch_add(1, Ordering::SeqCst);
        let s = Arc::clone(&shared);
        let c = Arc::clone(&conn);
        let spawned = thread::Builder::new()
            .name(format!("hash-conn-{id}"))
            .spawn(move || {
                mock_serve(&s, &c, stream);
                lock(&s.conns).retain(|x| x.id != c.id);
                s.live_threads.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            lock(&shared.conns).retain(|x| x.id != id);
            shared.live_threads.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn mock_error(shared: &MockShared, conn: &MockConn, what: String) {
    if !shared.stop.load(Ordering::SeqCst) && *lock(&conn.state) != ConnState::Closed {
        lock(&shared.errors).push(format!("conn {}: {what}", conn.id));
    }
}

/// Serves requests until the peer closes, a fault ends the connection, or it is closed from
/// outside.
fn mock_serve(shared: &MockShared, conn: &MockConn, stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(MOCK_WRITE_TIMEOUT));
    let mut wire = Wire::new(stream);
    let mut rng = Rng::new(0x5eed ^ conn.id as u64);
    loop {
        let head = match wire.read_head(MAX_HEAD_BYTES) {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                // A reset or an EOF inside a head is hearth giving up on the connection (e.g.
                // its client left); anything else is a framing error worth failing on.
                if e.kind() == io::ErrorKind::InvalidData {
                    mock_error(shared, conn, format!("reading a head: {e}"));
                }
                return;
            }
        };
        {
            let mut state = lock(&conn.state);
            if *state == ConnState::Closed {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            *state = ConnState::Busy;
        }
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        if let Err(e) = parsed.parse(&head) {
            mock_error(shared, conn, format!("unparsable head ({e})"));
            return;
        }
        let method = parsed.method.unwrap_or("").to_string();
        let target = parsed.path.unwrap_or("").to_string();
        let headers = wire::owned_headers(parsed.headers);
        let body = match wire::framing_from_headers(&headers, false) {
            Ok(Framing::Length(n)) => wire.take_exact(n),
            Ok(Framing::Chunked) => wire.read_chunked().map(|c| c.body),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    mock_error(shared, conn, format!("request body of {target}: {e}"));
                }
                return;
            }
        };
        shared.requests.fetch_add(1, Ordering::SeqCst);
        if !reply(shared, conn, &mut wire, &method, &target, &body) {
            return;
        }
        let mut state = lock(&conn.state);
        if *state == ConnState::Closed {
            return;
        }
        let pct = shared.close_after_reply_pct.load(Ordering::SeqCst);
        if pct > 0 && rng.chance(pct) {
            *state = ConnState::Closed;
            shared.closed_after_reply.fetch_add(1, Ordering::SeqCst);
            let _ = wire.stream().shutdown(Shutdown::Both);
            return;
        }
        *state = ConnState::Idle;
    }
}

/// The whole answer for a request on the wire: head and framed body.
fn answer_bytes(method: &str, target: &str, body: &[u8], conn: usize) -> (Vec<u8>, usize) {
    let len = query_value(target, "len")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let out = answer_body(target, len);
    let chunked = query_value(target, "chunked") == Some("1");
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nX-Req-Hash: {:016x}\r\nX-Body-Hash: {:016x}\r\nX-Conn: {conn}\r\n",
        req_hash(method, target, body),
        checksum(&out)
    );
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", out.len()));
    }
    let head_len = head.len();
    let mut bytes = head.into_bytes();
    if chunked {
        // Uneven chunk sizes, so chunk boundaries fall everywhere relative to hearth's buffers.
        let mut rng = Rng::new(checksum(target.as_bytes()));
        let mut rest = &out[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(9000)).min(rest.len());
            bytes.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            bytes.extend_from_slice(&rest[..n]);
            bytes.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
    } else {
        bytes.extend_from_slice(&out);
    }
    (bytes, head_len)
}

/// Sleeps `d` in slices, returning early when the mock stops or the connection is closed.
fn mock_nap(shared: &MockShared, d: Duration) {
    let until = Instant::now() + d;
    while !shared.stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(NAP_SLICE));
    }
}

/// Answers one request as its mode says; false when the connection is over.
fn reply(
    shared: &MockShared,
    conn: &MockConn,
    wire: &mut Wire,
    method: &str,
    target: &str,
    body: &[u8],
) -> bool {
    let mode = target
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let pause = Duration::from_millis(
        query_value(target, "ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let (bytes, head_len) = answer_bytes(method, target, body, conn.id);
    let half = head_len + (bytes.len() - head_len) / 2;
    let reset = |wire: &mut Wire| {
        // Linger zero turns the close into a RST; both descriptors must go for the close to
        // happen, and the clone goes when the serving thread removes the connection.
        let _ = socket2::SockRef::from(wire.stream()).set_linger(Some(Duration::ZERO));
        let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
    };
    match mode {
        "reset" => {
            let _ = wire.write_all(&bytes[..half]);
            mock_nap(shared, MID_BODY_PAUSE);
            reset(wire);
            false
        }
        "resetfirst" => {
            reset(wire);
            false
        }
        "hang" => {
            mock_nap(shared, pause);
            wire.write_all(&bytes).is_ok()
        }
        "hangmid" => {
            if wire.write_all(&bytes[..half]).is_err() {
                return false;
            }
            mock_nap(shared, pause);
            wire.write_all(&bytes[half..]).is_ok()
        }
        _ => wire.write_all(&bytes).is_ok(),
    }
}

// ------------------------------------------------------------------------------- the checker

/// What a client got for one request, checked end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The whole answer, with the right hashes and the right body.
    Ok,
    /// An answer hearth made itself (no `X-Req-Hash`), with this status.
    Answered(u16),
    /// The connection ended before any byte of the answer.
    CutBeforeHead,
    /// The connection ended inside the answer; every byte before the cut was right.
    CutMidBody,
    /// The client stopped reading on purpose (`ClientAbort`) after checking a prefix.
    Aborted,
    /// Nothing more arrived within `CLIENT_READ_TIMEOUT`.
    Stalled,
    /// The answer belongs to another request (`X-Req-Hash` differs).
    Misrouted(String),
    /// A wrong byte: a body that differs, a bad hash, broken framing.
    Corrupt(String),
}

impl Outcome {
    /// A short label for tallies.
    pub fn label(&self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Answered(s) => format!("answered-{s}"),
            Outcome::CutBeforeHead => "cut-before-head".into(),
            Outcome::CutMidBody => "cut-mid-body".into(),
            Outcome::Aborted => "aborted-by-client".into(),
            Outcome::Stalled => "stalled".into(),
            Outcome::Misrouted(_) => "MISROUTED".into(),
            Outcome::Corrupt(_) => "CORRUPT".into(),
        }
    }

    pub fn is_wrong_byte(&self) -> bool {
        matches!(self, Outcome::Misrouted(_) | Outcome::Corrupt(_))
    }
}

/// The result of reading one answer: the outcome and whether the connection can carry another
/// request.
#[derive(Debug)]
pub struct Checked {
    pub outcome: Outcome,
    pub reusable: bool,
}

fn cut(e: &io::Error, mid_body: bool) -> Outcome {
    if super::client::is_timeout(e) {
        Outcome::Stalled
    } else if e.kind() == io::ErrorKind::InvalidData {
        Outcome::Corrupt(format!("framing: {e}"))
    } else if mid_body {
        Outcome::CutMidBody
    } else {
        Outcome::CutBeforeHead
    }
}

fn done(outcome: Outcome, reusable: bool) -> Checked {
    Checked { outcome, reusable }
}

/// Takes one CRLF-terminated line from the wire, without the CRLF.
fn take_line(wire: &mut Wire) -> io::Result<Vec<u8>> {
    loop {
        if let Some(pos) = wire::find(wire.pending(), b"\r\n") {
            let mut line = wire.take_exact(pos + 2)?;
            line.truncate(pos);
            return Ok(line);
        }
        if wire.pending().len() > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk line over 4 KiB",
            ));
        }
        if wire.fill()? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed inside a chunked body",
            ));
        }
    }
}

/// Decodes a chunked body into `out` as it arrives, so a cut leaves the bytes received so far.
fn read_chunked_into(wire: &mut Wire, out: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let line = take_line(wire)?;
        let text = std::str::from_utf8(&line).unwrap_or("?");
        let size = usize::from_str_radix(text, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("chunk size line {text:?}"),
            )
        })?;
        if size == 0 {
            // No trailers are ever sent by the mock: the empty line must follow.
            let end = take_line(wire)?;
            if !end.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "trailer after the last chunk",
                ));
            }
            return Ok(());
        }
        let mut left = size;
        while left > 0 {
            if wire.pending().is_empty() && wire.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside a chunk",
                ));
            }
            let n = left.min(wire.pending().len());
            out.extend_from_slice(&wire.take_exact(n)?);
            left -= n;
        }
        if wire.take_exact(2)? != b"\r\n" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk data not followed by CRLF",
            ));
        }
    }
}

/// Reads a Content-Length body into `out` as it arrives, until `out` holds `len` bytes; a
/// client stopping early on purpose passes fewer than the whole length.
fn read_length_into(wire: &mut Wire, out: &mut Vec<u8>, len: usize) -> io::Result<()> {
    while out.len() < len {
        if wire.pending().is_empty() && wire.fill()? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed inside a body",
            ));
        }
        let n = (len - out.len()).min(wire.pending().len());
        out.extend_from_slice(&wire.take_exact(n)?);
    }
    Ok(())
}

/// Where `got` first differs from `want` (as a prefix), for messages that must stay short.
fn prefix_mismatch(got: &[u8], want: &[u8]) -> Option<usize> {
    if got.len() > want.len() {
        return Some(want.len());
    }
    got.iter().zip(want).position(|(a, b)| a != b)
}

/// Reads the answer to `probe` and checks it end to end. With `abort_after = Some(n)`, stops
/// after `n` body bytes (checked as a prefix) and reports `Aborted`.
pub fn read_checked(wire: &mut Wire, probe: &Probe, abort_after: Option<usize>) -> Checked {
    let head = match wire.read_head(MAX_HEAD_BYTES) {
        Ok(Some(h)) => h,
        Ok(None) => return done(Outcome::CutBeforeHead, false),
        Err(e) => return done(cut(&e, false), false),
    };
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut slots);
    if let Err(e) = parsed.parse(&head) {
        let text = String::from_utf8_lossy(&head[..head.len().min(200)]).into_owned();
        return done(
            Outcome::Corrupt(format!("{}: unparsable head ({e}): {text:?}", probe.target)),
            false,
        );
    }
    let status = parsed.code.unwrap_or(0);
    let minor = parsed.version.unwrap_or(1);
    let headers = wire::owned_headers(parsed.headers);
    let keep = minor == 1 && !wire::has_token(&headers, "connection", "close");
    let framing = match wire::framing_from_headers(&headers, true) {
        Ok(f) => f,
        Err(e) => {
            return done(
                Outcome::Corrupt(format!("{}: framing of the answer: {e}", probe.target)),
                false,
            )
        }
    };
    let Some(got_req) = wire::header(&headers, "x-req-hash") else {
        // hearth's own answer (502, 503, 504, ...): a whole, well-framed message.
        let body = match framing {
            Framing::Length(n) => wire.take_exact(n).map(drop),
            Framing::Chunked => wire.read_chunked().map(drop),
            Framing::Empty => Ok(()),
            Framing::Close => wire.read_to_close().map(drop),
        };
        return match body {
            Ok(()) => done(Outcome::Answered(status), keep && framing != Framing::Close),
            Err(e) => done(cut(&e, true), false),
        };
    };
    let want_req = format!("{:016x}", probe.req_hash());
    if got_req != want_req {
        return done(
            Outcome::Misrouted(format!(
                "{} {}: X-Req-Hash {got_req}, want {want_req} (upstream conn {:?})",
                probe.method,
                probe.target,
                wire::header(&headers, "x-conn")
            )),
            false,
        );
    }
    if status != 200 {
        return done(
            Outcome::Corrupt(format!("{}: status {status} with a hash", probe.target)),
            false,
        );
    }
    let want = probe.expected_body();
    if let Framing::Length(n) = framing {
        if n != want.len() {
            return done(
                Outcome::Corrupt(format!(
                    "{}: Content-Length {n}, want {}",
                    probe.target,
                    want.len()
                )),
                false,
            );
        }
    }
    let mut body = Vec::with_capacity(want.len());
    let read = match (framing, abort_after) {
        (Framing::Length(_), Some(n)) => read_length_into(wire, &mut body, n.min(want.len())),
        (Framing::Length(n), None) => read_length_into(wire, &mut body, n),
        (Framing::Chunked, _) => read_chunked_into(wire, &mut body),
        (f, _) => {
            return done(
                Outcome::Corrupt(format!("{}: unexpected framing {f:?}", probe.target)),
                false,
            )
        }
    };
    if let Some(at) = prefix_mismatch(&body, &want) {
        return done(
            Outcome::Corrupt(format!(
                "{}: body differs at byte {at} of {} received ({} expected)",
                probe.target,
                body.len(),
                want.len()
            )),
            false,
        );
    }
    if let Err(e) = read {
        return done(cut(&e, true), false);
    }
    if abort_after.is_some() {
        return done(Outcome::Aborted, false);
    }
    if body.len() != want.len() {
        return done(
            Outcome::Corrupt(format!(
                "{}: body of {} bytes, want {}",
                probe.target,
                body.len(),
                want.len()
            )),
            false,
        );
    }
    let want_body_hash = format!("{:016x}", checksum(&body));
    if wire::header(&headers, "x-body-hash") != Some(want_body_hash.as_str()) {
        return done(
            Outcome::Corrupt(format!(
                "{}: X-Body-Hash {:?} does not match the body received ({want_body_hash})",
                probe.target,
                wire::header(&headers, "x-body-hash")
            )),
            false,
        );
    }
    done(Outcome::Ok, keep)
}

/// Opens a client connection with the read timeout the checker relies on.
pub fn dial(addr: SocketAddr) -> io::Result<Wire> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(CLIENT_READ_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_READ_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(Wire::new(s))
}

/// Writes `bytes` in two writes split at `at`, pausing between them so hearth reads them apart.
pub fn send_split(wire: &mut Wire, bytes: &[u8], at: usize, pause: Duration) -> io::Result<()> {
    let at = at.min(bytes.len());
    if at > 0 {
        wire.write_all(&bytes[..at])?;
        thread::sleep(pause);
    }
    if at < bytes.len() {
        wire.write_all(&bytes[at..])?;
    }
    Ok(())
}

/// Closes a client socket with a reset instead of a FIN.
pub fn reset_close(wire: Wire) {
    let _ = socket2::SockRef::from(wire.stream()).set_linger(Some(Duration::ZERO));
    drop(wire);
}

// ------------------------------------------------------------------------------- tallies

/// Outcomes counted by request kind, phase and label, plus samples of anything wrong.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub counts: BTreeMap<(Kind, usize, String), u64>,
    /// Shortest and longest time to each (kind, outcome label), from send to outcome.
    pub latency: BTreeMap<(Kind, String), (Duration, Duration)>,
    /// Up to 20 descriptions of wrong bytes, stalls and other surprises.
    pub samples: Vec<String>,
    pub connect_failures: u64,
}

/// `phase` value for a request that started in one phase and ended in another.
pub const ACROSS_PHASES: usize = usize::MAX;

impl Tally {
    pub fn add(&mut self, kind: Kind, phase: usize, outcome: &Outcome, took: Duration) {
        let label = outcome.label();
        *self.counts.entry((kind, phase, label.clone())).or_insert(0) += 1;
        let e = self.latency.entry((kind, label)).or_insert((took, took));
        e.0 = e.0.min(took);
        e.1 = e.1.max(took);
        let surprising = outcome.is_wrong_byte() || *outcome == Outcome::Stalled;
        if surprising && self.samples.len() < 20 {
            self.samples.push(format!(
                "{kind} (phase {phase}): {outcome:?} after {took:?}"
            ));
        }
    }

    pub fn merge(&mut self, o: Tally) {
        for (k, v) in o.counts {
            *self.counts.entry(k).or_insert(0) += v;
        }
        for (k, (lo, hi)) in o.latency {
            let e = self.latency.entry(k).or_insert((lo, hi));
            e.0 = e.0.min(lo);
            e.1 = e.1.max(hi);
        }
        for s in o.samples {
            if self.samples.len() < 20 {
                self.samples.push(s);
            }
        }
        self.connect_failures += o.connect_failures;
    }

    /// Total over every entry matching `kind` (any if `None`), `phase` (any if `None`) and the
    /// label predicate.
    pub fn count(
        &self,
        kind: Option<Kind>,
        phase: Option<usize>,
        label: impl Fn(&str) -> bool,
    ) -> u64 {
        self.counts
            .iter()
            .filter(|((k, p, l), _)| {
                kind.is_none_or(|x| x == *k) && phase.is_none_or(|x| x == *p) && label(l)
            })
            .map(|(_, v)| v)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.count(None, None, |_| true)
    }

    /// Responses with a wrong byte in them: misrouted or corrupted.
    pub fn wrong_bytes(&self) -> u64 {
        self.count(None, None, |l| l == "MISROUTED" || l == "CORRUPT")
    }

    /// Labels seen for `kind`, other than those in `allowed`, with their counts.
    pub fn unexpected(&self, kind: Kind, phase: Option<usize>, allowed: &[&str]) -> Vec<String> {
        self.counts
            .iter()
            .filter(|((k, p, l), _)| {
                *k == kind && phase.is_none_or(|x| x == *p) && !allowed.contains(&l.as_str())
            })
            .map(|((k, p, l), v)| format!("{k} phase {p}: {v} x {l}"))
            .collect()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  {:<22} {:>6} {:<20} {:>8}",
            "kind", "phase", "outcome", "count"
        )?;
        for ((k, p, l), v) in &self.counts {
            let phase = if *p == ACROSS_PHASES {
                "across".to_string()
            } else {
                p.to_string()
            };
            let (lo, hi) = self
                .latency
                .get(&(*k, l.clone()))
                .copied()
                .unwrap_or_default();
            writeln!(
                f,
                "  {:<22} {:>6} {:<20} {:>8}   ({:.0?}..{:.0?})",
                k.to_string(),
                phase,
                l,
                v,
                lo,
                hi
            )?;
        }
        writeln!(f, "  connect failures: {}", self.connect_failures)?;
        for s in &self.samples {
            writeln!(f, "  sample: {s}")?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------- the load

/// What one load run does.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub threads: usize,
    /// Request kinds with their weights.
    pub mix: Vec<(Kind, u32)>,
    /// Requests per thread at most (a pipelined round counts as one).
    pub max_per_thread: usize,
    /// Wall time at most.
    pub duration: Duration,
    pub seed: u64,
    /// Largest answer body for ordinary requests.
    pub max_len: usize,
    /// Upstream pause of `Hang` and `HangMid` requests, in milliseconds.
    pub hang_ms: u64,
}

impl LoadSpec {
    pub fn new(addr: SocketAddr, threads: usize, mix: &[(Kind, u32)]) -> LoadSpec {
        LoadSpec {
            addr,
            threads,
            mix: mix.to_vec(),
            max_per_thread: 100_000,
            duration: Duration::from_secs(5),
            seed: 1,
            max_len: 40_000,
            hang_ms: 2_500,
        }
    }
}

/// A running load: threads that stop at their count or deadline, or when told to.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Set by the test to label requests with the phase they ran in.
    pub phase: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Tally>>,
    /// Requests completed so far, over all threads.
    pub done: Arc<AtomicUsize>,
}

impl Load {
    pub fn start(spec: &LoadSpec) -> Load {
        Load::start_in(spec, Arc::new(AtomicUsize::new(0)))
    }

    /// Starts a load whose requests are labelled with a phase shared with other loads.
    pub fn start_in(spec: &LoadSpec, phase: Arc<AtomicUsize>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + spec.duration;
        let threads = (0..spec.threads)
            .map(|t| {
                let spec = spec.clone();
                let stop = Arc::clone(&stop);
                let phase = Arc::clone(&phase);
                let done = Arc::clone(&done);
                thread::Builder::new()
                    .name(format!("load-{t}"))
                    .spawn(move || load_thread(&spec, t, deadline, &stop, &phase, &done))
                    .expect("spawn a load thread")
            })
            .collect();
        Load {
            stop,
            phase,
            threads,
            done,
        }
    }

    pub fn set_phase(&self, p: usize) {
        self.phase.store(p, Ordering::SeqCst);
    }

    pub fn completed(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests complete than when called; false past `within`.
    pub fn wait_more(&self, n: usize, within: Duration) -> bool {
        let from = self.completed();
        wait_until(within, || self.completed() >= from + n)
    }

    /// Waits for every thread to reach its count or deadline.
    pub fn join(mut self) -> Tally {
        let mut tally = Tally::default();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(part) => tally.merge(part),
                Err(_) => tally.samples.push("a load thread panicked".into()),
            }
        }
        tally
    }

    /// Tells every thread to stop after its current request, then joins them.
    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn pick(mix: &[(Kind, u32)], rng: &mut Rng) -> Kind {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut at = rng.below(total as usize) as u32;
    for (k, w) in mix {
        if at < *w {
            return *k;
        }
        at -= w;
    }
    mix.last().map_or(Kind::Get, |(k, _)| *k)
}

/// A request of `kind`, with a tag unique to this thread and sequence number.
pub fn probe_for(kind: Kind, tag: &str, rng: &mut Rng, max_len: usize, hang_ms: u64) -> Probe {
    let len = rng.below(max_len + 1);
    let body = |rng: &mut Rng| payload(rng.below(max_len + 1), rng.next_u64());
    let framing = |rng: &mut Rng| {
        if rng.chance(50) {
            BodyFraming::Length
        } else {
            BodyFraming::Chunked(1 + rng.below(5000))
        }
    };
    let maybe_chunked = |p: Probe, rng: &mut Rng| {
        if rng.chance(30) {
            p.chunked_answer()
        } else {
            p
        }
    };
    match kind {
        Kind::Get | Kind::Pipelined => maybe_chunked(Probe::new("GET", "ok", tag, len), rng),
        Kind::Post => {
            let b = body(rng);
            let f = framing(rng);
            maybe_chunked(Probe::new("POST", "ok", tag, len), rng).with_body(b, f)
        }
        Kind::PostKeyed => {
            let b = body(rng);
            let f = framing(rng);
            maybe_chunked(Probe::new("POST", "ok", tag, len).keyed(), rng).with_body(b, f)
        }
        Kind::ResetMid => {
            // At least a few KiB, so there is a middle to reset in.
            let p = Probe::new(
                if rng.chance(50) { "GET" } else { "POST" },
                "reset",
                tag,
                4096 + len,
            );
            maybe_chunked(p, rng)
        }
        Kind::ResetFirst => {
            Probe::new("POST", "resetfirst", tag, len).with_body(body(rng), BodyFraming::Length)
        }
        Kind::Hang => Probe::new("GET", "hang", tag, len).pause_ms(hang_ms),
        Kind::HangMid => {
            maybe_chunked(Probe::new("GET", "hangmid", tag, 4096 + len), rng).pause_ms(hang_ms)
        }
        // Far more than hearth's buffers and the sockets' queues hold, so the abort comes while
        // hearth still has the rest of the answer to move.
        Kind::ClientAbort => Probe::new("GET", "ok", tag, 1 << 20),
    }
}

fn load_thread(
    spec: &LoadSpec,
    t: usize,
    deadline: Instant,
    stop: &AtomicBool,
    phase: &AtomicUsize,
    done: &AtomicUsize,
) -> Tally {
    let mut rng = Rng::new(spec.seed.wrapping_mul(0x1_0000_0001).wrapping_add(t as u64));
    let mut tally = Tally::default();
    let mut conn: Option<Wire> = None;
    for seq in 0..spec.max_per_thread {
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            break;
        }
        let wire = match conn.as_mut() {
            Some(w) => w,
            None => match dial(spec.addr) {
                Ok(w) => conn.insert(w),
                Err(_) => {
                    tally.connect_failures += 1;
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let kind = pick(&spec.mix, &mut rng);
        let tag = format!("s{}t{t}n{seq}", spec.seed);
        let started = Instant::now();
        let p0 = phase.load(Ordering::SeqCst);
        let (outcomes, reusable) = match kind {
            Kind::Pipelined => {
                let probes: Vec<Probe> = (0..3)
                    .map(|i| {
                        let k = [Kind::Get, Kind::Post, Kind::Get][i];
                        probe_for(k, &format!("{tag}p{i}"), &mut rng, 3000, 0)
                    })
                    .collect();
                let bytes: Vec<u8> = probes.iter().flat_map(|p| p.bytes()).collect();
                let at = 1 + rng.below(bytes.len() - 1);
                pipelined_round(wire, &probes, &bytes, at, Duration::from_millis(1))
            }
            Kind::ClientAbort => {
                let p = probe_for(kind, &tag, &mut rng, spec.max_len, spec.hang_ms);
                let upto = rng.below(p.resp_len / 2);
                let c = match wire.write_all(&p.bytes()) {
                    Ok(()) => read_checked(wire, &p, Some(upto)),
                    Err(_) => done_cut(),
                };
                (vec![c.outcome], false)
            }
            _ => {
                let p = probe_for(kind, &tag, &mut rng, spec.max_len, spec.hang_ms);
                let c = match wire.write_all(&p.bytes()) {
                    Ok(()) => read_checked(wire, &p, None),
                    Err(_) => done_cut(),
                };
                (vec![c.outcome], c.reusable)
            }
        };
        let p1 = phase.load(Ordering::SeqCst);
        let at_phase = if p0 == p1 { p0 } else { ACROSS_PHASES };
        let took = started.elapsed();
        for o in &outcomes {
            tally.add(kind, at_phase, o, took);
        }
        done.fetch_add(1, Ordering::SeqCst);
        if !reusable {
            if let Some(w) = conn.take() {
                if kind == Kind::ClientAbort && rng.chance(50) {
                    reset_close(w);
                }
            }
        }
    }
    tally
}

fn done_cut() -> Checked {
    done(Outcome::CutBeforeHead, false)
}

/// Sends `probes` pipelined (their bytes split in two writes at `at`) and reads every answer in
/// order. Returns the outcomes and whether the connection is still usable.
pub fn pipelined_round(
    wire: &mut Wire,
    probes: &[Probe],
    bytes: &[u8],
    at: usize,
    pause: Duration,
) -> (Vec<Outcome>, bool) {
    if send_split(wire, bytes, at, pause).is_err() {
        return (vec![Outcome::CutBeforeHead], false);
    }
    let mut out = Vec::with_capacity(probes.len());
    for p in probes {
        let c = read_checked(wire, p, None);
        let go_on = c.reusable;
        out.push(c.outcome);
        if !go_on {
            return (out, false);
        }
    }
    (out, true)
}

// ------------------------------------------------------------------------------- the process

/// Resident set size of process `pid` in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Open descriptors of process `pid` (entries of /proc/PID/fd).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// What each open descriptor of `pid` points to, one per line, for failure messages.
pub fn fd_listing(pid: u32) -> String {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return format!("(no /proc/{pid}/fd)");
    };
    let mut lines: Vec<String> = dir
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map_or_else(|_| "?".into(), |t| t.display().to_string());
            format!("  fd {} -> {target}", e.file_name().to_string_lossy())
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// hearth's open descriptors once every worker is up (each core opens its poll and waker after
/// the first `listening on` line, so counting earlier misses some).
pub fn started_fds(h: &Hearth) -> usize {
    assert!(
        h.wait_log(&["started with"], Duration::from_secs(10)),
        "hearth never logged `started with`"
    );
    open_fds(h.pid()).expect("hearth's /proc/PID/fd")
}

/// Writes a progress line to stderr at once (test output is captured unless `--nocapture`).
pub fn say(line: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{line}");
}
