//! Socket I/O for both sides of a connection, plain or TLS, under user-space readiness.
//!
//! An [`End`] is one side as the paths of the event loop see it: the socket, its rustls session
//! if any, and its readiness flags. Every read and write of a client or an upstream connection
//! goes through here. Invariants: readiness is cleared only by `WouldBlock` or a short read or
//! write (so the next edge is certain to come), except that a peer's FIN already reported keeps
//! a connection readable until the EOF is read; whatever rustls queues (handshake, alerts,
//! tickets) is written in the same pass; at most one record's worth of plaintext waits inside
//! rustls (`TLS_CHUNK`), so back-pressure stays with hearth's own buffers.
//!
//! Large bodies between two plain sockets may skip user space altogether: [`SplicePipe`] is the
//! core's one pipe, through which `splice(2)` moves them (see its docs for who may use it when).

use std::io::{self, Read, Write};

use log::{debug, warn};
use mio::net::TcpStream;
use rustls::Connection;

use crate::buf::{Buf, BufPool};
use crate::sys::{Pipe, Raw};
use crate::upstream::Handover;

/// Plaintext handed to rustls per write: one TLS record, so at most that much waits inside
/// rustls when the socket stops taking bytes.
const TLS_CHUNK: usize = 16_384;

pub(super) enum ReadOutcome {
    Data,
    Blocked,
    Eof,
    Failed,
}

/// Reads once into `buf`. `hup`: the peer's FIN was already reported, so a short read must not
/// clear readiness (no further edge will come for the EOF that is still to be read).
pub(super) fn read_into(
    sock: &mut TcpStream,
    buf: &mut Buf,
    ready: &mut bool,
    hup: bool,
) -> ReadOutcome {
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

/// Body bytes at least this long go to a plain client straight from the upstream buffer (see
/// [`queue_body`]); shorter ones are copied, which costs less than the second iovec.
pub(super) const DIRECT_MIN: usize = 4_096;

/// Queues response body `bytes` for the client, behind what `w` already holds. When the client is
/// plain TCP and writable and `bytes` is long, both go out at once in one `sendmsg` straight from
/// the upstream's buffer, so the body is not copied into `w` first (16 KiB answers spent more
/// time in that copy than in the rest of hearth's user-space work); only what the socket did not
/// take is copied. A socket error sends nothing here: the bytes are queued and the next flush
/// meets the error and closes as it always does. Returns whether anything was written.
pub(super) fn queue_body(
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
pub(super) fn write_from(sock: &mut TcpStream, data: &[u8], ready: &mut bool) -> Result<usize, ()> {
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
pub(super) struct End<'a> {
    pub(super) sock: &'a mut TcpStream,
    pub(super) tls: Option<&'a mut Connection>,
    pub(super) readable: &'a mut bool,
    pub(super) writable: &'a mut bool,
    pub(super) hup: bool,
}

macro_rules! end {
    ($c:expr) => {
        $crate::runtime::io::End {
            sock: &mut $c.sock,
            tls: $c.tls.as_deref_mut(),
            readable: &mut $c.readable,
            writable: &mut $c.writable,
            hup: $c.hup,
        }
    };
}
pub(super) use end;

/// The socket as rustls reads it, noting whether the last read came up short (the socket is
/// drained, so readiness may be cleared as for a plain read).
pub(super) struct ShortRead<'a> {
    pub(super) sock: &'a mut TcpStream,
    pub(super) short: bool,
}

impl Read for ShortRead<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = Raw::of(self.sock).read(b)?;
        self.short = n < b.len();
        Ok(n)
    }
}

/// Writes what rustls has queued. Ok(progress), or Err when the peer is gone.
pub(super) fn tls_flush(
    sock: &mut TcpStream,
    tls: &mut Connection,
    writable: &mut bool,
) -> Result<bool, ()> {
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
pub(super) enum Fed {
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
pub(super) fn tls_feed(
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
    pub(super) fn read_into(&mut self, buf: &mut Buf) -> ReadOutcome {
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
    pub(super) fn write_from(&mut self, data: &[u8]) -> Result<usize, ()> {
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
    pub(super) fn flush_tls(&mut self) -> Result<bool, ()> {
        match self.tls.as_deref_mut() {
            Some(tls) => tls_flush(self.sock, tls, self.writable),
            None => Ok(false),
        }
    }

    /// Bytes still queued inside rustls.
    pub(super) fn tls_pending(&self) -> bool {
        self.tls.as_deref().is_some_and(|t| t.wants_write())
    }
}

/// What the core asks of its pipe: about this many bytes in flight per splice. The kernel's
/// limit for unprivileged processes (`/proc/sys/fs/pipe-max-size`) is 1 MiB by default; a pipe
/// it refuses to grow keeps its default 64 KiB, which still works, in more calls.
pub(super) const PIPE_BYTES: usize = 256 * 1024;

/// A body is spliced only when at least this much of it is still to come; less goes through the
/// buffers, where it is cheaper than two extra calls and keeps a request replayable.
pub(super) const SPLICE_MIN: u64 = 64 * 1024;

/// The core's pipe for `splice(2)`, created on first use (a core that never relays a large
/// plain body opens no descriptors for it).
///
/// One exchange at a time may hold bytes in it: bytes spliced in from one socket and not yet
/// taken by the other belong to the exchange that put them there, in one direction, until they
/// are out (the exchange records which, as `Piped`). While the pipe holds anything, every other
/// exchange copies through its buffers as it would without splice, so contents never mix; an
/// exchange that ends with bytes still inside calls [`SplicePipe::discard`], which closes the
/// pipe (a fresh one is made on next use), since a pipe cannot be emptied without reading it.
#[derive(Debug, Default)]
pub struct SplicePipe {
    pipe: Option<Pipe>,
    /// Bytes in the pipe, all of one exchange.
    held: usize,
    /// The pipe could not be made (out of descriptors, say): stop trying until a discard.
    failed: bool,
}

/// How one [`splice_through`] call ended, besides the bytes it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpliceEnd {
    /// Either side would block, or `left` ran out.
    Paused,
    /// The source is at EOF.
    Eof,
    /// Reading the source failed.
    SourceFailed,
    /// Writing the destination failed (reset, closed).
    SinkFailed,
}

/// Bytes one [`splice_through`] call took from the source and gave to the destination.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spliced {
    pub(super) taken: u64,
    pub(super) given: u64,
    pub(super) end: SpliceEnd,
}

/// One plain socket for [`splice_through`]: the socket and its readiness in that direction.
pub(super) struct PlainEnd<'a> {
    pub(super) sock: &'a TcpStream,
    pub(super) ready: &'a mut bool,
}

impl SplicePipe {
    /// Whether the pipe exists or can be made now.
    pub(super) fn usable(&mut self) -> bool {
        if self.pipe.is_some() {
            return true;
        }
        if self.failed {
            return false;
        }
        match Pipe::new(PIPE_BYTES) {
            Ok(p) => {
                debug!("splice pipe of {} bytes", p.capacity());
                self.pipe = Some(p);
                true
            }
            Err(e) => {
                warn!("cannot make a pipe for splice ({e}); copying large bodies instead");
                self.failed = true;
                false
            }
        }
    }

    /// Bytes in the pipe now (all of the exchange whose `Piped` says so).
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Throws away what the pipe holds, by closing it; the next use makes a fresh one.
    pub(super) fn discard(&mut self) {
        self.pipe = None;
        self.held = 0;
        self.failed = false;
    }
}

/// Moves up to `left` bytes from `from` to `to` through the core's pipe: first whatever the pipe
/// holds (which must be this flow's), then a pipe-full at a time from the source, for as long as
/// both sides keep up. Bytes the destination does not take stay in the pipe (`pipe.held()`) for
/// the next call. Readiness is kept as for reads and writes: cleared by `WouldBlock` on either
/// side, or by a short write; a short splice in is no sign of a drained socket (the pipe may
/// have run out of slots first), so the source is read until it would block.
pub(super) fn splice_through(
    pipe: &mut SplicePipe,
    from: PlainEnd,
    to: PlainEnd,
    mut left: u64,
) -> Spliced {
    let mut done = Spliced {
        taken: 0,
        given: 0,
        end: SpliceEnd::Paused,
    };
    let Some(p) = pipe.pipe.as_ref() else {
        return done;
    };
    loop {
        while pipe.held > 0 {
            if !*to.ready {
                return done;
            }
            match p.drain_to(to.sock, pipe.held) {
                Ok(n) => {
                    pipe.held -= n;
                    done.given += n as u64;
                    if pipe.held > 0 {
                        // The send buffer is full; wait for the next writable edge.
                        *to.ready = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *to.ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    done.end = SpliceEnd::SinkFailed;
                    return done;
                }
            }
        }
        if left == 0 || !*from.ready {
            return done;
        }
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(p.capacity());
        match p.fill_from(from.sock, want) {
            Ok(0) => {
                done.end = SpliceEnd::Eof;
                return done;
            }
            Ok(n) => {
                pipe.held = n;
                done.taken += n as u64;
                left -= n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *from.ready = false;
                return done;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                done.end = SpliceEnd::SourceFailed;
                return done;
            }
        }
    }
}

/// Moves bytes one way through a tunnel: writes what `slot` holds to `to`, then refills it from
/// `from`. Err when either side has finished or failed.
pub(super) fn pump(
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

/// One upstream connection's I/O: the socket, the TLS session of an https connection (kept
/// while the connection is pooled), and readiness as events reported it.
#[derive(Debug)]
pub struct UpIo {
    pub(super) sock: TcpStream,
    pub(super) tls: Option<Box<Connection>>,
    /// TCP is up and the TLS handshake runs (the connection is still connecting).
    pub(super) handshaking: bool,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The peer's FIN (or an error) was reported by an event; sticky.
    pub(super) hup: bool,
}

/// A connection on its way to another core.
pub type UpHandover = Handover<UpIo>;
