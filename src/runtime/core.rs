//! One core: a `mio::Poll`, its listeners, client and upstream connections, buffers, timer wheel,
//! upstream pool and counters, all owned by one thread and touched by no other.
//!
//! Invariants kept here:
//! - Every socket is registered once, for reading and writing, edge-triggered; readiness is kept
//!   in user space (`readable`/`writable` flags set by events, cleared by `WouldBlock` or a short
//!   read or write), so the hot path makes no `epoll_ctl` calls.
//! - Code that queues output for a socket attempts the write in the same pass.
//! - An idle client holds no buffer; an idle upstream connection holds no buffer and stays
//!   registered, so the moment it turns readable (EOF, reset, stray bytes) it is closed.
//! - Timers are lazy: a connection stores its deadline and the wheel holds at most a few entries
//!   per connection; an entry that fires early re-arms at the stored deadline.
//! - An upstream connection is in exactly one of: connecting, attached to one client, idle in its
//!   node's LRU list. An https connection stays connecting until its TLS handshake is done, so
//!   the connect timeout covers TCP and TLS.
//! - TLS (both sides) is a boxed rustls `Connection` beside the socket, driven by the same
//!   readiness flags (`End`): reads go socket -> `read_tls` -> `process_new_packets` ->
//!   `reader()`, writes `writer()` -> `write_tls` -> socket. For a TLS connection `readable`
//!   means "the socket or rustls may have bytes"; it is cleared only when both are drained.
//!   Whatever rustls queues (handshake, alerts, tickets) is written in the same pass, and at
//!   most one record's worth of plaintext waits inside rustls, so back-pressure stays with our
//!   buffers. A plain connection carries only a null `Option<Box<_>>` for all this.

use std::io::{self, Read, Write};
use std::mem;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use log::{debug, info, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, HandshakeKind, ServerConnection};

use crate::accesslog::{AccessLog, Outcome, Pending, Start};
use crate::balance::{self, Balancer, Latency, Load, Passive, Tried};
use crate::buf::{Buf, BufPool};
use crate::clock::Clock;
use crate::config::{Balance, Config, PassHost, PoolSettings};
use crate::http::answer::canned;
use crate::http::body::{self, BodyError, ChunkedDecoder};
use crate::http::head::{self, Header, Limits, ReqBody, RequestHead, RespBody, Version};
use crate::http::rewrite::{self, ClientSide, Forward, Offer, Upgrades};
use crate::lru::Handle;
use crate::metrics::Counters;
use crate::route::{Request, Router, Vars};
use crate::runtime::cause::{Cause, Context};
use crate::runtime::control::{Control, Handover};
use crate::runtime::generation::{
    host_override, ListenTls, PoolId, Process, Shared, UpSettings, UpTls,
};
use crate::slab::Slab;
use crate::sys::Raw;
use crate::timer::TimerWheel;
use crate::tls;
use crate::upstream::pool::{self, CloseReason, KeepAliveHint, NodeBudget, NodePool, Verdict};

const WAKER: Token = Token(usize::MAX);
const CONN_BASE: usize = 1 << 16;
/// Steps one drive may take before yielding to other connections.
const MAX_STEPS: usize = 64;
/// How long a closing client may keep sending before we stop reading and drop it.
const LINGER: Duration = Duration::from_secs(2);
/// Buffers one core may have checked out at once.
const MAX_BUFFERS: usize = 65_536;
/// Bytes per buffer (or `client.max_head_bytes` when larger). Only connections with bytes in
/// flight hold buffers; 32 KiB lets a 16 KiB response and its head pass in one read and one
/// write, where 16 KiB took two of each.
const BUF_BYTES: usize = 32_768;
/// Finished exchanges' boxes a core keeps for reuse.
const MAX_SPARE_EXCHANGES: usize = 1024;
/// After EMFILE/ENFILE, accepting pauses this long instead of spinning.
const ACCEPT_PAUSE_MS: u64 = 100;
/// At `max_client_connections`, how often a paused core looks whether it may accept again.
const CAP_RECHECK_MS: u64 = 50;
/// How often a core tops up `keepalive_pool.min_idle` after losses.
const WARM_EVERY_MS: u64 = 1_000;
/// Plaintext handed to rustls per write: one TLS record, so at most that much waits inside
/// rustls when the socket stops taking bytes.
const TLS_CHUNK: usize = 16_384;

fn client_token(i: usize) -> Token {
    Token(CONN_BASE + 2 * i)
}

fn up_token(i: usize) -> Token {
    Token(CONN_BASE + 2 * i + 1)
}

/// What an event's token names: the inverse of the tokens given at registration.
#[derive(Clone, Copy)]
enum Source {
    Waker,
    Listener(usize),
    Client(usize),
    Up(usize),
}

fn source(t: Token) -> Source {
    match t.0 {
        _ if t == WAKER => Source::Waker,
        n if n < CONN_BASE => Source::Listener(n),
        n if (n - CONN_BASE) % 2 == 0 => Source::Client((n - CONN_BASE) / 2),
        n => Source::Up((n - CONN_BASE) / 2),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKey {
    Client(usize),
    Up(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Something moved; look again.
    Continue,
    /// Nothing can move until an event or a timer.
    Wait,
    /// The client connection is gone.
    Closed,
}

/// How a request body arrives from the client.
#[derive(Debug)]
enum BodyIn {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// How a response body arrives from the upstream, and what the client gets of it.
#[derive(Debug)]
enum BodyOut {
    Length(u64),
    Chunked {
        dec: ChunkedDecoder,
        dechunk: bool,
        /// The upstream ends lines in LF alone: the body is framed afresh for the client.
        reframe: bool,
    },
    /// Delimited by the upstream closing.
    Close,
}

#[derive(Debug)]
enum Resp {
    Head,
    Body(BodyOut),
    Done,
}

/// One request/response exchange between a client and an upstream node.
#[derive(Debug)]
struct Exchange {
    node: PoolId,
    /// The tag of the SNI name its upstream connection must have been made for (see
    /// `Core::sni_names`); 0 where every connection of the pool fits.
    sni: u64,
    /// The upstream's settings as they were when the request arrived; a reload does not change
    /// a request in flight.
    set: UpSettings,
    up: Option<usize>,
    reused: bool,
    replayed: bool,
    /// Bytes for the upstream: the rewritten head, then body bytes. The first `sent` were written.
    to_up: Buf,
    sent: usize,
    /// Nothing has been dropped from the front of `to_up` since the head went in, so the request
    /// can be sent again from the start.
    intact: bool,
    replay_safe: bool,
    from_up: Option<Buf>,
    req: BodyIn,
    resp: Resp,
    resp_started: bool,
    /// A response head went to the client: from here on a failure can only cut the connection.
    answered: bool,
    up_eof: bool,
    head_request: bool,
    client_version: Version,
    req_keep_alive: bool,
    /// The protocols an Upgrade offered the upstream; a 101 for any other is refused.
    offer: Offer,
    keep_client: bool,
    up_reusable: bool,
    /// Stray bytes after the response: never reuse that connection.
    up_dirty: bool,
    /// The upstream declined reuse (`Connection: close`, HTTP/1.0 without keep-alive, or a
    /// close-delimited body).
    up_said_close: bool,
    hint: KeepAliveHint,
    queued_at: u64,
    /// When the request head was parsed.
    started: u64,
    /// The final response status, and response body bytes relayed, for the access log.
    status: u16,
    sent_body: u64,
    /// Last time the upstream made progress (connect started, bytes read or written).
    up_progress: u64,
    /// Bytes written to the upstream in this try, and how many of them the head takes, so a
    /// failure can say how much of the body had gone.
    wrote: u64,
    head_len: u64,
    /// The upstream stopped taking the request (reset or closed while it was being sent). Its
    /// answer, if it sent one first, still goes to the client.
    send_failed: bool,
    /// The answer is complete and the rest of the request body is being sent on so that the
    /// connection can be pooled: give up at this time (0: not draining) ...
    drain_until: u64,
    /// ... or once this many more request bytes would be needed.
    drain_left: u64,
}

/// A request body still arriving when its answer is complete is sent on, so the upstream
/// connection stays reusable, when no more than this much of it is left ...
const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// ... and it arrives within this long.
const DRAIN_TIMEOUT_MS: u64 = 2_000;

/// What a request needs to move to another node of its upstream. Kept by client id in the
/// core rather than in `Exchange`, which every client slot makes room for, so an idle client
/// stays small; written when the request starts, so a stale entry is never read.
#[derive(Debug, Clone, Copy, Default)]
struct Tries {
    /// The upstream's index in the generation the request started in (`generation`); a reload
    /// renumbers upstreams, so a request from an older generation is not moved.
    upstream: usize,
    generation: u64,
    /// The request's key on the hash ring (chash only), so a retry walks on from the same point.
    hash: u64,
    tried: Tried,
    /// Further nodes that may still be tried.
    left: u32,
    /// No new try starts at or after this time (from `retry_timeout`); 0: no limit.
    until: u64,
    /// When the try on the current node began, for the node's latency average.
    tried_at: u64,
}

#[derive(Debug)]
struct Tunnel {
    up: usize,
    from_up: Option<Buf>,
    /// Inactivity limit (the upstream's read timeout).
    idle_ms: u64,
}

// The exchange is boxed so that a step moves a pointer, not the few hundred bytes of the
// exchange (each step takes the phase out of the client and puts one back, and the step
// functions pass the exchange by value: inline, that was some 20 memcpy calls a request). The
// boxes come from the core's free list (`Core::spare`), so a request allocates nothing.
#[derive(Debug)]
enum Phase {
    /// Waiting for (the rest of) a request head; the keep-alive idle state between requests.
    Head,
    Exchange(Box<Exchange>),
    Tunnel(Tunnel),
    /// Writing what is left in `wbuf`, then closing.
    Closing,
    /// Write side shut; reading and discarding until EOF or the linger deadline, so the client
    /// reads our last answer instead of a reset.
    Lingering,
}

struct Client {
    sock: TcpStream,
    /// The TLS session of a client that came in on a TLS listener.
    tls: Option<Box<Connection>>,
    ip: IpAddr,
    readable: bool,
    writable: bool,
    /// The peer's FIN (or an error) was reported by an event; sticky.
    hup: bool,
    eof: bool,
    rbuf: Option<Buf>,
    wbuf: Option<Buf>,
    phase: Phase,
    served: u64,
    accepted_at: u64,
    last_active: u64,
    head_started: Option<u64>,
    last_write: u64,
    deadline: u64,
    timer_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpState {
    Connecting,
    /// Connected and owned by a client (or, briefly, by nobody while being handed over).
    Active,
    Idle(Handle),
    /// The connect failed, for this reason; the owner will notice and close it.
    Broken(Cause),
}

struct Upstream {
    sock: TcpStream,
    /// The TLS session of an https connection; kept while the connection is pooled.
    tls: Option<Box<Connection>>,
    /// TCP is up and the TLS handshake runs (the state is still `Connecting`).
    handshaking: bool,
    node: PoolId,
    addr: SocketAddr,
    /// The node's process-wide budget, and the caps it was opened under.
    budget: Arc<NodeBudget>,
    max_connections: u32,
    max_connecting: u32,
    state: UpState,
    owner: Option<usize>,
    readable: bool,
    writable: bool,
    hup: bool,
    opened_at: u64,
    served: u64,
    deadline: u64,
    timer_at: u64,
    idle_reason: CloseReason,
    /// What the upstream last said about keeping the connection (Keep-Alive timeout and max).
    hint: KeepAliveHint,
    /// When it last went idle, for the idle-age histograms.
    idle_since: u64,
    /// How long its connect took, for the access log.
    connect_ms: u64,
    /// The tag of the SNI name it was made for (`tls::sni_tag`); 0 for pools with one name.
    sni: u64,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The client went away, broke the connection or stopped reading.
    ClientGone(Cause),
    /// The client sent something we answer for with the cause's status.
    ClientBad(Cause),
    /// The upstream connection failed before or while answering.
    UpstreamGone(Cause),
    /// The upstream sent something invalid.
    UpstreamBad(Cause),
}

impl Fault {
    fn cause(self) -> Cause {
        match self {
            Fault::ClientGone(c)
            | Fault::ClientBad(c)
            | Fault::UpstreamGone(c)
            | Fault::UpstreamBad(c) => c,
        }
    }
}

enum ReadOutcome {
    Data,
    Blocked,
    Eof,
    Failed,
}

/// Reads once into `buf`. `hup`: the peer's FIN was already reported, so a short read must not
/// clear readiness (no further edge will come for the EOF that is still to be read).
fn read_into(sock: &mut TcpStream, buf: &mut Buf, ready: &mut bool, hup: bool) -> ReadOutcome {
    let spare = buf.spare_mut();
    if spare.is_empty() {
        return ReadOutcome::Blocked;
    }
    let want = spare.len();
    loop {
        match Raw::of(sock).read(spare) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => {
                buf.fill(n);
                // A short read drained the socket; the next arrival raises a new edge.
                if n < want && !hup {
                    *ready = false;
                }
                return ReadOutcome::Data;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *ready = false;
                return ReadOutcome::Blocked;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadOutcome::Failed,
        }
    }
}

/// How much of a chunked body to re-frame into `room` bytes at once: what `body::reframe` may
/// write for it must fit. A decoder that takes lone LFs may write up to half as much again.
fn reframe_window(room: usize, lenient: bool) -> usize {
    let room = room.saturating_sub(body::REFRAME_SLACK);
    if lenient {
        room / 3 * 2
    } else {
        room
    }
}

/// Body bytes at least this long go to a plain client straight from the upstream buffer (see
/// [`queue_body`]); shorter ones are copied, which costs less than the second iovec.
const DIRECT_MIN: usize = 4_096;

/// Queues response body `bytes` for the client, behind what `w` already holds. When the client is
/// plain TCP and writable and `bytes` is long, both go out at once in one `sendmsg` straight from
/// the upstream's buffer, so the body is not copied into `w` first (16 KiB answers spent more
/// time in that copy than in the rest of hearth's user-space work); only what the socket did not
/// take is copied. A socket error sends nothing here: the bytes are queued and the next flush
/// meets the error and closes as it always does. Returns whether anything was written.
fn queue_body(
    sock: &TcpStream,
    plain: bool,
    writable: &mut bool,
    w: &mut Buf,
    bytes: &[u8],
) -> bool {
    let mut sent = 0;
    let mut wrote = false;
    if plain && *writable && bytes.len() >= DIRECT_MIN {
        let held = w.len();
        let parts = [io::IoSlice::new(w.filled()), io::IoSlice::new(bytes)];
        let n = loop {
            match Raw::of(sock).write_vectored(&parts) {
                Ok(n) => {
                    if n < held + bytes.len() {
                        // The send buffer is full; wait for the next writable edge.
                        *writable = false;
                    }
                    break n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *writable = false;
                    break 0;
                }
                // Readiness stays as it is, so the flush that follows writes, meets the error
                // and closes; cleared, nothing would ever look at this socket again.
                Err(_) => break 0,
            }
        };
        w.consume(n.min(held));
        sent = n.saturating_sub(held);
        wrote = n > 0;
    }
    w.push(&bytes[sent..]);
    wrote
}

/// Writes `data`; returns bytes written, or Err when the peer is gone.
fn write_from(sock: &mut TcpStream, data: &[u8], ready: &mut bool) -> Result<usize, ()> {
    let mut done = 0;
    while done < data.len() && *ready {
        match Raw::of(sock).write(&data[done..]) {
            Ok(0) => return Err(()),
            Ok(n) => {
                done += n;
                if done < data.len() {
                    // The send buffer is full; wait for the next writable edge.
                    *ready = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *ready = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(done)
}

/// One side of a connection as the I/O paths see it: the socket, its TLS session if any, and
/// its user-space readiness. Built from a `Client` or `Upstream` with `end!`, which borrows the
/// fields one by one so the connection's buffers stay free to borrow beside it.
struct End<'a> {
    sock: &'a mut TcpStream,
    tls: Option<&'a mut Connection>,
    readable: &'a mut bool,
    writable: &'a mut bool,
    hup: bool,
}

macro_rules! end {
    ($c:expr) => {
        End {
            sock: &mut $c.sock,
            tls: $c.tls.as_deref_mut(),
            readable: &mut $c.readable,
            writable: &mut $c.writable,
            hup: $c.hup,
        }
    };
}

/// The socket as rustls reads it, noting whether the last read came up short (the socket is
/// drained, so readiness may be cleared as for a plain read).
struct ShortRead<'a> {
    sock: &'a mut TcpStream,
    short: bool,
}

impl Read for ShortRead<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = Raw::of(self.sock).read(b)?;
        self.short = n < b.len();
        Ok(n)
    }
}

/// Writes what rustls has queued. Ok(progress), or Err when the peer is gone.
fn tls_flush(sock: &mut TcpStream, tls: &mut Connection, writable: &mut bool) -> Result<bool, ()> {
    let mut progress = false;
    while tls.wants_write() && *writable {
        match tls.write_tls(&mut Raw::of(sock)) {
            Ok(0) => return Err(()),
            Ok(_) => progress = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(progress)
}

/// What one `tls_feed` brought.
enum Fed {
    /// Nothing to read now; readiness was cleared.
    Blocked,
    /// Records were read and processed.
    Records,
    /// The socket is at EOF (rustls knows; its reader reports it).
    Eof,
    /// A TLS or socket error, after the alert rustls queued was sent.
    Error(String),
}

/// Feeds rustls one read from the socket, processes it, and sends what that queued.
fn tls_feed(
    sock: &mut TcpStream,
    tls: &mut Connection,
    readable: &mut bool,
    writable: &mut bool,
    hup: bool,
) -> Fed {
    let eof = loop {
        let mut src = ShortRead { sock, short: false };
        match tls.read_tls(&mut src) {
            Ok(0) => break true,
            Ok(_) => {
                if src.short && !hup {
                    *readable = false;
                }
                break false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                return Fed::Blocked;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Fed::Error(e.to_string()),
        }
    };
    let processed = tls.process_new_packets();
    // Handshake replies, alerts and key updates go out in the same pass.
    let flushed = tls_flush(sock, tls, writable);
    match (processed, flushed) {
        (Err(e), _) => Fed::Error(e.to_string()),
        (Ok(_), Err(())) => Fed::Error("connection reset".into()),
        (Ok(_), Ok(_)) if eof => Fed::Eof,
        (Ok(_), Ok(_)) => Fed::Records,
    }
}

impl End<'_> {
    /// Reads once into `buf` (plaintext, through TLS when the connection has it).
    fn read_into(&mut self, buf: &mut Buf) -> ReadOutcome {
        let Some(tls) = self.tls.as_deref_mut() else {
            return read_into(self.sock, buf, self.readable, self.hup);
        };
        loop {
            let spare = buf.spare_mut();
            let want = spare.len();
            if want == 0 {
                return ReadOutcome::Blocked;
            }
            match tls.reader().read(spare) {
                Ok(0) => return ReadOutcome::Eof, // close_notify
                Ok(n) => {
                    buf.fill(n);
                    // Filling the buffer may leave plaintext in rustls: stay readable then.
                    if n == want {
                        *self.readable = true;
                    }
                    return ReadOutcome::Data;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: an EOF as for plain HTTP, whose framing
                // tells a truncated message from a whole one.
                Err(_) => return ReadOutcome::Eof,
            }
            if !*self.readable {
                return ReadOutcome::Blocked;
            }
            match tls_feed(self.sock, tls, self.readable, self.writable, self.hup) {
                Fed::Blocked => return ReadOutcome::Blocked,
                // The reader reports the EOF (clean or not) at the top of the loop.
                Fed::Records | Fed::Eof => {}
                Fed::Error(e) => {
                    debug!("TLS: {e}");
                    return ReadOutcome::Failed;
                }
            }
        }
    }

    /// Writes `data`; returns bytes taken, or Err when the peer is gone.
    fn write_from(&mut self, data: &[u8]) -> Result<usize, ()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return write_from(self.sock, data, self.writable);
        };
        tls_flush(self.sock, tls, self.writable)?;
        let mut done = 0;
        while done < data.len() && *self.writable && !tls.wants_write() {
            let end = data.len().min(done + TLS_CHUNK);
            match tls.writer().write(&data[done..end]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(_) => return Err(()),
            }
            tls_flush(self.sock, tls, self.writable)?;
        }
        Ok(done)
    }

    /// Writes what rustls holds (handshake, alerts, the last record). Ok(progress).
    fn flush_tls(&mut self) -> Result<bool, ()> {
        match self.tls.as_deref_mut() {
            Some(tls) => tls_flush(self.sock, tls, self.writable),
            None => Ok(false),
        }
    }

    /// Bytes still queued inside rustls.
    fn tls_pending(&self) -> bool {
        self.tls.as_deref().is_some_and(|t| t.wants_write())
    }
}

/// Moves bytes one way through a tunnel: writes what `slot` holds to `to`, then refills it from
/// `from`. Err when either side has finished or failed.
fn pump(
    from: &mut End,
    slot: &mut Option<Buf>,
    to: &mut End,
    bufs: &mut BufPool,
) -> Result<bool, ()> {
    let mut progress = to.flush_tls()?;
    if let Some(b) = slot.as_mut().filter(|b| !b.is_empty()) {
        let n = to.write_from(b.filled())?;
        b.consume(n);
        progress |= n > 0;
    }
    if slot.as_ref().is_none_or(Buf::is_empty) && *from.readable {
        if slot.is_none() {
            *slot = bufs.checkout();
        }
        if let Some(b) = slot.as_mut() {
            match from.read_into(b) {
                ReadOutcome::Data => progress = true,
                ReadOutcome::Blocked => {}
                ReadOutcome::Eof | ReadOutcome::Failed => return Err(()),
            }
        }
    }
    Ok(progress)
}

/// How far an https connection's handshake got.
enum Handshake {
    Pending,
    Done,
    Failed(String),
}

/// Drives the TLS handshake of an upstream connection whose TCP connect finished.
fn handshake(u: &mut Upstream) -> Handshake {
    let Some(tls) = u.tls.as_deref_mut() else {
        return Handshake::Done;
    };
    loop {
        if tls_flush(&mut u.sock, tls, &mut u.writable).is_err() {
            return Handshake::Failed("connection reset during the handshake".into());
        }
        if !tls.is_handshaking() {
            return Handshake::Done;
        }
        if !u.readable {
            return Handshake::Pending;
        }
        match tls_feed(&mut u.sock, tls, &mut u.readable, &mut u.writable, u.hup) {
            Fed::Blocked | Fed::Records => {}
            Fed::Eof => {
                return Handshake::Failed(
                    "the upstream closed the connection during the handshake".into(),
                )
            }
            Fed::Error(e) => return Handshake::Failed(e),
        }
    }
}

/// Whether a connection about to be pooled, or pooled, is still quiet. A plain one is quiet
/// unless it turned readable (EOF or stray bytes). A TLS one may turn readable for session
/// tickets or key updates, which are read and kept; plaintext, close_notify, EOF or an error
/// mean the upstream is done with it.
/// The SNI name a connection of `t` made for tag `sni` on behalf of client `owner` is given when
/// that is not the node's own: the name of the owner's request, from `names` (`Core::sni_names`).
fn request_sni_name<'a>(
    names: &'a [String],
    t: &UpTls,
    sni: u64,
    owner: Option<usize>,
) -> Option<&'a str> {
    owner
        .filter(|_| sni != 0 && sni != t.node_tag)
        .and_then(|cid| names.get(cid))
        .map(String::as_str)
}

fn up_quiet(u: &mut Upstream) -> bool {
    let Some(tls) = u.tls.as_deref_mut() else {
        return !u.readable;
    };
    loop {
        match tls.process_new_packets() {
            Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => {}
            _ => return false,
        }
        if !u.readable {
            return true;
        }
        let mut src = ShortRead {
            sock: &mut u.sock,
            short: false,
        };
        match tls.read_tls(&mut src) {
            Ok(0) => return false,
            Ok(_) => {
                if src.short && !u.hup {
                    u.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        if tls.process_new_packets().is_err()
            || tls_flush(&mut u.sock, tls, &mut u.writable).is_err()
        {
            return false;
        }
    }
}

pub struct Core {
    id: usize,
    poll: Poll,
    listeners: Vec<TcpListener>,
    accept_paused_until: u64,
    emfile_logged: bool,
    clients: Slab<Client>,
    ups: Slab<Upstream>,
    pools: Vec<NodePool>,
    /// By upstream index of the current generation.
    balancers: Vec<Balancer>,
    /// By pool id, kept across reloads like the pools: passive health and recent latency.
    health: Vec<Passive>,
    latency: Vec<Latency>,
    /// Some upstream of the current generation balances by latency (ewma); without one nobody
    /// reads `latency`, and responses skip the average (an `exp` each). A switch to ewma starts
    /// from no history, as a new node does.
    ewma: bool,
    /// Reloads seen, so a request can tell whether its upstream index still means the same.
    generation: u64,
    /// By client id: the tries of the request in progress.
    tries: Vec<Tries>,
    /// By client id: the SNI name of the request in progress, for an upstream whose SNI comes
    /// from the Host (its tag is `Exchange::sni`); read when a connection is opened for it.
    /// Each string keeps its capacity, so writing the name does not allocate.
    sni_names: Vec<String>,
    timers: TimerWheel<(TimerKey, u64)>,
    bufs: BufPool,
    shared: Arc<Shared>,
    process: Arc<Process>,
    /// By pool id, refreshed with each generation (the registry only grows).
    budgets: Vec<Arc<NodeBudget>>,
    /// By pool id: active health checks took the node out (`Control::NodeHealth`).
    down: Vec<bool>,
    /// This core's own copy of the generation's router. A compiled regex keeps a scratch pool
    /// that only its first user reaches without a lock; other threads go through a mutex. A
    /// clone has its own pool, so each core matching `~~` / `~*` conditions on its copy never
    /// contends with another core.
    router: Router,
    limits: Limits,
    headers: Vec<Header>,
    out: Vec<u8>,
    fired: Vec<(TimerKey, u64)>,
    /// Boxes of finished exchanges, for the next requests (see `Phase`). Boxes, not values:
    /// the point is to hand out the allocation itself.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Exchange>>,
    pending: Vec<usize>,
    /// Clients that used up their steps and resume on the next loop turn.
    deferred: Vec<usize>,
    /// The process's clock, read once per loop turn (`tick`); `now` is its reading.
    clock: Clock,
    now: u64,
    counters: Counters,
    shutdown_at: Option<u64>,
    /// Next `min_idle` top-up; 0 when no upstream asks for a warm floor.
    next_warm: u64,
    /// By pool id: evictions since the last "pool too small" warning, and when that was.
    evictions: Vec<(u64, u64)>,
    /// By pool id: when a failed upstream TLS handshake was last logged as a warning (at most
    /// one a minute per pool and core; the counter has them all).
    tls_warned: Vec<u64>,
    /// The access log, when configured; its entries in progress by client id (kept out of
    /// `Client` so idle connections stay small).
    access: Option<AccessLog>,
    logs: Vec<Option<Pending>>,
    ctl: Receiver<Control>,
}

impl Core {
    pub fn new(
        id: usize,
        poll: Poll,
        listeners: Vec<TcpListener>,
        shared: Arc<Shared>,
        process: Arc<Process>,
        ctl: Receiver<Control>,
    ) -> io::Result<Core> {
        let cfg = shared.cfg.clone();
        let budgets = process.budgets();
        let mut core = Core {
            id,
            poll,
            listeners,
            accept_paused_until: 0,
            emfile_logged: false,
            clients: Slab::default(),
            ups: Slab::default(),
            pools: budgets.iter().map(|_| NodePool::default()).collect(),
            balancers: balancers_of(&cfg),
            health: vec![Passive::default(); budgets.len()],
            latency: vec![Latency::default(); budgets.len()],
            ewma: uses_ewma(&cfg),
            generation: 0,
            tries: Vec::new(),
            sni_names: Vec::new(),
            timers: TimerWheel::new(0),
            bufs: BufPool::new(cfg.client.max_head_bytes.max(BUF_BYTES), MAX_BUFFERS),
            limits: Limits {
                max_head_bytes: cfg.client.max_head_bytes,
                accept_bare_lf: cfg.client.accept_bare_lf,
                ..head::Limits::default()
            },
            headers: Vec::with_capacity(head::MAX_HEADERS),
            out: Vec::with_capacity(cfg.client.max_head_bytes + 1024),
            fired: Vec::new(),
            spare: Vec::new(),
            pending: Vec::new(),
            deferred: Vec::new(),
            clock: Clock,
            now: 0,
            counters: Counters::with_nodes(budgets.len()),
            down: vec![false; budgets.len()],
            router: shared.router.clone(),
            shutdown_at: None,
            next_warm: 0,
            evictions: Vec::new(),
            tls_warned: Vec::new(),
            access: match &cfg.access_log {
                Some(a) => Some(AccessLog::open(&a.path, a.format)?),
                None => None,
            },
            logs: Vec::new(),

            ctl,
            shared,
            process,
            budgets,
        };
        for (i, l) in core.listeners.iter_mut().enumerate() {
            core.poll
                .registry()
                .register(l, Token(i), Interest::READABLE)?;
        }
        Ok(core)
    }

    fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    fn tick(&mut self) {
        self.now = self.clock.now_ms();
    }

    /// Runs the event loop until shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.tick();
        self.warm();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.tick();
            // Readiness first, for the whole batch, then the work: a request driven early in
            // the batch must not take a pooled connection whose EOF is further down it.
            for ev in events.iter() {
                self.note(ev);
            }
            for ev in events.iter() {
                self.dispatch(ev.token());
            }
            self.pending.append(&mut self.deferred);
            self.run_pending();
            self.expire_timers();
            self.run_pending();
            if self.accept_paused_until != 0 && self.now >= self.accept_paused_until {
                self.accept_paused_until = 0;
                if self.below_resume_mark() {
                    for i in 0..self.listeners.len() {
                        self.accept(i);
                    }
                } else {
                    self.accept_paused_until = self.now + CAP_RECHECK_MS;
                }
            }
            if self.next_warm != 0 && self.now >= self.next_warm {
                self.warm();
            }
            if let Some(a) = self.access.as_mut() {
                a.tick(self.now);
            }
            if let Some(at) = self.shutdown_at {
                if self.clients.is_empty() || self.now >= at {
                    self.finish_shutdown();
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.deferred.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.timers.next_deadline();
        if self.accept_paused_until != 0 {
            next = Some(next.map_or(self.accept_paused_until, |n| {
                n.min(self.accept_paused_until)
            }));
        }
        if let Some(at) = self.shutdown_at {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if let Some(d) = self.access.as_ref().and_then(AccessLog::next_deadline) {
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        if self.next_warm != 0 {
            next = Some(next.map_or(self.next_warm, |n| n.min(self.next_warm)));
        }
        next.map(|d| self.clock.until(d))
    }

    /// Records what event `ev` says of its socket, without acting on it (`dispatch` does).
    fn note(&mut self, ev: &Event) {
        let (readable, hup, writable) = match source(ev.token()) {
            Source::Client(i) => {
                let Some(c) = self.clients.get_mut(i) else {
                    return;
                };
                (&mut c.readable, &mut c.hup, &mut c.writable)
            }
            Source::Up(i) => {
                let Some(u) = self.ups.get_mut(i) else { return };
                (&mut u.readable, &mut u.hup, &mut u.writable)
            }
            Source::Waker | Source::Listener(_) => return,
        };
        *readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
        *hup |= ev.is_read_closed() || ev.is_error();
        *writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
    }

    /// Acts on an event for token `t`, whose readiness `note` has recorded. Work done for
    /// events earlier in the batch may have used that readiness already; then this finds
    /// nothing to do, as for any spurious event. Both connection kinds ignore a token whose
    /// connection is gone.
    fn dispatch(&mut self, t: Token) {
        match source(t) {
            Source::Waker => self.control(),
            Source::Listener(li) => self.accept(li),
            Source::Client(i) => self.drive(i),
            Source::Up(i) => self.upstream_ready(i),
        }
    }

    fn run_pending(&mut self) {
        let mut guard = 0;
        while let Some(cid) = self.pending.pop() {
            self.drive(cid);
            guard += 1;
            if guard > 100_000 {
                warn!("core {}: runaway pending work, deferring", self.id);
                break;
            }
        }
    }

    // ---------------------------------------------------------------- control

    fn control(&mut self) {
        while let Ok(msg) = self.ctl.try_recv() {
            match msg {
                Control::Shutdown { grace } => self.begin_shutdown(grace),
                Control::Stats(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                Control::ShedIdle { node, from } => {
                    if node < self.pools.len() {
                        // Any name: the other core's release matches it to a waiter or, for
                        // another name, frees its budget (`release_up`).
                        if let Some(uid) = self.checkout_idle(node, None) {
                            self.hand_over(uid, from);
                        }
                    }
                }
                Control::Freed(node) => {
                    if node < self.pools.len() {
                        self.serve_waiters(node);
                    }
                }
                Control::Adopt(h) => self.adopt(*h),
                Control::Reload(shared) => self.reload(shared),
                Control::NodeHealth { node, healthy } => self.node_health(node, healthy),
                Control::ReopenLog => self.reopen_access_log(),
            }
        }
    }

    /// Swaps in a new configuration generation. Pools of nodes still configured keep their
    /// connections; idle connections to removed nodes close now, active ones when released.
    /// Requests in flight keep the settings they started with.
    fn reload(&mut self, shared: Arc<Shared>) {
        self.budgets = self.process.budgets();
        let n = self.budgets.len();
        self.pools.resize_with(n, NodePool::default);
        self.down.resize(n, false);
        self.router = shared.router.clone();
        if self.counters.nodes.len() < n {
            self.counters.nodes.resize(n, Default::default());
        }
        self.health.resize(n, Passive::default());
        self.latency.resize(n, Latency::default());
        self.balancers = balancers_of(&shared.cfg);
        self.ewma = uses_ewma(&shared.cfg);
        self.generation += 1;
        if shared.cfg.access_log != self.shared.cfg.access_log {
            if let Some(a) = self.access.as_mut() {
                a.flush();
            }
            self.access = match &shared.cfg.access_log {
                None => None,
                Some(a) => match AccessLog::open(&a.path, a.format) {
                    Ok(log) => Some(log),
                    Err(e) => {
                        warn!(
                            "core {}: cannot open access log {}: {e}; logging is off",
                            self.id,
                            a.path.display()
                        );
                        None
                    }
                },
            };
        }
        // Buffers keep the size they were made with; a larger head limit takes a restart.
        self.limits.max_head_bytes = shared.cfg.client.max_head_bytes.min(self.bufs.buf_size());
        self.limits.accept_bare_lf = shared.cfg.client.accept_bare_lf;
        self.shared = shared;
        for pid in 0..n {
            if self.shared.pool(pid).is_some() {
                continue;
            }
            while let Some(uid) = self.pools[pid].take_idle() {
                if let Some(u) = self.ups.get_mut(uid) {
                    u.state = UpState::Active; // out of the idle list already
                }
                self.close_up(uid, CloseReason::Removed);
            }
            while let Some(cid) = self.next_waiter(pid, None) {
                self.fail_waiter(cid, Cause::NodeRemoved);
            }
        }
        debug!("core {}: configuration reloaded", self.id);
        self.warm();
    }

    /// Whether new requests may go to this node.
    /// Active health checks changed a node's state. Going down, its idle connections close now
    /// and those in use when released (`release_up`), and new requests skip it; coming back,
    /// it is used again and warmed if its upstream keeps a floor.
    /// SIGUSR1: start the access log anew at its configured path, after a rotation renamed the
    /// file. A log that could not be opened before is tried again.
    fn reopen_access_log(&mut self) {
        let Some(cfg) = self.shared.cfg.access_log.as_ref() else {
            return;
        };
        let opened = match self.access.as_mut() {
            Some(log) => log.reopen(&cfg.path),
            None => AccessLog::open(&cfg.path, cfg.format).map(|log| self.access = Some(log)),
        };
        match opened {
            Ok(()) => debug!("core {}: access log reopened", self.id),
            Err(e) => warn!(
                "core {}: cannot reopen access log {}: {e}",
                self.id,
                cfg.path.display()
            ),
        }
    }

    fn node_health(&mut self, node: PoolId, healthy: bool) {
        if self.down.len() <= node {
            self.down.resize(node + 1, false);
        }
        self.down[node] = !healthy;
        debug!("core {}: pool {node} healthy={healthy}", self.id);
        if healthy {
            self.warm();
            return;
        }
        if node >= self.pools.len() {
            return; // a pool this core has no table for has no connections here either
        }
        while let Some(uid) = self.pools[node].take_idle() {
            if let Some(u) = self.ups.get_mut(uid) {
                u.state = UpState::Active; // out of the idle list already
            }
            self.close_up(uid, CloseReason::Health);
        }
    }

    /// Opens connections in the background until every node whose upstream sets
    /// `keepalive_pool.min_idle` has that many idle (or connecting) on this core. Connects go
    /// through the node's budget, so `max_connecting` paces them.
    fn warm(&mut self) {
        self.next_warm = 0;
        if self.shutdown_at.is_some() {
            return;
        }
        let shared = self.shared.clone(); // once a second at most, not per request
        for (ui, nodes) in shared.up_nodes.iter().enumerate() {
            let set = shared.up_settings[ui];
            let want = set.pool.min_idle.min(set.pool.size);
            if want == 0 {
                continue;
            }
            self.next_warm = self.now + WARM_EVERY_MS;
            for &node in nodes {
                if !self.node_usable(node) {
                    continue; // health checks took it out: it would only be closed again
                }
                let have = self.pools[node].idle_len() + self.pools[node].connecting as usize;
                // Warm connections carry the node's name (and tag).
                let tag = shared
                    .pool(node)
                    .and_then(|p| p.tls.as_ref())
                    .map_or(0, |t| t.node_tag);
                for _ in have..want {
                    if self.connect(node, None, &set, tag).is_err() {
                        break;
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> Counters {
        let mut c = self.counters.clone();
        c.client_open_now = self.clients.len() as u64;
        for (i, p) in self.pools.iter().enumerate() {
            c.nodes[i].idle_now = p.idle_len() as u64;
            c.nodes[i].open_now = u64::from(p.open);
            c.nodes[i].waiters_now = p.waiters_len() as u64;
        }
        c
    }

    fn begin_shutdown(&mut self, grace: Duration) {
        if self.shutdown_at.is_some() {
            return;
        }
        self.tick();
        self.shutdown_at = Some(self.now + grace.as_millis() as u64);
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for cid in self.clients.keys() {
            self.pending.push(cid);
        }
    }

    fn finish_shutdown(&mut self) {
        for cid in self.clients.keys() {
            self.close_client(cid);
        }
        for uid in self.ups.keys() {
            self.close_up(uid, CloseReason::NotReusable);
        }
        if let Some(a) = self.access.as_mut() {
            a.flush();
        }
        let c = self.snapshot();
        let labels = self.process.labels();
        for (i, n) in c.nodes.iter().enumerate() {
            if n.requests > 0 {
                info!(
                    "core {}: {} requests={} connects={} reuses={} replays={} connect_failures={} queue_timeouts={}",
                    self.id, labels.get(i).map_or("", String::as_str), n.requests, n.connects, n.reuses, n.replays, n.connect_failures, n.queue_timeouts
                );
            }
        }
    }

    // ---------------------------------------------------------------- accept

    fn accept(&mut self, li: usize) {
        if self.shutdown_at.is_some() || self.accept_paused_until != 0 {
            return;
        }
        let cap = self.shared.cfg.max_client_connections;
        loop {
            let Some(l) = self.listeners.get(li) else {
                return;
            };
            if cap > 0 && !self.reserve_client_slot(cap) {
                // Leave new connections in the backlog rather than failing requests in flight.
                if self.accept_paused_until == 0 {
                    debug!(
                        "core {}: {cap} client connections open, pausing accepts",
                        self.id
                    );
                }
                self.accept_paused_until = self.now + CAP_RECHECK_MS;
                return;
            }
            let accepted = l.accept();
            if cap > 0 && accepted.is_err() {
                self.process.clients_open.fetch_sub(1, Ordering::AcqRel);
            }
            match accepted {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let tls = match self.shared.listen_tls.get(li) {
                        None | Some(ListenTls::Plain) => None,
                        // One Arc clone per connection (not per request) for the session.
                        Some(ListenTls::Tls(cfg)) => match ServerConnection::new(cfg.clone()) {
                            Ok(conn) => Some(Box::new(Connection::Server(conn))),
                            Err(e) => {
                                warn!("starting a TLS session failed: {e}");
                                None
                            }
                        },
                        Some(ListenTls::Broken) => None,
                    };
                    if tls.is_none()
                        && !matches!(
                            self.shared.listen_tls.get(li),
                            None | Some(ListenTls::Plain)
                        )
                    {
                        // A TLS listener must never answer in plain text.
                        if cap > 0 {
                            self.process.clients_open.fetch_sub(1, Ordering::AcqRel);
                        }
                        continue;
                    }
                    let cid = self.clients.vacant_key();
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        client_token(cid),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!("registering a client failed: {e}");
                        if cap > 0 {
                            self.process.clients_open.fetch_sub(1, Ordering::AcqRel);
                        }
                        continue;
                    }
                    self.counters.accepted += 1;
                    let now = self.now;
                    self.clients.insert(Client {
                        sock,
                        tls,
                        ip: peer.ip(),
                        readable: false,
                        writable: false,
                        hup: false,
                        eof: false,
                        rbuf: None,
                        wbuf: None,
                        phase: Phase::Head,
                        served: 0,
                        accepted_at: now,
                        last_active: now,
                        head_started: None,
                        last_write: now,
                        deadline: 0,
                        timer_at: 0,
                    });
                    self.rearm_client(cid);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    if !self.emfile_logged {
                        warn!("core {}: accept failed ({e}); pausing accepts for {ACCEPT_PAUSE_MS} ms at a time", self.id);
                        self.emfile_logged = true;
                    }
                    self.accept_paused_until = self.now + ACCEPT_PAUSE_MS;
                    return;
                }
                Err(e) => {
                    debug!("accept: {e}");
                    return;
                }
            }
        }
    }

    // ---------------------------------------------------------------- client driving

    /// Moves a client's state machine as far as readiness allows.
    fn drive(&mut self, cid: usize) {
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > MAX_STEPS {
                // Still moving: let other connections have a turn, then come back without
                // waiting for an event (edge-triggered readiness will not repeat).
                self.deferred.push(cid);
                break;
            }
            let Some(c) = self.clients.get_mut(cid) else {
                return;
            };
            let phase = mem::replace(&mut c.phase, Phase::Closing);
            let (next, step) = match phase {
                Phase::Head => self.step_head(cid),
                Phase::Exchange(ex) => self.step_exchange(cid, ex),
                Phase::Tunnel(t) => self.step_tunnel(cid, t),
                Phase::Closing => self.step_closing(cid),
                Phase::Lingering => self.step_lingering(cid),
            };
            if step == Step::Closed {
                return;
            }
            let Some(c) = self.clients.get_mut(cid) else {
                return;
            };
            c.phase = next;
            if step == Step::Wait {
                break;
            }
        }
        self.rearm_client(cid);
    }

    /// Writes pending client output. Err: the client is gone.
    ///
    /// The state machine calls this at every step, about nine times a request, and most calls
    /// find nothing to write: those are answered here, inline, before the write path is entered.
    #[inline]
    fn flush_client(&mut self, cid: usize) -> Result<bool, ()> {
        let c = self.clients.get(cid).ok_or(())?;
        let idle = c.wbuf.as_ref().is_none_or(Buf::is_empty) || !c.writable;
        if idle && c.tls.is_none() {
            return Ok(false);
        }
        self.write_client(cid)
    }

    fn write_client(&mut self, cid: usize) -> Result<bool, ()> {
        let now = self.now;
        let c = &mut self.clients.get_mut(cid).ok_or(())?;
        let mut end = end!(c);
        // What rustls holds goes first (handshake, alerts, the last record), even with no wbuf.
        let flushed = end.flush_tls()?;
        if flushed {
            c.last_write = now;
        }
        let Some(w) = c.wbuf.as_mut() else {
            return Ok(flushed);
        };
        if w.is_empty() || !*end.writable {
            return Ok(flushed);
        }
        let n = end.write_from(w.filled())?;
        w.consume(n);
        if n > 0 {
            c.last_write = now;
        }
        self.bufs.release_if_empty(&mut c.wbuf);
        Ok(n > 0 || flushed)
    }

    /// Queues a canned answer for `cause` and moves to closing (or back to reading heads when
    /// `keep`).
    fn answer(&mut self, cid: usize, cause: Cause, keep: bool) -> (Phase, Step) {
        self.answer_for(cid, cause, keep, None)
    }

    /// As `answer`, for a request that had an exchange: its node and progress go into the
    /// warning and the access log line.
    fn answer_for(
        &mut self,
        cid: usize,
        cause: Cause,
        keep: bool,
        ex: Option<&Exchange>,
    ) -> (Phase, Step) {
        let status = cause.status();
        self.counters.answered(status);
        self.report(cid, cause, ex);
        self.log_end(cid, status, 0, ex.map(|e| (e, 0)), Some(cause));
        let Some(c) = self.clients.get_mut(cid) else {
            return (Phase::Closing, Step::Closed);
        };
        if c.wbuf.is_none() {
            c.wbuf = self.bufs.checkout();
        }
        match c.wbuf.as_mut() {
            Some(w) if w.free() >= canned(status, !keep).len() => {
                w.push(canned(status, !keep));
            }
            _ => {
                self.close_client(cid);
                return (Phase::Closing, Step::Closed);
            }
        }
        if keep {
            (Phase::Head, Step::Continue)
        } else {
            (Phase::Closing, Step::Continue)
        }
    }

    /// Says why hearth answered or cut a request: a warning at most once a second per node (or,
    /// for the clients' doing, per core) and cause, and a debug line every time.
    fn report(&mut self, cid: usize, cause: Cause, ex: Option<&Exchange>) {
        self.counters.failed(cause);
        let cfg = &self.shared.cfg;
        let ms = |d: Duration| d.as_millis() as u64;
        let limit_ms = match cause {
            Cause::HeaderTimeout => ms(cfg.client.header_timeout),
            Cause::BodyTimeout => ms(cfg.client.body_timeout),
            Cause::SendTimeout => ms(cfg.client.send_timeout),
            Cause::ConnectTimeout => ex.map_or(0, |e| e.set.connect_ms),
            Cause::ReadTimeout => ex.map_or(0, |e| e.set.read_ms),
            Cause::QueueTimeout => ex.map_or(0, |e| e.set.queue_ms),
            _ => 0,
        };
        let cx = Context {
            node: ex.and_then(|e| self.shared.pool(e.node)).map(|p| p.addr),
            client: self.clients.get(cid).map(|c| c.ip),
            body_sent: ex.map_or(0, |e| e.wrote.saturating_sub(e.head_len)),
            answered: ex.is_some_and(|e| e.resp_started),
            limit_ms,
        };
        let now_ms = self.now;
        let clock = match ex {
            Some(e) if cause.upstream() => self.budgets.get(e.node).map(|b| &b.warned),
            _ => None,
        }
        .unwrap_or(&self.process.warned);
        // A client leaving is the ordinary life of a proxy, not something to warn about.
        if cause != Cause::ClientAbort && clock.may_warn(cause, now_ms) {
            warn!("{} [{}]", cause.describe(&cx), cause.token());
        } else {
            debug!("{} [{}]", cause.describe(&cx), cause.token());
        }
    }

    /// Ends client `cid`'s access log entry, if one is in progress. `cause`: why hearth answered
    /// or cut the request itself, if it did.
    fn log_end(
        &mut self,
        cid: usize,
        status: u16,
        bytes_sent: u64,
        up: Option<(&Exchange, u64)>,
        cause: Option<Cause>,
    ) {
        let Some(p) = self.logs.get_mut(cid).and_then(Option::take) else {
            return;
        };
        let Some(a) = self.access.as_mut() else {
            return;
        };
        let (upstream, connect_ms, reused, started) = match up {
            Some((ex, connect_ms)) => (
                self.shared.pool(ex.node).map(|p| p.addr),
                connect_ms,
                ex.reused,
                ex.started,
            ),
            None => (None, 0, false, self.now),
        };
        let o = Outcome {
            status,
            bytes_sent,
            upstream,
            connect_ms,
            reused,
            total_ms: self.now.saturating_sub(started),
            cause: cause.map(Cause::token),
        };
        a.finish(p, &o, self.now);
    }

    fn step_head(&mut self, cid: usize) -> (Phase, Step) {
        if self.flush_client(cid).is_err() {
            self.close_client(cid);
            return (Phase::Closing, Step::Closed);
        }
        let shutting = self.shutdown_at.is_some();
        let max_requests = self.cfg().client.max_requests;
        let c = self.clients.get_mut(cid).expect("driven client exists");
        let has_bytes = c.rbuf.as_ref().is_some_and(|b| !b.is_empty());
        if has_bytes {
            let buf = c.rbuf.as_ref().expect("checked above");
            match head::parse_request(buf.filled(), &self.limits, &mut self.headers) {
                Ok(Some(h)) => return self.begin_exchange(cid, h),
                Ok(None) => {}
                Err(e) => return self.answer(cid, Cause::of_head_error(e), false),
            }
        } else {
            c.head_started = None;
            if shutting || (max_requests > 0 && c.served >= max_requests) {
                return (Phase::Closing, Step::Continue);
            }
        }
        if c.eof {
            // EOF between requests is a normal close; inside a head it cuts the request. Either
            // way, what is queued for the client still goes out first.
            return (Phase::Closing, Step::Continue);
        }
        if !c.readable {
            self.bufs.release_if_empty(&mut c.rbuf);
            return (Phase::Head, Step::Wait);
        }
        if c.rbuf.is_none() {
            match self.bufs.checkout() {
                Some(b) => c.rbuf = Some(b),
                None => return self.answer(cid, Cause::NoBuffer, false),
            }
        }
        let buf = c.rbuf.as_mut().expect("checked out above");
        match end!(c).read_into(buf) {
            ReadOutcome::Data => {
                if c.head_started.is_none() {
                    c.head_started = Some(self.now);
                }
                c.last_active = self.now;
                (Phase::Head, Step::Continue)
            }
            ReadOutcome::Blocked => {
                self.bufs.release_if_empty(&mut c.rbuf);
                (Phase::Head, Step::Wait)
            }
            ReadOutcome::Eof => {
                c.eof = true;
                (Phase::Head, Step::Continue)
            }
            ReadOutcome::Failed => {
                self.close_client(cid);
                (Phase::Closing, Step::Closed)
            }
        }
    }

    fn begin_exchange(&mut self, cid: usize, h: RequestHead) -> (Phase, Step) {
        self.counters.requests += 1;
        // Borrow the generation (no Arc clone: that would be an atomic per request).
        let shared = &*self.shared;
        let cfg = &shared.cfg;
        let c = self.clients.get_mut(cid).expect("driven client exists");
        c.head_started = None;
        c.last_active = self.now;
        let rbuf = c.rbuf.as_ref().expect("a head was parsed from it");
        let src = rbuf.filled();
        let host = h.host.map(|s| s.of(src));
        if let Some(a) = self.access.as_mut() {
            let field = |name: &[u8]| {
                self.headers
                    .iter()
                    .find(|f| f.name.of(src).eq_ignore_ascii_case(name))
                    .map_or(&b""[..], |f| f.value.of(src))
            };
            let p = a.start(&Start {
                client: c.ip,
                method: h.method_span.of(src),
                target: h.target.of(src),
                version: if h.version == Version::Http10 {
                    "HTTP/1.0"
                } else {
                    "HTTP/1.1"
                },
                host: host.unwrap_or(b""),
                referer: field(b"referer"),
                user_agent: field(b"user-agent"),
                wall_ms: self.clock.wall_ms(self.now),
            });
            if self.logs.len() <= cid {
                self.logs.resize_with(cid + 1, || None);
            }
            if let Some(old) = self.logs[cid].replace(p) {
                a.discard(old);
            }
        }
        let route_req = Request {
            method: h.method_span.of(src),
            target: h.target.of(src),
            host,
            remote: c.ip,
            headers: &self.headers,
            src,
        };
        if h.method == head::Method::Connect {
            // A tunnel to whatever the client names is a forward proxy's job, never this one's;
            // the client may already be sending tunnel bytes, so the connection closes after.
            return self.answer(cid, Cause::ConnectMethod, false);
        }
        let Some(m) = self.router.find(&route_req) else {
            let keep = h.body == ReqBody::None && h.keep_alive;
            c.rbuf.as_mut().expect("present").consume(h.head_len);
            return self.answer(cid, Cause::NoRoute, keep);
        };
        let max_body = cfg.client.max_body_bytes;
        if let ReqBody::Length(n) = h.body {
            if max_body > 0 && n > max_body {
                return self.answer(cid, Cause::BodyTooLarge, false);
            }
        }
        let upstream = m.upstream;
        let websocket = cfg.routes.get(m.route).and_then(|r| r.websocket);
        let up_cfg = &cfg.upstreams[upstream];
        // The key is read only for chash, from the request as it arrived.
        let hash = match &up_cfg.balance {
            Balance::Chash { key } => balance::hash_key(Vars::new(&route_req).get(key)),
            _ => 0,
        };
        let nodes = up_cfg.nodes.len();
        let left = up_cfg
            .retries
            .unwrap_or_else(|| u32::try_from(nodes.saturating_sub(1)).unwrap_or(u32::MAX));
        let until = match u64::try_from(up_cfg.retry_timeout.as_millis()).unwrap_or(u64::MAX) {
            0 => 0,
            ms => self.now.saturating_add(ms),
        };
        let mut tried = Tried::default();
        let Some(node) = self.choose_node(upstream, hash, &mut tried) else {
            return self.answer(cid, Cause::NoNode, false);
        };
        if self.tries.len() <= cid {
            // Grows with the highest client id, as the slab does; not per request.
            self.tries.resize(cid + 1, Tries::default());
        }
        self.tries[cid] = Tries {
            upstream,
            generation: self.generation,
            hash,
            tried,
            left,
            until,
            tried_at: self.now,
        };
        // Borrowed again: choosing the node needed the whole core.
        let shared = &*self.shared;
        let up_cfg = &shared.cfg.upstreams[upstream];
        let c = self.clients.get_mut(cid).expect("driven client exists");
        let src = c.rbuf.as_ref().expect("a head was parsed from it").filled();
        let set = shared.up_settings[upstream];
        let Some(pool) = shared.pool(node) else {
            return self.answer(cid, Cause::NoNode, false);
        };
        let Some(mut to_up) = self.bufs.checkout() else {
            return self.answer(cid, Cause::NoBuffer, false);
        };
        let fwd = Forward {
            client_ip: c.ip,
            proto: if c.tls.is_some() { "https" } else { "http" },
            // An HTTP/1.0 request may come without Host; the upstream gets HTTP/1.1, which
            // requires one (RFC 9112 §3.2), so it gets the node's address.
            host: host_override(&up_cfg.pass_host, pool)
                .or(h.host.is_none().then_some(pool.host.as_bytes())),
            upgrades: Upgrades {
                allowed: &up_cfg.upgrade,
                websocket,
            },
        };
        self.out.clear();
        let offer = match rewrite::request_head(src, &h, &self.headers, &fwd, &mut self.out) {
            Some(value) => Offer::new(&self.out[value]),
            None => Offer::NONE,
        };
        if self.out.len() > to_up.capacity() {
            self.bufs.give_back(to_up);
            return self.answer(cid, Cause::HeadTooLarge, false);
        }
        to_up.push(&self.out);
        let head_len = self.out.len() as u64;
        // The SNI follows the Host sent upstream when the pool takes it from the request; a
        // Host rustls cannot use as a name gets the node's name, as warm connections do.
        let sni = match pool.tls.as_ref().filter(|t| t.from_request) {
            None => 0,
            Some(t) => {
                if self.sni_names.len() <= cid {
                    // Grows with the highest client id, as the slab does; not per request.
                    self.sni_names.resize_with(cid + 1, String::new);
                }
                let out = &mut self.sni_names[cid];
                let sent = h.host.map_or(pool.host.as_bytes(), |s| s.of(src));
                match tls::request_sni(&self.process.sni_key, sent, out) {
                    Some(tag) => tag,
                    None => {
                        out.clear();
                        out.push_str(&t.name.to_str());
                        t.node_tag
                    }
                }
            }
        };
        c.rbuf.as_mut().expect("present").consume(h.head_len);
        self.counters.nodes[node].requests += 1;
        let req = match h.body {
            ReqBody::None | ReqBody::Length(0) => BodyIn::Done,
            ReqBody::Length(n) => BodyIn::Length(n),
            // The declared size of each chunk is held to what `max_body_bytes` still allows, so
            // a chunk too large is refused at its size line, before any of it is forwarded.
            ReqBody::Chunked => BodyIn::Chunked(
                ChunkedDecoder::from_limits(&self.limits)
                    .max_payload(self.shared.cfg.client.max_body_bytes)
                    .lenient(self.limits.accept_bare_lf),
            ),
        };
        let fresh = Exchange {
            node,
            sni,
            set,
            up: None,
            reused: false,
            replayed: false,
            to_up,
            sent: 0,
            intact: true,
            replay_safe: h.method.is_idempotent() || h.idempotency_key,
            from_up: None,
            req,
            resp: Resp::Head,
            resp_started: false,
            answered: false,
            up_eof: false,
            head_request: h.method == head::Method::Head,
            client_version: h.version,
            req_keep_alive: h.keep_alive,
            offer,
            keep_client: false,
            up_reusable: false,
            up_dirty: false,
            up_said_close: false,
            hint: KeepAliveHint::default(),
            queued_at: self.now,
            started: self.now,
            status: 0,
            sent_body: 0,
            up_progress: self.now,
            wrote: 0,
            head_len,
            send_failed: false,
            drain_until: 0,
            drain_left: 0,
        };
        let ex = match self.spare.pop() {
            Some(mut ex) => {
                *ex = fresh;
                ex
            }
            // Only while the core's concurrency grows past what it had before.
            None => Box::new(fresh),
        };
        self.start_exchange(cid, ex, false)
    }

    /// Finds a connection for the exchange: an idle one (unless `fresh`), a new one, or a place in
    /// the node's queue. A connect that fails at once moves the request to the next node while
    /// tries are left.
    fn start_exchange(&mut self, cid: usize, mut ex: Box<Exchange>, fresh: bool) -> (Phase, Step) {
        let mut fresh = fresh;
        loop {
            let node = ex.node;
            if let Some(t) = self.tries.get_mut(cid) {
                t.tried_at = self.now;
            }
            if !fresh {
                if let Some(uid) = self.checkout_idle(node, Some(ex.sni)) {
                    let u = self.ups.get_mut(uid).expect("idle connection exists");
                    u.state = UpState::Active;
                    u.owner = Some(cid);
                    u.deadline = 0;
                    ex.up = Some(uid);
                    ex.reused = true;
                    ex.up_progress = self.now;
                    self.counters.nodes[node].reuses += 1;
                    return (Phase::Exchange(ex), Step::Continue);
                }
            }
            let mut opened = self.connect(node, Some(cid), &ex.set, ex.sni);
            if matches!(opened, Err(ConnectError::Budget))
                && ex.sni != 0
                && self.pools[node].idle_len() > 0
            {
                // The budget is held by idle connections made for other names (none fit this
                // request): the least recently used gives way, then this request tries again,
                // behind any waiter the freed budget serves first.
                if let Some(old) = self.pools[node].oldest_idle() {
                    if let Some(o) = self.ups.get_mut(old) {
                        o.state = UpState::Active; // out of the idle list already
                    }
                    self.close_up(old, CloseReason::Evicted);
                    opened = self.connect(node, Some(cid), &ex.set, ex.sni);
                }
            }
            match opened {
                Ok(uid) => {
                    ex.up = Some(uid);
                    ex.reused = false;
                    ex.up_progress = self.now;
                    return (Phase::Exchange(ex), Step::Continue);
                }
                Err(ConnectError::Budget) => {
                    let (qsize, max_conns) = (ex.set.queue_size, ex.set.max_connections);
                    if !self.pools[node].wait(cid, qsize) {
                        self.counters.nodes[node].queue_timeouts += 1;
                        let r = self.answer_for(cid, Cause::QueueFull, false, Some(&ex));
                        self.retire(ex);
                        return r;
                    }
                    self.counters.nodes[node].queued += 1;
                    self.budgets[node].add_waiter(self.id);
                    ex.queued_at = self.now;
                    if max_conns > 0 {
                        // Another core may sit on idle connections to this node: ask for one.
                        for (i, p) in self.process.peers.iter().enumerate() {
                            if i != self.id {
                                let _ = p.send(Control::ShedIdle {
                                    node,
                                    from: self.id,
                                });
                            }
                        }
                    }
                    return (Phase::Exchange(ex), Step::Wait);
                }
                Err(ConnectError::Failed(cause)) => {
                    // `connect` counted the failure against the node.
                    if self.next_try(cid, &mut ex) {
                        fresh = false;
                        continue;
                    }
                    let keep = matches!(ex.req, BodyIn::Done) && ex.req_keep_alive;
                    let r = self.answer_for(cid, cause, keep, Some(&ex));
                    self.retire(ex);
                    return r;
                }
            }
        }
    }

    /// Whether requests may go to pool `pool` now. Active health checks take a node out until
    /// they see it recover; passive health takes it out for
    /// `fail_timeout` after `max_fails` failures; every pick asks here, and a pick falls back
    /// to nodes that fail this only when no node passes it.
    fn node_usable(&self, pool: PoolId) -> bool {
        !self.down.get(pool).copied().unwrap_or(false)
            && self.health.get(pool).is_none_or(|h| h.usable(self.now))
    }

    /// Counts a failure of pool `pool` for passive health, under the settings of the upstream
    /// that governs the pool in the current generation.
    fn node_failed(&mut self, pool: PoolId) {
        let Some(info) = self.shared.pool(pool) else {
            return; // no longer configured: nothing to protect
        };
        let passive = &self.shared.cfg.upstreams[info.upstream].passive;
        let (max_fails, fail_ms) = (
            passive.max_fails,
            u64::try_from(passive.fail_timeout.as_millis()).unwrap_or(u64::MAX),
        );
        let Some(h) = self.health.get_mut(pool) else {
            return;
        };
        self.counters.nodes[pool].failures += 1;
        if h.fail(self.now, max_fails, fail_ms) {
            self.counters.nodes[pool].marked_down += 1;
            warn!(
                "core {}: upstream node {} failed {max_fails} time(s) within fail_timeout; not used for {:.1} s",
                self.id,
                info.addr,
                fail_ms as f64 / 1000.0
            );
        }
    }

    /// What the balancer may know of pool `pool`: requests in flight on this core (connections
    /// attached or connecting, and requests queued for one) and its latency score. Read from
    /// the pool's own books, so it cannot drift from them.
    fn load(&self, pool: PoolId) -> Load {
        let Some(p) = self.pools.get(pool) else {
            return Load::default();
        };
        let busy = (p.open as usize).saturating_sub(p.idle_len()) + p.waiters_len();
        Load {
            active: u32::try_from(busy).unwrap_or(u32::MAX),
            latency_ms: self.latency.get(pool).and_then(|l| l.score(self.now)),
        }
    }

    /// Chooses a node of upstream `up` for a request's next try (`Balancer::choose`: untried
    /// and usable first) and marks it in `tried`.
    fn choose_node(&mut self, up: usize, hash: u64, tried: &mut Tried) -> Option<PoolId> {
        let nodes = self.shared.up_nodes.get(up).map_or(&[][..], Vec::as_slice);
        if let Some(i) = self.balancers.get(up)?.sole(tried) {
            return nodes.get(i).copied();
        }
        // Out of its table for the pick, so the predicates can read the whole core. An empty
        // balancer holds no heap memory: this moves a few words and allocates nothing.
        let mut b = mem::take(self.balancers.get_mut(up)?);
        let pick = b.choose(
            hash,
            |i| nodes.get(i).map_or_else(Load::default, |&p| self.load(p)),
            tried,
            |i| nodes.get(i).is_some_and(|&p| self.node_usable(p)),
        );
        self.balancers[up] = b;
        pick.and_then(|i| nodes.get(i).copied())
    }

    /// Whether a request that failed may go to another node: tries left, its upstream still the
    /// same, the retry time not spent, no response byte seen, and the request still whole in
    /// `to_up` and either never sent or safe to send again (the replay rules).
    fn may_retry(&self, t: &Tries, ex: &Exchange) -> bool {
        t.left > 0
            && t.generation == self.generation
            && (t.until == 0 || self.now < t.until)
            && !ex.resp_started
            && !ex.answered
            && ex.intact
            && (ex.sent == 0 || ex.replay_safe)
    }

    /// Moves a failed exchange to another node of its upstream for one more try; false when it
    /// may not. The failed try's connection must already be gone (`ex.up` is None).
    fn next_try(&mut self, cid: usize, ex: &mut Exchange) -> bool {
        let Some(mut t) = self.tries.get(cid).copied() else {
            return false;
        };
        if ex.up.is_some() || !self.may_retry(&t, ex) {
            return false;
        }
        let node = self.choose_node(t.upstream, t.hash, &mut t.tried);
        self.tries[cid] = t;
        let Some(node) = node else {
            return false;
        };
        let pass_node = matches!(
            self.shared.cfg.upstreams[t.upstream].pass_host,
            PassHost::Node
        );
        if pass_node && node != ex.node && !self.rehost(ex, node) {
            return false;
        }
        debug!("retrying on pool {node} after pool {} failed", ex.node);
        self.tries[cid].left -= 1;
        ex.node = node;
        ex.reused = false;
        ex.sent = 0;
        ex.wrote = 0;
        ex.send_failed = false;
        ex.up_eof = false;
        ex.resp = Resp::Head;
        self.bufs.release(&mut ex.from_up);
        self.counters.nodes[node].requests += 1;
        self.counters.nodes[node].retries += 1;
        true
    }

    /// Points the Host line of a request in `to_up` at `node`, for a retry under
    /// `pass_host = "node"`. `rewrite::request_head` puts Host first, right after the request
    /// line. Rare enough that `out` may grow for it.
    fn rehost(&mut self, ex: &mut Exchange, node: PoolId) -> bool {
        let Some(host) = self.shared.pool(node).map(|p| p.host.as_bytes()) else {
            return false;
        };
        let bytes = ex.to_up.filled();
        let find = |hay: &[u8]| hay.windows(2).position(|w| w == b"\r\n");
        let Some(line) = find(bytes) else {
            return false;
        };
        let value = line + 2 + b"Host: ".len();
        if !bytes[line + 2..].starts_with(b"Host: ") {
            return false;
        }
        let Some(len) = find(&bytes[value..]) else {
            return false;
        };
        self.out.clear();
        self.out.extend_from_slice(&bytes[..value]);
        self.out.extend_from_slice(host);
        self.out.extend_from_slice(&bytes[value + len..]);
        if self.out.len() > ex.to_up.capacity() {
            return false;
        }
        ex.head_len = (ex.head_len + host.len() as u64).saturating_sub(len as u64);
        ex.to_up.clear();
        ex.to_up.push(&self.out);
        true
    }

    /// The most recently used idle connection of pool `node` made for the SNI tag `want` (any
    /// with None), closing on the way those the upstream closed or that outlived their time.
    fn checkout_idle(&mut self, node: usize, want: Option<u64>) -> Option<usize> {
        loop {
            let ups = &self.ups;
            let fits = |uid: &usize| want.is_none_or(|w| ups.get(*uid).is_some_and(|u| u.sni == w));
            let uid = self.pools[node].take_idle_where(fits)?;
            let u = self.ups.get_mut(uid)?;
            if !up_quiet(u) {
                // EOF or stray bytes arrived while it sat idle: the upstream is done with it.
                u.state = UpState::Active;
                self.upstream_closed_idle(uid);
                continue;
            }
            if u.deadline != 0 && self.now >= u.deadline {
                let why = u.idle_reason;
                u.state = UpState::Active;
                self.close_up(uid, why);
                continue;
            }
            let age = self.now.saturating_sub(u.idle_since);
            self.counters.nodes[node].reuse_idle_age.record(age);
            return Some(uid);
        }
    }

    /// Opens a connection to pool `node` under `set`'s caps and connect timeout, for the SNI
    /// tag `sni`: where the pool takes SNI from the request, the name is the owner's
    /// (`sni_names`), or the node's for a connection opened without a request.
    fn connect(
        &mut self,
        node: PoolId,
        owner: Option<usize>,
        set: &UpSettings,
        sni: u64,
    ) -> Result<usize, ConnectError> {
        let Some(pool) = self.shared.pool(node) else {
            // The node left the configuration while the request waited.
            return Err(ConnectError::Failed(Cause::NodeRemoved));
        };
        let addr = pool.addr;
        let per_request = pool.tls.as_ref().is_some_and(|t| t.from_request);
        let sni = if per_request { sni } else { 0 };
        let tls = match &pool.tls {
            // Per connection, not per request: an Arc clone and the session's allocations.
            Some(t) => match ClientConnection::new(t.config.clone(), {
                let asked = request_sni_name(&self.sni_names, t, sni, owner)
                    .and_then(|n| ServerName::try_from(n).ok());
                asked.map_or_else(|| t.name.clone(), |n| n.to_owned())
            }) {
                Ok(conn) => Some(Box::new(Connection::Client(conn))),
                Err(e) => {
                    warn!("TLS to {addr}: {e}");
                    self.counters.nodes[node].connect_failures += 1;
                    return Err(ConnectError::Failed(Cause::TlsHandshake));
                }
            },
            None if pool.https => {
                // Its certificate files failed to load (logged when the generation was made).
                self.counters.nodes[node].connect_failures += 1;
                return Err(ConnectError::Failed(Cause::TlsHandshake));
            }
            None => None,
        };
        let budget = self.budgets[node].clone();
        let (max_connections, max_connecting) = (set.max_connections, set.max_connecting);
        if !budget.try_open(max_connections, max_connecting) {
            return Err(ConnectError::Budget);
        }
        let mut sock = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                debug!("connect to {addr}: {e}");
                budget.connect_done(max_connecting);
                budget.closed(max_connections);
                self.counters.nodes[node].connect_failures += 1;
                // Running out of descriptors or memory is ours, not the node's.
                let ours = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if !ours {
                    self.node_failed(node);
                }
                return Err(ConnectError::Failed(connect_cause(&e)));
            }
        };
        let _ = sock.set_nodelay(true);
        let uid = self.ups.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            up_token(uid),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("registering an upstream socket failed: {e}");
            budget.connect_done(max_connecting);
            budget.closed(max_connections);
            return Err(ConnectError::Failed(Cause::ConnectFailed));
        }
        let deadline = self.now + set.connect_ms;
        self.ups.insert(Upstream {
            sock,
            tls,
            handshaking: false,
            node,
            addr,
            budget,
            max_connections,
            max_connecting,
            state: UpState::Connecting,
            owner,
            readable: false,
            writable: false,
            hup: false,
            opened_at: self.now,
            served: 0,
            deadline,
            timer_at: 0,
            idle_reason: CloseReason::IdleTimeout,
            hint: KeepAliveHint::default(),
            idle_since: 0,
            connect_ms: 0,
            sni,
        });
        self.pools[node].open += 1;
        self.pools[node].connecting += 1;
        self.counters.nodes[node].connects += 1;
        self.arm(TimerKey::Up(uid), deadline);
        Ok(uid)
    }

    fn step_exchange(&mut self, cid: usize, mut ex: Box<Exchange>) -> (Phase, Step) {
        let mut progress = match self.flush_client(cid) {
            Ok(p) => p,
            Err(()) => return self.fail(cid, ex, Fault::ClientGone(Cause::ClientAbort)),
        };
        if progress && ex.answered {
            // The client took answer bytes: the wait for the upstream counts from here, not from
            // before the client fell behind (see `rearm_client`).
            ex.up_progress = ex.up_progress.max(self.now);
        }
        // Request body bytes may move into `to_up` even before a connection is ready.
        match self.pump_request(cid, &mut ex) {
            Ok(p) => progress |= p,
            Err(f) => return self.fail(cid, ex, f),
        }
        if !ex.answered && self.client_left(cid, &ex) {
            // Nobody is left to answer: stop the upstream's work now rather than at its answer
            // or its read timeout.
            return self.fail(cid, ex, Fault::ClientGone(Cause::ClientAbort));
        }
        let Some(uid) = ex.up else {
            return (
                Phase::Exchange(ex),
                if progress { Step::Continue } else { Step::Wait },
            );
        };
        match self.ups.get(uid).map(|u| u.state) {
            Some(UpState::Active) => {}
            Some(UpState::Connecting) => {
                return (
                    Phase::Exchange(ex),
                    if progress { Step::Continue } else { Step::Wait },
                );
            }
            Some(UpState::Broken(cause)) => return self.fail(cid, ex, Fault::UpstreamGone(cause)),
            _ => return self.fail(cid, ex, Fault::UpstreamGone(Cause::UpstreamClosed)),
        }
        if !ex.send_failed {
            match self.send_upstream(uid, &mut ex) {
                Ok(p) => progress |= p,
                Err(_) => {
                    // The upstream stopped taking the request: often it answered early (413,
                    // 401) and closed. An answer that arrived still goes to the client, so read
                    // what is there before calling the exchange failed.
                    ex.send_failed = true;
                    if let Some(u) = self.ups.get_mut(uid) {
                        u.readable = true;
                    }
                    progress = true;
                }
            }
        }
        match self.recv_upstream(uid, &mut ex) {
            Ok(p) => progress |= p,
            Err(f) => return self.fail(cid, ex, f),
        }
        match self.relay_response(cid, &mut ex) {
            Ok(Some(tunnel)) => {
                self.log_end(cid, 101, 0, Some((&ex, 0)), None);
                self.retire(ex);
                return (Phase::Tunnel(tunnel), Step::Continue);
            }
            Ok(None) => {}
            Err(f) => return self.fail(cid, ex, f),
        }
        // EOF ends the exchange only once everything read before it has been relayed.
        if ex.up_eof && ex.from_up.as_ref().is_none_or(Buf::is_empty) {
            match ex.resp {
                Resp::Body(BodyOut::Close) => ex.resp = Resp::Done,
                Resp::Done => {}
                _ => {
                    let cause = if ex.send_failed {
                        Cause::UpstreamReset
                    } else {
                        Cause::UpstreamClosed
                    };
                    return self.fail(cid, ex, Fault::UpstreamGone(cause));
                }
            }
        }
        match self.flush_client(cid) {
            Ok(p) => progress |= p,
            Err(()) => return self.fail(cid, ex, Fault::ClientGone(Cause::ClientAbort)),
        }
        if matches!(ex.resp, Resp::Done) {
            let req_done =
                matches!(ex.req, BodyIn::Done) && ex.sent == ex.to_up.len() && !ex.send_failed;
            if req_done || ex.up_eof || ex.send_failed || !self.keeps_draining(&mut ex) {
                return self.finish_exchange(cid, ex, req_done);
            }
        }
        (
            Phase::Exchange(ex),
            if progress { Step::Continue } else { Step::Wait },
        )
    }

    /// Whether an exchange whose answer is complete goes on sending the rest of its request body
    /// so that the upstream connection can be pooled: only when the client keeps its connection
    /// too, and for at most `DRAIN_MAX_BYTES` more within `DRAIN_TIMEOUT_MS` (the clock starts
    /// at the first call). Past either the connection closes, as it had to before.
    fn keeps_draining(&mut self, ex: &mut Exchange) -> bool {
        if !ex.keep_client || !ex.up_reusable {
            return false;
        }
        if ex.drain_until == 0 {
            ex.drain_until = self.now + DRAIN_TIMEOUT_MS;
            ex.drain_left = DRAIN_MAX_BYTES;
        }
        self.now < ex.drain_until && ex.drain_left > 0
    }

    /// Whether the client of an exchange that has not been answered yet is gone: it closed or
    /// reset its connection after sending the whole request. Bytes it sent before its FIN (a
    /// pipelined request) mean it still waits, as nginx judges it; so does everything with
    /// `client.ignore_abort`. Only a client whose FIN or reset was reported is read here.
    fn client_left(&mut self, cid: usize, ex: &Exchange) -> bool {
        if self.shared.cfg.client.ignore_abort || !matches!(ex.req, BodyIn::Done) {
            return false;
        }
        let Some(c) = self.clients.get_mut(cid) else {
            return true;
        };
        if !c.hup {
            return false;
        }
        loop {
            if c.rbuf.as_ref().is_some_and(|b| !b.is_empty()) {
                return false;
            }
            if c.eof {
                return true;
            }
            if !c.readable {
                return false;
            }
            if c.rbuf.is_none() {
                match self.bufs.checkout() {
                    Some(b) => c.rbuf = Some(b),
                    None => return false,
                }
            }
            match end!(c).read_into(c.rbuf.as_mut().expect("present")) {
                ReadOutcome::Data => c.last_active = self.now,
                ReadOutcome::Blocked => {
                    self.bufs.release_if_empty(&mut c.rbuf);
                    return false;
                }
                ReadOutcome::Eof => c.eof = true,
                ReadOutcome::Failed => return true,
            }
        }
    }

    /// Moves request body bytes from the client into `to_up`, reading the client as needed. A
    /// chunked body is framed afresh on the way (`body::reframe`): whatever chunks the client
    /// sent, each pass forwards what it read as one chunk, so a body of a million one-byte
    /// chunks costs the upstream a few hundred chunks, and relaying it costs per buffer.
    fn pump_request(&mut self, cid: usize, ex: &mut Exchange) -> Result<bool, Fault> {
        let gone = Fault::ClientGone(Cause::ClientAbort);
        let c = self.clients.get_mut(cid).ok_or(gone)?;
        let mut progress = false;
        loop {
            if matches!(ex.req, BodyIn::Done) {
                return Ok(progress);
            }
            if ex.drain_until != 0 && ex.drain_left == 0 {
                // Draining after the answer, and the bound is spent: the caller gives up.
                return Ok(progress);
            }
            let has = c.rbuf.as_ref().is_some_and(|b| !b.is_empty());
            if !has {
                if c.eof {
                    return Err(gone);
                }
                if !c.readable {
                    return Ok(progress);
                }
                if c.rbuf.is_none() {
                    c.rbuf = Some(
                        self.bufs
                            .checkout()
                            .ok_or(Fault::ClientBad(Cause::NoBuffer))?,
                    );
                }
                match end!(c).read_into(c.rbuf.as_mut().expect("present")) {
                    ReadOutcome::Data => {
                        c.last_active = self.now;
                        progress = true;
                        continue;
                    }
                    ReadOutcome::Blocked => return Ok(progress),
                    ReadOutcome::Eof => {
                        c.eof = true;
                        return Err(gone);
                    }
                    ReadOutcome::Failed => return Err(gone),
                }
            }
            // Make room in `to_up`, giving up the ability to replay if we must drop sent bytes.
            // Re-framing may add a little to what it reads, so a chunked body needs that much
            // more room to move at all.
            let slack = match ex.req {
                BodyIn::Chunked(_) => 2 * body::REFRAME_SLACK,
                _ => 0,
            };
            if ex.to_up.free() <= slack {
                if ex.sent == 0 {
                    return Ok(progress);
                }
                ex.to_up.consume(ex.sent);
                ex.sent = 0;
                ex.intact = false;
            }
            let mut room = ex.to_up.free();
            if ex.drain_until != 0 {
                // After the answer, only the bytes the drain bound still allows.
                room = room.min(usize::try_from(ex.drain_left).unwrap_or(usize::MAX));
            }
            let before = ex.to_up.len();
            let rb = c.rbuf.as_mut().expect("has bytes");
            let avail = rb.len().min(room);
            match &mut ex.req {
                BodyIn::Done => unreachable!("checked at the top of the loop"),
                BodyIn::Length(rem) => {
                    let n = avail.min(usize::try_from(*rem).unwrap_or(usize::MAX));
                    ex.to_up.push(&rb.filled()[..n]);
                    rb.consume(n);
                    *rem -= n as u64;
                    if *rem == 0 {
                        ex.req = BodyIn::Done;
                    }
                }
                BodyIn::Chunked(dec) => {
                    let take = avail.min(reframe_window(room, self.limits.accept_bare_lf));
                    let input = &rb.filled()[..take];
                    self.out.clear();
                    let d = body::reframe(dec, input, &mut self.out).map_err(|e| match e {
                        BodyError::TooLarge => Fault::ClientBad(Cause::BodyTooLarge),
                        _ => Fault::ClientBad(Cause::BadRequestBody),
                    })?;
                    ex.to_up.push(&self.out);
                    rb.consume(d.consumed);
                    if d.done {
                        ex.req = BodyIn::Done;
                    }
                }
            }
            if ex.drain_until != 0 {
                let moved = (ex.to_up.len() - before) as u64;
                ex.drain_left = ex.drain_left.saturating_sub(moved.max(1));
            }
            progress = true;
        }
    }

    fn send_upstream(&mut self, uid: usize, ex: &mut Exchange) -> Result<bool, Fault> {
        let gone = Fault::UpstreamGone(Cause::UpstreamReset);
        let u = self.ups.get_mut(uid).ok_or(gone)?;
        if ex.sent >= ex.to_up.len() || !u.writable {
            return Ok(false);
        }
        let n = end!(u)
            .write_from(&ex.to_up.filled()[ex.sent..])
            .map_err(|()| gone)?;
        ex.sent += n;
        ex.wrote += n as u64;
        if n > 0 {
            ex.up_progress = self.now;
        }
        Ok(n > 0)
    }

    fn recv_upstream(&mut self, uid: usize, ex: &mut Exchange) -> Result<bool, Fault> {
        let u = self
            .ups
            .get_mut(uid)
            .ok_or(Fault::UpstreamGone(Cause::UpstreamClosed))?;
        if !u.readable || ex.up_eof {
            return Ok(false);
        }
        if ex.from_up.is_none() {
            ex.from_up = Some(
                self.bufs
                    .checkout()
                    .ok_or(Fault::UpstreamGone(Cause::NoBuffer))?,
            );
        }
        let buf = ex.from_up.as_mut().expect("present");
        match end!(u).read_into(buf) {
            ReadOutcome::Data => {
                ex.up_progress = self.now;
                if !ex.resp_started {
                    ex.resp_started = true;
                    // The upstream has the request: the replay copy is no longer needed.
                    if ex.sent > 0 && ex.sent == ex.to_up.len() {
                        ex.to_up.consume(ex.sent);
                        ex.sent = 0;
                    }
                    ex.intact = false;
                }
                Ok(true)
            }
            ReadOutcome::Blocked => Ok(false),
            ReadOutcome::Eof => {
                ex.up_eof = true;
                Ok(true)
            }
            ReadOutcome::Failed => Err(Fault::UpstreamGone(Cause::UpstreamReset)),
        }
    }

    /// Parses response heads and moves body bytes from `from_up` to the client's `wbuf`.
    /// Returns a tunnel when the upstream switched protocols.
    fn relay_response(&mut self, cid: usize, ex: &mut Exchange) -> Result<Option<Tunnel>, Fault> {
        let max_requests = self.shared.cfg.client.max_requests;
        let shutting = self.shutdown_at.is_some();
        let c = self
            .clients
            .get_mut(cid)
            .ok_or(Fault::ClientGone(Cause::ClientAbort))?;
        let plain = c.tls.is_none();
        loop {
            let Some(from) = ex.from_up.as_mut() else {
                return Ok(None);
            };
            if from.is_empty() {
                self.bufs.release(&mut ex.from_up);
                return Ok(None);
            }
            if c.wbuf.is_none() {
                c.wbuf = Some(
                    self.bufs
                        .checkout()
                        .ok_or(Fault::UpstreamGone(Cause::NoBuffer))?,
                );
            }
            let w = c.wbuf.as_mut().expect("present");
            match &mut ex.resp {
                Resp::Head => {
                    let h = match head::parse_response(
                        from.filled(),
                        &self.limits,
                        ex.head_request,
                        &mut self.headers,
                    ) {
                        Ok(Some(h)) => h,
                        Ok(None) => {
                            if from.free() == 0 {
                                return Err(Fault::UpstreamBad(Cause::BadResponse));
                            }
                            return Ok(None);
                        }
                        Err(e) => {
                            debug!("invalid response head from pool {}: {e:?}", ex.node);
                            return Err(Fault::UpstreamBad(Cause::BadResponse));
                        }
                    };
                    let interim = (100..200).contains(&h.status) && h.status != 101;
                    if h.status == 101 {
                        let src = from.filled();
                        let named = self
                            .headers
                            .iter()
                            .filter(|f| f.name.of(src).eq_ignore_ascii_case(b"upgrade"))
                            .map(|f| f.value.of(src));
                        if !ex.offer.accepts(named) {
                            // A switch hearth did not ask for (an h2c upgrade it stripped, say):
                            // tunnelling it would let the client past the route table.
                            return Err(Fault::UpstreamBad(Cause::UnexpectedUpgrade));
                        }
                    }
                    let dechunk =
                        ex.client_version == Version::Http10 && h.body == RespBody::Chunked;
                    // A request whose body is still on its way may keep its connection when the
                    // upstream will keep its own and the rest of the body is small enough to send
                    // on after the answer (`keeps_draining`): answering early, as auth failures
                    // and fixed answers do, then costs no upstream connection.
                    let req_finishes = match ex.req {
                        BodyIn::Done => true,
                        BodyIn::Length(rem) => {
                            let unsent = (ex.to_up.len() - ex.sent) as u64;
                            h.keep_alive && !ex.send_failed && rem + unsent <= DRAIN_MAX_BYTES
                        }
                        BodyIn::Chunked(_) => h.keep_alive && !ex.send_failed,
                    };
                    if !interim && h.status != 101 {
                        ex.keep_client = ex.req_keep_alive
                            && req_finishes
                            && h.body != RespBody::Close
                            && !dechunk
                            && !shutting
                            && (max_requests == 0 || c.served + 1 < max_requests);
                        ex.up_reusable = h.keep_alive && h.body != RespBody::Close;
                        ex.up_said_close = !h.keep_alive;
                        ex.status = h.status;
                        self.counters.nodes[ex.node].responded(h.status);
                        self.counters.nodes[ex.node]
                            .response
                            .record(self.now.saturating_sub(ex.started));
                        // An answer is the node's success: its failure count starts over.
                        if let Some(h) = self.health.get_mut(ex.node) {
                            h.ok();
                        }
                        if self.ewma {
                            let tried_at = self.tries.get(cid).map_or(ex.started, |t| t.tried_at);
                            if let Some(l) = self.latency.get_mut(ex.node) {
                                l.observe(self.now, self.now.saturating_sub(tried_at));
                            }
                        }
                        ex.hint = KeepAliveHint {
                            timeout_secs: h.ka_timeout,
                            max: h.ka_max,
                        };
                    }
                    // 1xx responses are not for HTTP/1.0 clients (RFC 9110 §15.2).
                    let forward = !(interim && ex.client_version == Version::Http10);
                    if forward {
                        self.out.clear();
                        let side = ClientSide {
                            version: ex.client_version,
                            keep_alive: ex.keep_client || interim || h.status == 101,
                            dechunk,
                            head_request: ex.head_request,
                        };
                        rewrite::response_head(
                            from.filled(),
                            &h,
                            &self.headers,
                            &side,
                            &mut self.out,
                        );
                        if self.out.len() > w.capacity() {
                            return Err(Fault::UpstreamBad(Cause::BadResponse));
                        }
                        if w.free() < self.out.len() {
                            return Ok(None); // wait for the client to drain
                        }
                        w.push(&self.out);
                        // An interim response does not commit us: a final 502 may still follow
                        // it if the upstream goes silent (RFC 9110 §15.2).
                        ex.answered |= !interim;
                    }
                    from.consume(h.head_len);
                    if interim {
                        continue;
                    }
                    if h.status == 101 {
                        let up = ex.up.take().expect("active exchange has an upstream");
                        return Ok(Some(Tunnel {
                            up,
                            from_up: ex.from_up.take(),
                            idle_ms: ex.set.read_ms,
                        }));
                    }
                    ex.resp = match h.body {
                        RespBody::None => Resp::Done,
                        RespBody::Length(0) => Resp::Done,
                        RespBody::Length(n) => Resp::Body(BodyOut::Length(n)),
                        // An upstream whose head ended lines in LF alone may frame its chunks
                        // that way too; they are read leniently and written out with CRLF.
                        RespBody::Chunked => Resp::Body(BodyOut::Chunked {
                            dec: ChunkedDecoder::from_limits(&self.limits).lenient(h.bare_lf),
                            dechunk,
                            reframe: h.bare_lf,
                        }),
                        RespBody::Close => Resp::Body(BodyOut::Close),
                    };
                }
                Resp::Body(body) => {
                    let room = w.free();
                    if room == 0 {
                        return Ok(None);
                    }
                    let avail = from.len().min(room);
                    match body {
                        BodyOut::Length(rem) => {
                            let n = avail.min(usize::try_from(*rem).unwrap_or(usize::MAX));
                            if queue_body(&c.sock, plain, &mut c.writable, w, &from.filled()[..n]) {
                                c.last_write = self.now;
                            }
                            ex.sent_body += n as u64;
                            from.consume(n);
                            *rem -= n as u64;
                            if *rem == 0 {
                                ex.resp = Resp::Done;
                            }
                        }
                        BodyOut::Chunked {
                            dec,
                            dechunk: false,
                            reframe: true,
                        } => {
                            let window = reframe_window(room, true);
                            if window == 0 {
                                return Ok(None);
                            }
                            let input = &from.filled()[..avail.min(window)];
                            self.out.clear();
                            let d = body::reframe(dec, input, &mut self.out)
                                .map_err(|_| Fault::UpstreamBad(Cause::BadResponseBody))?;
                            if queue_body(&c.sock, plain, &mut c.writable, w, &self.out) {
                                c.last_write = self.now;
                            }
                            from.consume(d.consumed);
                            ex.sent_body += self.out.len() as u64;
                            if d.done {
                                ex.resp = Resp::Done;
                            }
                        }
                        BodyOut::Chunked { dec, dechunk, .. } => {
                            let input = &from.filled()[..avail];
                            let mut relayed = 0u64;
                            let d = if *dechunk {
                                dec.decode(input, &mut |a, b| {
                                    w.push(&input[a..b]);
                                    relayed += (b - a) as u64;
                                })
                            } else {
                                dec.decode(input, &mut |_, _| {})
                            }
                            .map_err(|_| Fault::UpstreamBad(Cause::BadResponseBody))?;
                            if !*dechunk {
                                let bytes = &input[..d.consumed];
                                if queue_body(&c.sock, plain, &mut c.writable, w, bytes) {
                                    c.last_write = self.now;
                                }
                                relayed = d.consumed as u64;
                            }
                            from.consume(d.consumed);
                            ex.sent_body += relayed;
                            if d.done {
                                ex.resp = Resp::Done;
                            }
                        }
                        BodyOut::Close => {
                            let bytes = &from.filled()[..avail];
                            if queue_body(&c.sock, plain, &mut c.writable, w, bytes) {
                                c.last_write = self.now;
                            }
                            ex.sent_body += avail as u64;
                            from.consume(avail);
                        }
                    }
                }
                Resp::Done => {
                    // Bytes past the end of the response: never forwarded, never reused.
                    ex.up_dirty = true;
                    from.clear();
                }
            }
        }
    }

    /// Ends an exchange whose response is complete: the upstream connection goes back to the
    /// pool (or to a waiter) if it may, and the client reads its next request or closes.
    fn finish_exchange(
        &mut self,
        cid: usize,
        mut ex: Box<Exchange>,
        req_done: bool,
    ) -> (Phase, Step) {
        let uid = ex.up.take().expect("finished exchange had an upstream");
        let connect_ms = if ex.reused {
            0
        } else {
            self.ups.get(uid).map_or(0, |u| u.connect_ms)
        };
        self.log_end(cid, ex.status, ex.sent_body, Some((&ex, connect_ms)), None);
        let leftover = ex.from_up.as_ref().is_some_and(|b| !b.is_empty());
        let reusable = ex.up_reusable && !ex.up_dirty && !leftover && !ex.up_eof && req_done;
        if reusable {
            self.release_up(uid, ex.hint, ex.set.pool);
        } else {
            let why = if ex.up_said_close {
                CloseReason::UpstreamClose
            } else if !req_done {
                // Answered before the whole request went, and the rest could not follow.
                CloseReason::RequestUnfinished
            } else {
                CloseReason::NotReusable
            };
            self.close_up(uid, why);
        }
        let keep = ex.keep_client && req_done;
        self.retire(ex);
        let Some(c) = self.clients.get_mut(cid) else {
            return (Phase::Closing, Step::Closed);
        };
        c.served += 1;
        c.last_active = self.now;
        if keep {
            (Phase::Head, Step::Continue)
        } else {
            (Phase::Closing, Step::Continue)
        }
    }

    /// Handles a failed exchange: replay, a canned answer, or cutting the connection.
    fn fail(&mut self, cid: usize, mut ex: Box<Exchange>, f: Fault) -> (Phase, Step) {
        let node = ex.node;
        if ex.up.is_none() {
            // Queued: forget the waiter.
            self.forget_waiter(node, cid);
        }
        match f {
            Fault::UpstreamGone(_)
                if !ex.resp_started && ex.reused && !ex.replayed && ex.intact && ex.replay_safe =>
            {
                // The reused connection died before answering: the upstream closed it as we sent.
                // That is an idle close too, and what the learned idle timeout learns from.
                if let Some(uid) = ex.up.take() {
                    self.upstream_closed_idle(uid);
                }
                self.counters.nodes[node].replays += 1;
                ex.replayed = true;
                ex.sent = 0;
                ex.wrote = 0;
                ex.send_failed = false;
                ex.up_eof = false;
                ex.resp = Resp::Head;
                self.bufs.release(&mut ex.from_up);
                debug!("replaying a request on a fresh connection to pool {node}");
                self.start_exchange(cid, ex, true)
            }
            Fault::UpstreamGone(_) | Fault::UpstreamBad(_) if !ex.resp_started && !ex.answered => {
                // Lost before any response byte. Only a fresh connection's loss says something
                // about the node: a reused one may just have been closed as we sent on it.
                if let Some(uid) = ex.up.take() {
                    self.close_up(uid, CloseReason::Error);
                }
                if !ex.reused {
                    self.node_failed(node);
                }
                if self.next_try(cid, &mut ex) {
                    return self.start_exchange(cid, ex, false);
                }
                self.give_up(cid, ex, f)
            }
            Fault::UpstreamGone(_) | Fault::UpstreamBad(_) | Fault::ClientBad(_) => {
                self.give_up(cid, ex, f)
            }
            Fault::ClientGone(cause) => {
                // 499, as nginx logs a request whose client went away before the answer.
                let status = if ex.answered { ex.status } else { 499 };
                if !matches!(ex.resp, Resp::Done) {
                    self.counters.nodes[node].client_aborts += 1;
                }
                self.report(cid, cause, Some(&ex));
                self.log_end(cid, status, ex.sent_body, Some((&ex, 0)), Some(cause));
                if let Some(uid) = ex.up.take() {
                    self.abandon_up(uid, &ex);
                }
                self.retire(ex);
                self.close_client(cid);
                (Phase::Closing, Step::Closed)
            }
        }
    }

    /// Lets go of the connection of an exchange that ends early. One that never carried a byte
    /// of it is as good as new: pooled if connected, pooled once connected if still connecting.
    /// Anything else holds part of a request and closes.
    fn abandon_up(&mut self, uid: usize, ex: &Exchange) {
        let Some(u) = self.ups.get_mut(uid) else {
            return;
        };
        if ex.wrote > 0 || ex.resp_started {
            self.close_up(uid, CloseReason::NotReusable);
            return;
        }
        match u.state {
            UpState::Connecting => u.owner = None,
            UpState::Active => {
                u.owner = None;
                u.deadline = 0;
                let hint = u.hint;
                self.release_up(uid, hint, ex.set.pool);
            }
            _ => self.close_up(uid, CloseReason::NotReusable),
        }
    }

    /// Ends an exchange that failed with its cause's answer (502, or the client's error status),
    /// or cuts the connection when a response had already begun.
    fn give_up(&mut self, cid: usize, mut ex: Box<Exchange>, f: Fault) -> (Phase, Step) {
        let cause = f.cause();
        if let Some(uid) = ex.up.take() {
            match f {
                // The client's fault: a connection that carried none of the request is kept.
                Fault::ClientBad(_) => self.abandon_up(uid, &ex),
                _ => self.close_up(uid, CloseReason::Error),
            }
        }
        if ex.answered {
            // Cut mid-response: what arrived still goes out, then the connection closes without
            // the rest, so the client sees a message shorter than its framing promised rather
            // than a complete one. Logged with the status that had gone out.
            self.report(cid, cause, Some(&ex));
            self.log_end(cid, ex.status, ex.sent_body, Some((&ex, 0)), Some(cause));
            self.retire(ex);
            return (Phase::Closing, Step::Continue);
        }
        let keep = matches!(f, Fault::UpstreamGone(_) | Fault::UpstreamBad(_))
            && matches!(ex.req, BodyIn::Done)
            && ex.req_keep_alive
            && !ex.send_failed;
        if let Some(c) = self.clients.get_mut(cid) {
            c.served += 1;
        }
        let r = self.answer_for(cid, cause, keep, Some(&ex));
        self.retire(ex);
        r
    }

    fn step_tunnel(&mut self, cid: usize, mut t: Tunnel) -> (Phase, Step) {
        let mut progress = match self.flush_client(cid) {
            Ok(p) => p,
            Err(()) => return self.end_tunnel(cid, t),
        };
        let Some(c) = self.clients.get_mut(cid) else {
            return (Phase::Closing, Step::Closed);
        };
        let Some(u) = self.ups.get_mut(t.up) else {
            return self.end_tunnel(cid, t);
        };
        let up = pump(&mut end!(c), &mut c.rbuf, &mut end!(u), &mut self.bufs);
        let down = pump(&mut end!(u), &mut t.from_up, &mut end!(c), &mut self.bufs);
        match (up, down) {
            (Ok(a), Ok(b)) => progress |= a || b,
            _ => return self.end_tunnel(cid, t),
        }
        if progress {
            c.last_active = self.now;
        }
        (
            Phase::Tunnel(t),
            if progress { Step::Continue } else { Step::Wait },
        )
    }

    fn end_tunnel(&mut self, cid: usize, mut t: Tunnel) -> (Phase, Step) {
        // Deliver what the upstream already sent before closing.
        if let (Some(c), Some(fb)) = (self.clients.get_mut(cid), t.from_up.as_mut()) {
            let mut end = end!(c);
            let _ = end.write_from(fb.filled());
            let _ = end.flush_tls();
        }
        self.bufs.release(&mut t.from_up);
        self.close_up(t.up, CloseReason::NotReusable);
        self.close_client(cid);
        (Phase::Closing, Step::Closed)
    }

    fn step_closing(&mut self, cid: usize) -> (Phase, Step) {
        if self.flush_client(cid).is_err() {
            self.close_client(cid);
            return (Phase::Closing, Step::Closed);
        }
        let Some(c) = self.clients.get_mut(cid) else {
            return (Phase::Closing, Step::Closed);
        };
        if c.wbuf.as_ref().is_some_and(|w| !w.is_empty()) {
            return (Phase::Closing, Step::Wait);
        }
        if c.eof {
            // The client already closed its side: nothing to linger for.
            self.close_client(cid);
            return (Phase::Closing, Step::Closed);
        }
        if let Some(tls) = c.tls.as_deref_mut() {
            // Say we are done at the TLS level too (rustls sends it once however often asked),
            // and wait until it is out before shutting the write side.
            tls.send_close_notify();
            let mut end = end!(c);
            if end.flush_tls().is_err() {
                self.close_client(cid);
                return (Phase::Closing, Step::Closed);
            }
            if end.tls_pending() {
                return (Phase::Closing, Step::Wait);
            }
        }
        let _ = c.sock.shutdown(Shutdown::Write);
        c.last_write = self.now;
        (Phase::Lingering, Step::Continue)
    }

    fn step_lingering(&mut self, cid: usize) -> (Phase, Step) {
        let Some(c) = self.clients.get_mut(cid) else {
            return (Phase::Closing, Step::Closed);
        };
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !c.readable {
                return (Phase::Lingering, Step::Wait);
            }
            match c.sock.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return (Phase::Lingering, Step::Wait);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close_client(cid);
        (Phase::Closing, Step::Closed)
    }

    /// Counts one more client connection against the process cap; false at the cap.
    fn reserve_client_slot(&self, cap: usize) -> bool {
        self.process
            .clients_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Accepting resumes only below 90% of `max_client_connections`, so a process at its cap
    /// does not flap between accepting one connection and pausing.
    fn below_resume_mark(&self) -> bool {
        let cap = self.shared.cfg.max_client_connections;
        cap == 0 || self.process.clients_open.load(Ordering::Acquire) < cap - cap / 10
    }

    /// Ends an exchange's life: its buffers go back to the pool and its box to the free list,
    /// where the next request's exchange comes from.
    fn retire(&mut self, mut ex: Box<Exchange>) {
        self.bufs
            .give_back(mem::replace(&mut ex.to_up, Buf::empty()));
        self.bufs.release(&mut ex.from_up);
        // Bounded like the buffer pool's reserve: a burst does not pin its peak forever.
        if self.spare.len() < MAX_SPARE_EXCHANGES {
            self.spare.push(ex);
        }
    }

    fn close_client(&mut self, cid: usize) {
        self.log_end(cid, 499, 0, None, Some(Cause::ClientAbort));
        let Some(mut c) = self.clients.remove(cid) else {
            return;
        };
        if self.shared.cfg.max_client_connections > 0 {
            self.process.clients_open.fetch_sub(1, Ordering::AcqRel);
        }
        self.bufs.release(&mut c.rbuf);
        self.bufs.release(&mut c.wbuf);
        match mem::replace(&mut c.phase, Phase::Closing) {
            Phase::Exchange(mut ex) => {
                if let Some(uid) = ex.up.take() {
                    self.close_up(uid, CloseReason::NotReusable);
                } else {
                    self.forget_waiter(ex.node, cid);
                }
                self.retire(ex);
            }
            Phase::Tunnel(mut t) => {
                self.bufs.release(&mut t.from_up);
                self.close_up(t.up, CloseReason::NotReusable);
            }
            _ => {}
        }
        // Dropping the socket closes it, which also takes it out of epoll: no epoll_ctl needed.
    }

    // ---------------------------------------------------------------- upstream connections

    fn upstream_ready(&mut self, uid: usize) {
        let Some(u) = self.ups.get_mut(uid) else {
            return;
        };
        match u.state {
            UpState::Connecting => {
                if !u.writable && !u.readable {
                    return;
                }
                // Ok(()) connected, Err(cause) failed, None still connecting.
                let outcome = if u.handshaking {
                    Some(Ok(()))
                } else {
                    match u.sock.take_error() {
                        Ok(None) => match u.sock.peer_addr() {
                            Ok(_) => Some(Ok(())),
                            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
                            Err(e) => Some(Err(connect_cause(&e))),
                        },
                        Ok(Some(e)) => Some(Err(connect_cause(&e))),
                        Err(_) => Some(Err(Cause::ConnectFailed)),
                    }
                };
                let Some(mut outcome) = outcome else { return };
                if outcome.is_ok() && u.tls.is_some() {
                    // TCP is up: the TLS handshake runs while the connection stays Connecting.
                    u.handshaking = true;
                    let node = &mut self.counters.nodes[u.node];
                    match handshake(u) {
                        Handshake::Pending => return,
                        Handshake::Done => {
                            u.handshaking = false;
                            let kind = u.tls.as_deref().and_then(|t| t.handshake_kind());
                            if kind == Some(HandshakeKind::Resumed) {
                                node.tls_resumed_handshakes += 1;
                            } else {
                                node.tls_full_handshakes += 1;
                            }
                        }
                        Handshake::Failed(why) => {
                            node.tls_handshake_failures += 1;
                            let pool_tls = self.shared.pool(u.node).and_then(|p| p.tls.as_ref());
                            let sni = pool_tls.map_or_else(String::new, |t| {
                                request_sni_name(&self.sni_names, t, u.sni, u.owner)
                                    .map_or_else(|| t.name.to_str().into_owned(), str::to_owned)
                            });
                            if self.tls_warned.len() <= u.node {
                                self.tls_warned.resize(u.node + 1, 0);
                            }
                            let last = &mut self.tls_warned[u.node];
                            let line = format!(
                                "TLS handshake with upstream {} (SNI {sni}) failed: {why}",
                                u.addr
                            );
                            if *last == 0 || self.now >= *last + 60_000 {
                                *last = self.now.max(1);
                                warn!("{line}");
                            } else {
                                debug!("{line}");
                            }
                            outcome = Err(Cause::TlsHandshake);
                        }
                    }
                }
                let node = u.node;
                let owner = u.owner;
                u.budget.connect_done(u.max_connecting);
                self.pools[node].connecting -= 1;
                if let Err(cause) = outcome {
                    debug!("connect to {} failed", u.addr);
                    self.counters.nodes[node].connect_failures += 1;
                    u.state = UpState::Broken(cause);
                    match owner {
                        // The exchange counts it against the node when it sees the break.
                        Some(cid) => self.drive(cid),
                        None => {
                            self.close_up(uid, CloseReason::Error);
                            self.node_failed(node);
                        }
                    }
                } else {
                    u.state = UpState::Active;
                    u.deadline = 0;
                    u.connect_ms = self.now.saturating_sub(u.opened_at);
                    match owner {
                        Some(cid) => self.drive(cid),
                        None => match self.shared.settings_of_pool(node) {
                            Some(set) => self.release_up(uid, KeepAliveHint::default(), set.pool),
                            None => self.close_up(uid, CloseReason::Removed),
                        },
                    }
                }
            }
            UpState::Active | UpState::Broken(_) => {
                if let Some(cid) = u.owner {
                    self.drive(cid);
                }
            }
            UpState::Idle(_) => {
                if !up_quiet(u) {
                    self.upstream_closed_idle(uid);
                }
            }
        }
    }

    /// Returns a connection after a clean exchange: to the next waiter, to a core whose requests
    /// wait for it, or to the idle list. `settings` are those of the exchange that used it.
    fn release_up(&mut self, uid: usize, hint: KeepAliveHint, settings: PoolSettings) {
        let live = self
            .ups
            .get(uid)
            .is_some_and(|u| self.shared.pool(u.node).is_some());
        let Some(u) = self.ups.get_mut(uid) else {
            return;
        };
        let node = u.node;
        u.served += u64::from(u.owner.is_some());
        u.owner = None;
        u.hint = hint;
        if self.shutdown_at.is_some() {
            self.close_up(uid, CloseReason::NotReusable);
            return;
        }
        if !live {
            // A reload removed the node: finish with it rather than keep it warm.
            self.close_up(uid, CloseReason::Removed);
            return;
        }
        if self.down.get(node).copied().unwrap_or(false) {
            // Active health checks took the node out while this connection was in use.
            self.close_up(uid, CloseReason::Health);
            return;
        }
        if let Some(why) = pool::retire_reason(self.now, u.opened_at, u.served, &settings, hint) {
            self.close_up(uid, why);
            return;
        }
        if !up_quiet(u) {
            self.close_up(uid, CloseReason::Stale);
            return;
        }
        let (opened_at, capped, sni) = (u.opened_at, u.max_connections > 0, u.sni);
        // Hand it straight to a waiter for its name if there is one.
        if let Some(cid) = self.next_waiter(node, Some(sni)) {
            self.attach(uid, cid, true);
            return;
        }
        if capped && self.pools[node].has_waiters() {
            // Requests wait for connections made for other names while this one holds budget
            // they need: close it, so the freed budget opens one for them (`budget_freed`).
            self.close_up(uid, CloseReason::Evicted);
            return;
        }
        if capped {
            if let Some(core) = self.budgets[node].waiting_core(self.id) {
                // Requests wait on another core while this one would sit on the connection.
                self.hand_over(uid, core);
                return;
            }
        }
        let learned = self.budgets[node].learned_idle_ms();
        let (deadline, why) = pool::idle_deadline(self.now, opened_at, &settings, hint, learned);
        let (h, evicted) = self.pools[node].put_idle(uid, settings.size);
        let u = self.ups.get_mut(uid).expect("checked above");
        u.state = UpState::Idle(h);
        u.idle_since = self.now;
        u.deadline = deadline;
        u.idle_reason = why;
        self.arm(TimerKey::Up(uid), deadline);
        if let Some(old) = evicted {
            if let Some(o) = self.ups.get_mut(old) {
                o.state = UpState::Active; // out of the list already
            }
            self.close_up(old, CloseReason::Evicted);
            self.note_eviction(node, settings.size);
        }
    }

    /// Evicting idle connections means the pool is smaller than the concurrency it serves and
    /// connections are being reopened; say so, at most once a minute per node and core.
    fn note_eviction(&mut self, node: PoolId, size: usize) {
        if self.evictions.len() <= node {
            self.evictions.resize(node + 1, (0, 0));
        }
        let now = self.now;
        let (since, count) = &mut self.evictions[node];
        *count += 1;
        if *since != 0 && now < *since + 60_000 {
            return;
        }
        let addr = self
            .shared
            .pool(node)
            .map_or_else(|| format!("pool {node}"), |p| p.addr.to_string());
        warn!(
            "core {}: closed {} idle connection(s) to {addr} because more than keepalive_pool.size ({size}) were idle at once; connections are being reopened: raise size to cover the concurrency per core",
            self.id, *count
        );
        *since = now.max(1);
        *count = 0;
    }

    /// Gives connection `uid` (connected, or still connecting) to the waiting client `cid`.
    fn attach(&mut self, uid: usize, cid: usize, reused: bool) {
        let now = self.now;
        let Some(u) = self.ups.get_mut(uid) else {
            return;
        };
        if u.state != UpState::Connecting {
            u.state = UpState::Active;
            u.deadline = 0;
        }
        u.owner = Some(cid);
        let node = u.node;
        if let Some(Phase::Exchange(ex)) = self.clients.get_mut(cid).map(|c| &mut c.phase) {
            ex.up = Some(uid);
            ex.reused = reused;
            ex.up_progress = now;
            // Only queued requests are attached this way.
            self.counters.nodes[node]
                .wait
                .record(now.saturating_sub(ex.queued_at));
        }
        if reused {
            self.counters.nodes[node].reuses += 1;
        }
        self.pending.push(cid);
    }

    /// Pops the first client still waiting for this node whose request needs a connection
    /// made for the SNI tag `want` (any with None). Clients waiting for other names keep their
    /// place; clients no longer waiting leave the queue.
    fn next_waiter(&mut self, node: PoolId, want: Option<u64>) -> Option<usize> {
        let clients = &self.clients;
        let (cid, left) =
            self.pools[node].take_waiter(|cid| match clients.get(cid).map(|c| &c.phase) {
                Some(Phase::Exchange(ex)) if ex.up.is_none() && ex.node == node => {
                    if want.is_none_or(|w| ex.sni == w) {
                        Verdict::Take
                    } else {
                        Verdict::Skip
                    }
                }
                _ => Verdict::Drop,
            });
        for _ in 0..left {
            self.budgets[node].remove_waiter(self.id);
        }
        cid
    }

    /// Budget was freed for `node`: connect for waiting requests while the caps allow. Each
    /// connection is made under its waiter's own settings.
    fn serve_waiters(&mut self, node: PoolId) {
        while let Some(cid) = self.next_waiter(node, None) {
            let Some(Phase::Exchange(ex)) = self.clients.get(cid).map(|c| &c.phase) else {
                continue;
            };
            let (set, sni) = (ex.set, ex.sni);
            match self.connect(node, Some(cid), &set, sni) {
                Ok(uid) => self.attach(uid, cid, false),
                Err(ConnectError::Budget) => {
                    // Still no room: back to the head of the queue.
                    self.pools[node].wait_front(cid);
                    self.budgets[node].add_waiter(self.id);
                    return;
                }
                Err(ConnectError::Failed(cause)) => self.fail_waiter(cid, cause),
            }
        }
    }

    /// Ends a queued request with a canned answer and closes its connection after it.
    fn fail_waiter(&mut self, cid: usize, cause: Cause) {
        let Some(c) = self.clients.get_mut(cid) else {
            return;
        };
        if let Phase::Exchange(ex) = mem::replace(&mut c.phase, Phase::Closing) {
            let (phase, step) = self.answer_for(cid, cause, false, Some(&ex));
            self.retire(ex);
            if step != Step::Closed {
                if let Some(c) = self.clients.get_mut(cid) {
                    c.phase = phase;
                }
                self.pending.push(cid);
            }
        }
    }

    fn forget_waiter(&mut self, node: PoolId, cid: usize) {
        if self.pools[node].forget_waiter(cid) {
            self.budgets[node].remove_waiter(self.id);
        }
    }

    /// Budget for `node` came free here: use it for local waiters, or tell a waiting core.
    fn budget_freed(&mut self, node: PoolId) {
        if self.pools[node].has_waiters() {
            self.serve_waiters(node);
        } else if let Some(core) = self.budgets[node].waiting_core(self.id) {
            let _ = self.process.peers[core].send(Control::Freed(node));
        }
    }

    /// Gives a connected, unowned upstream connection to core `to`, which has requests waiting
    /// for its node. The connection keeps its place in the node's budget.
    fn hand_over(&mut self, uid: usize, to: usize) {
        let Some(mut u) = self.ups.remove(uid) else {
            return;
        };
        let node = u.node;
        if let UpState::Idle(h) = u.state {
            self.pools[node].remove_idle(h);
        }
        self.pools[node].open -= 1;
        self.counters.nodes[node].handed_over += 1;
        // The socket moves to another core's epoll instance.
        let _ = self.poll.registry().deregister(&mut u.sock);
        let (budget, max_connections) = (u.budget.clone(), u.max_connections);
        let msg = Control::Adopt(Box::new(Handover {
            node,
            sock: u.sock,
            addr: u.addr,
            age_ms: self.now.saturating_sub(u.opened_at),
            served: u.served,
            hint: u.hint,
            budget: u.budget,
            max_connections: u.max_connections,
            max_connecting: u.max_connecting,
            tls: u.tls,
            sni: u.sni,
        }));
        if self.process.peers[to].send(msg).is_err() {
            // The message, and the socket with it, is gone: the connection is closed.
            budget.closed(max_connections);
            self.counters.nodes[node].closed(CloseReason::Error);
        }
    }

    /// Takes in a connection another core handed over.
    fn adopt(&mut self, h: Handover) {
        let Handover {
            node,
            mut sock,
            addr,
            age_ms,
            served,
            hint,
            budget,
            max_connections,
            max_connecting,
            tls,
            sni,
        } = h;
        let uid = self.ups.vacant_key();
        if node >= self.pools.len() {
            // A generation this core has not seen yet; cannot happen while reloads reach every
            // core before any hand-over, but do not keep a connection we cannot account.
            budget.closed(max_connections);
            return;
        }
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            up_token(uid),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("adopting a connection failed: {e}");
            budget.closed(max_connections);
            return;
        }
        self.ups.insert(Upstream {
            sock,
            // A pooled https connection finished its handshake on the core that opened it.
            tls,
            handshaking: false,
            node,
            addr,
            budget,
            max_connections,
            max_connecting,
            state: UpState::Active,
            owner: None,
            readable: false,
            writable: false,
            hup: false,
            opened_at: self.now.saturating_sub(age_ms),
            served,
            deadline: 0,
            timer_at: 0,
            idle_reason: CloseReason::IdleTimeout,
            hint,
            idle_since: 0,
            connect_ms: 0,
            sni,
        });
        self.pools[node].open += 1;
        match self.shared.settings_of_pool(node) {
            Some(set) => self.release_up(uid, hint, set.pool),
            None => self.close_up(uid, CloseReason::Removed),
        }
    }

    /// An idle pooled connection turned readable: the upstream closed it (or sent bytes nobody
    /// asked for). Records its idle age, learns from it, warns when our idle timeout is the
    /// longer one, and closes it.
    fn upstream_closed_idle(&mut self, uid: usize) {
        let Some(u) = self.ups.get(uid) else {
            return;
        };
        let (node, age, addr) = (u.node, self.now.saturating_sub(u.idle_since), u.addr);
        self.counters.nodes[node]
            .upstream_closed_idle_age
            .record(age);
        let budget = &self.budgets[node];
        budget.saw_idle_close(age);
        if let Some(set) = self.shared.settings_of_pool(node) {
            let ours = set.pool.idle_timeout.as_millis() as u64;
            let now_s = self.clock.wall_ms(self.now) / 1_000;
            if !set.pool.idle_auto && age < ours && budget.may_warn(now_s) {
                warn!(
                    "upstream {addr} closed a pooled connection idle for {:.1} s, before keepalive_pool.idle_timeout ({:.1} s) ran out; set keepalive_pool.idle_timeout below {:.1} s, or to \"auto\" to learn it",
                    age as f64 / 1000.0,
                    ours as f64 / 1000.0,
                    age as f64 / 1000.0
                );
            }
        }
        self.close_up(uid, CloseReason::Stale);
    }

    fn close_up(&mut self, uid: usize, why: CloseReason) {
        let Some(mut u) = self.ups.remove(uid) else {
            return;
        };
        if let (Some(tls), false) = (u.tls.as_deref_mut(), u.state == UpState::Connecting) {
            // Best effort, one write: a clean TLS close, so the session stays resumable.
            tls.send_close_notify();
            let _ = tls_flush(&mut u.sock, tls, &mut u.writable);
        }
        let node = u.node;
        if let UpState::Idle(h) = u.state {
            self.pools[node].remove_idle(h);
        }
        if u.state == UpState::Connecting {
            self.pools[node].connecting -= 1;
            u.budget.connect_done(u.max_connecting);
        }
        self.pools[node].open -= 1;
        self.counters.nodes[node].closed(why);
        let capped = u.max_connections > 0 || u.max_connecting > 0;
        u.budget.closed(u.max_connections);
        // Closing the socket also takes it out of epoll.
        drop(u);
        if capped {
            self.budget_freed(node);
        }
    }

    // ---------------------------------------------------------------- timers

    fn arm(&mut self, key: TimerKey, deadline: u64) {
        let slot = match key {
            TimerKey::Client(i) => self.clients.get_mut(i).map(|c| &mut c.timer_at),
            TimerKey::Up(i) => self.ups.get_mut(i).map(|u| &mut u.timer_at),
        };
        let Some(timer_at) = slot else { return };
        if deadline == 0 {
            return;
        }
        // An entry already armed at or before this deadline will fire and re-arm lazily.
        if *timer_at != 0 && *timer_at <= deadline {
            return;
        }
        *timer_at = deadline;
        self.timers.insert(deadline, (key, deadline));
    }

    fn rearm_client(&mut self, cid: usize) {
        let cfg = &self.shared.cfg;
        let Some(c) = self.clients.get(cid) else {
            return;
        };
        let ms = |d: Duration| d.as_millis() as u64;
        let deadline = match &c.phase {
            Phase::Head => match c.head_started {
                Some(t) => t + ms(cfg.client.header_timeout),
                None if c.served == 0 => c.accepted_at + ms(cfg.client.header_timeout),
                None => c.last_active + ms(cfg.client.idle_timeout),
            },
            Phase::Exchange(ex) => {
                let state = ex.up.and_then(|u| self.ups.get(u)).map(|u| u.state);
                // While answer bytes wait for the client, hearth is not reading the upstream (the
                // client sets the pace): the client's send timeout runs, not the upstream's read
                // timeout, which starts over once the client has caught up (`step_exchange`).
                let behind = c.wbuf.as_ref().is_some_and(|w| !w.is_empty());
                let mut d = match state {
                    None => ex.queued_at + ex.set.queue_ms,
                    Some(UpState::Connecting) => ex.up_progress + ex.set.connect_ms,
                    _ if behind => u64::MAX,
                    _ => ex.up_progress + ex.set.read_ms,
                };
                if behind {
                    d = d.min(c.last_write + ms(cfg.client.send_timeout));
                }
                if !matches!(ex.req, BodyIn::Done) && c.rbuf.as_ref().is_none_or(Buf::is_empty) {
                    d = d.min(c.last_active + ms(cfg.client.body_timeout));
                }
                if ex.drain_until != 0 {
                    d = d.min(ex.drain_until);
                }
                d
            }
            Phase::Tunnel(t) => c.last_active + t.idle_ms,
            Phase::Closing => c.last_write + ms(cfg.client.send_timeout),
            Phase::Lingering => c.last_write + LINGER.as_millis() as u64,
        };
        if let Some(c) = self.clients.get_mut(cid) {
            c.deadline = deadline;
        }
        self.arm(TimerKey::Client(cid), deadline);
    }

    fn expire_timers(&mut self) {
        let mut fired = mem::take(&mut self.fired);
        self.timers.poll(self.now, &mut fired);
        for (key, armed) in fired.drain(..) {
            match key {
                TimerKey::Client(cid) => {
                    let Some(c) = self.clients.get_mut(cid) else {
                        continue;
                    };
                    if c.timer_at == armed {
                        c.timer_at = 0;
                    }
                    if c.deadline != 0 && self.now >= c.deadline {
                        self.client_timed_out(cid);
                    } else {
                        let d = c.deadline;
                        self.arm(key, d);
                    }
                }
                TimerKey::Up(uid) => {
                    let Some(u) = self.ups.get_mut(uid) else {
                        continue;
                    };
                    if u.timer_at == armed {
                        u.timer_at = 0;
                    }
                    if u.deadline == 0 {
                        continue;
                    }
                    if self.now < u.deadline {
                        let d = u.deadline;
                        self.arm(key, d);
                        continue;
                    }
                    match u.state {
                        UpState::Idle(_) => {
                            let why = u.idle_reason;
                            self.close_up(uid, why);
                        }
                        UpState::Connecting if u.owner.is_none() => {
                            let node = u.node;
                            self.close_up(uid, CloseReason::Error);
                            self.node_failed(node);
                        }
                        _ => {}
                    }
                }
            }
        }
        self.fired = fired;
    }

    fn client_timed_out(&mut self, cid: usize) {
        let Some(c) = self.clients.get_mut(cid) else {
            return;
        };
        let phase = mem::replace(&mut c.phase, Phase::Closing);
        let (next, step) = match phase {
            Phase::Head => {
                if c.rbuf.as_ref().is_some_and(|b| !b.is_empty()) {
                    c.rbuf.as_mut().expect("checked").clear();
                    self.answer(cid, Cause::HeaderTimeout, false)
                } else {
                    self.close_client(cid);
                    (Phase::Closing, Step::Closed)
                }
            }
            Phase::Exchange(mut ex) => {
                let node = ex.node;
                let send_stuck = c.wbuf.as_ref().is_some_and(|w| !w.is_empty())
                    && self.now
                        >= c.last_write + self.shared.cfg.client.send_timeout.as_millis() as u64;
                let body_stuck =
                    !matches!(ex.req, BodyIn::Done) && c.rbuf.as_ref().is_none_or(Buf::is_empty);
                let drained_out = ex.drain_until != 0 && self.now >= ex.drain_until;
                match ex.up.and_then(|u| self.ups.get(u)).map(|u| u.state) {
                    None => {
                        self.counters.nodes[node].queue_timeouts += 1;
                        self.forget_waiter(node, cid);
                        let r = self.answer_for(cid, Cause::QueueTimeout, false, Some(&ex));
                        self.retire(ex);
                        r
                    }
                    _ if send_stuck => {
                        ex.up_eof = false;
                        self.fail(cid, ex, Fault::ClientGone(Cause::SendTimeout))
                    }
                    // The answer is out; the rest of the request body did not come in time to
                    // keep the upstream connection.
                    _ if drained_out && matches!(ex.resp, Resp::Done) => {
                        self.finish_exchange(cid, ex, false)
                    }
                    _ if body_stuck
                        && self.now
                            >= c.last_active
                                + self.shared.cfg.client.body_timeout.as_millis() as u64 =>
                    {
                        self.fail(cid, ex, Fault::ClientBad(Cause::BodyTimeout))
                    }
                    // The upstream went quiet in the middle of its answer: what arrived goes
                    // out, then the connection is cut.
                    _ if ex.answered => self.fail(cid, ex, Fault::UpstreamGone(Cause::ReadTimeout)),
                    state => {
                        if let Some(uid) = ex.up.take() {
                            self.close_up(uid, CloseReason::Error);
                        }
                        // A connect timeout or a read timeout: either counts against the node,
                        // and a connect timeout moves the request on while tries are left.
                        self.node_failed(node);
                        let connecting = state == Some(UpState::Connecting);
                        if connecting && self.next_try(cid, &mut ex) {
                            self.start_exchange(cid, ex, false)
                        } else {
                            let cause = if connecting {
                                Cause::ConnectTimeout
                            } else {
                                Cause::ReadTimeout
                            };
                            let r = self.answer_for(cid, cause, false, Some(&ex));
                            self.retire(ex);
                            r
                        }
                    }
                }
            }
            Phase::Tunnel(t) => self.end_tunnel(cid, t),
            Phase::Closing | Phase::Lingering => {
                self.close_client(cid);
                (Phase::Closing, Step::Closed)
            }
        };
        if step == Step::Closed {
            return;
        }
        if let Some(c) = self.clients.get_mut(cid) {
            c.phase = next;
        }
        self.drive(cid);
    }
}

/// One balancer per upstream of a generation, in upstream order.
fn uses_ewma(cfg: &Config) -> bool {
    cfg.upstreams
        .iter()
        .any(|u| matches!(u.balance, Balance::Ewma))
}

fn balancers_of(cfg: &Config) -> Vec<Balancer> {
    cfg.upstreams
        .iter()
        .map(|u| {
            Balancer::new(
                &u.balance,
                u.nodes.iter().map(|n| (n.host.as_str(), n.weight)),
            )
        })
        .collect()
}

/// What a failed connect says about the node.
fn connect_cause(e: &io::Error) -> Cause {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
        io::ErrorKind::TimedOut => Cause::ConnectTimeout,
        _ => Cause::ConnectFailed,
    }
}

enum ConnectError {
    /// A cap on connections or connects in flight is reached.
    Budget,
    Failed(Cause),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_reads_back_every_kind_of_token() {
        for i in [0, 1, 2, 7, 65_535, 1 << 20] {
            assert!(matches!(source(client_token(i)), Source::Client(n) if n == i));
            assert!(matches!(source(up_token(i)), Source::Up(n) if n == i));
        }
        assert!(matches!(source(Token(3)), Source::Listener(3)));
        assert!(matches!(source(WAKER), Source::Waker));
    }

    /// An idle keep-alive client must stay small: issue 4 allows 1 KiB of RSS per idle client
    /// connection, and its slab slot is all an idle client holds (buffers go back to the pool).
    /// 640 leaves room for the rest of the process's per-connection costs.
    #[test]
    fn idle_client_state_is_small() {
        let size = mem::size_of::<Option<Client>>();
        assert!(size <= 640, "Client slot is {size} bytes");
    }
}
