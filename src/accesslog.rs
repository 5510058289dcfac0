//! The access log of one core: one line per request, formatted into a per-core buffer and
//! written to the log file off the request path.
//!
//! The module is sans-io apart from one `write` per flush: it never reads a clock (the core
//! passes `now_ms` on its own monotonic clock, and the request's wall-clock time in [`Start`]),
//! never blocks on the file, and allocates nothing per request once warm. The core calls
//! [`AccessLog::start`] when a request head has been parsed, keeps the returned [`Pending`] with
//! the request, calls [`AccessLog::finish`] when the answer is complete, and calls
//! [`AccessLog::tick`] every loop turn, [`AccessLog::reopen`] on SIGUSR1 (log rotation) and
//! [`AccessLog::flush`] at shutdown.
//!
//! Invariants:
//! - The buffer holds whole lines only, so every flush is one `write(2)` of whole lines. The file
//!   is opened with `O_APPEND`, so several cores can append to one regular file and their lines
//!   never interleave: Linux appends each `write` to a regular file on a local filesystem in one
//!   piece (NFS gives no such promise).
//! - The buffer is written when it reaches [`FLUSH_BYTES`] (from `finish`) or when
//!   [`FLUSH_INTERVAL_MS`] have passed since the previous write (from `tick`). `tick` is one
//!   comparison against `due_ms` when nothing is due; `due_ms` is `u64::MAX` while the buffer is
//!   empty, so an idle core never writes.
//! - The buffer never holds more than [`MAX_BUFFER_BYTES`]: before a line is formatted its
//!   worst-case escaped length is checked against the room left, and a line that might not fit is
//!   dropped and counted in [`AccessLog::dropped`]. The buffer only fills when writes stall (a
//!   pipe or FIFO whose reader is slow: the file is opened non-blocking, so the core never waits
//!   for it).
//! - A failing write drops the buffer (its lines are counted as dropped) and is reported once
//!   through `log::warn!`; further failures stay quiet until a write succeeds again, which is
//!   reported through `log::info!`. After a failure the next attempt is at least
//!   [`FLUSH_INTERVAL_MS`] later, so a broken disk costs at most ten writes a second per core.
//! - Each [`Pending`] owns a `Vec<u8>` taken from the log's free list and given back by `finish`
//!   (or [`AccessLog::discard`]), so the list holds at most as many buffers as requests were ever
//!   in flight at once on this core. Buffers that grew past [`MAX_KEPT_PENDING_BYTES`] (a huge
//!   request head) are freed rather than kept.
//!
//! Untrusted bytes never break a line: in `combined`, `"`, `\`, control bytes and bytes >= 0x7f
//! become `\xXX` (uppercase hex), exactly as nginx escapes its access log. In `json`, `"` and `\`
//! are backslash-escaped, control bytes and DEL become `\u00xx`, valid UTF-8 passes through, and
//! each byte of an invalid UTF-8 sequence becomes `\u00xx` of that byte. A JSON reader therefore
//! sees such a byte as the character U+0080..U+00FF of the same value: this keeps the original
//! bytes recoverable (unlike U+FFFD), at the price that a raw invalid byte 0xE9 and a valid `é`
//! read back the same.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Buffered bytes that trigger a write from `finish`.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Longest time a line waits in the buffer after the previous write.
pub const FLUSH_INTERVAL_MS: u64 = 100;
/// Most bytes the buffer holds; lines that might not fit are dropped and counted.
pub const MAX_BUFFER_BYTES: usize = 1024 * 1024;
/// Initial capacity of a `Pending`'s storage: enough for the fields of a typical request.
const PENDING_BYTES: usize = 256;
/// Storage that grew beyond this is freed instead of going back to the free list, so one huge
/// request does not pin its memory for the life of the core.
pub const MAX_KEPT_PENDING_BYTES: usize = 8 * 1024;
/// Most output bytes one input byte can become (`\u00xx` in JSON; `\xXX` in combined is 4).
const MAX_ESCAPE: usize = 6;
/// Bound on everything in a line that is not an escaped request field: keys and punctuation
/// (about 150 bytes in JSON), the time, an IPv6 client, five numbers of up to 20 digits and an
/// IPv6 upstream with a scope id. The tests check formatted lines against this bound.
const LINE_OVERHEAD: usize = 512;
/// A capacity that keeps the buffer's growth on powers of two up to `MAX_BUFFER_BYTES`, so the
/// buffer's allocation never exceeds the cap.
const INITIAL_BUFFER_BYTES: usize = 2 * FLUSH_BYTES;

/// The line format, `access_log.format` in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// nginx's `combined` followed by hearth's fields:
    /// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
    /// "$http_user_agent" upstream=ADDR|- connect_ms=N reused=0|1 total_ms=N cause=TOKEN|-`,
    /// where the cause says why hearth answered or cut the request itself (see
    /// `cause`), `-` when the answer is the upstream's.
    Combined,
    /// One JSON object per line with keys `time` (RFC 3339, UTC, milliseconds), `client`,
    /// `method`, `target`, `version`, `host`, `status`, `bytes_sent`, `referer`, `user_agent`,
    /// `upstream` (string or null), `connect_ms`, `reused` (bool), `total_ms`, `cause` (string
    /// or null). Absent request headers are empty strings.
    Json,
}

/// What the core knows when the request head has been parsed. Fields are byte slices of the
/// request as received; an empty slice means the header was absent.
#[derive(Clone, Copy, Debug)]
pub struct Start<'a> {
    pub client: IpAddr,
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// "HTTP/1.1" or "HTTP/1.0".
    pub version: &'a str,
    pub host: &'a [u8],
    pub referer: &'a [u8],
    pub user_agent: &'a [u8],
    /// Unix time in milliseconds when the head arrived; the line's timestamp.
    pub wall_ms: u64,
}

/// The fields of a [`Start`], in the order they are stored in a `Pending`.
const METHOD: usize = 0;
const TARGET: usize = 1;
const VERSION: usize = 2;
const HOST: usize = 3;
const REFERER: usize = 4;
const USER_AGENT: usize = 5;
const FIELDS: usize = 6;

/// A request being logged: a copy of its [`Start`] in storage taken from the log's free list,
/// so logging allocates nothing once warm. Give it back with [`AccessLog::finish`] or
/// [`AccessLog::discard`]; dropping it only costs its storage.
#[derive(Debug)]
pub struct Pending {
    client: IpAddr,
    wall_ms: u64,
    /// The fields back to back, in the order of the `METHOD`..`USER_AGENT` constants.
    bytes: Vec<u8>,
    /// End offset in `bytes` of each field.
    ends: [usize; FIELDS],
}

impl Pending {
    fn field(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.bytes[start..self.ends[index]]
    }
}

/// How the request ended.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub status: u16,
    /// Bytes of the response body sent to the client (nginx's `$body_bytes_sent`).
    pub bytes_sent: u64,
    /// None when hearth answered itself.
    pub upstream: Option<SocketAddr>,
    /// 0 when the connection was reused.
    pub connect_ms: u64,
    pub reused: bool,
    pub total_ms: u64,
    /// Why hearth answered or cut the request itself (`Cause::token`), if it did.
    pub cause: Option<&'static str>,
}

/// Where flushed bytes go.
enum Sink {
    /// The log file (or, in tests, a writer that fails on purpose), with its name for messages.
    Writer {
        out: Box<dyn Write + Send>,
        name: String,
    },
    /// `in_memory`: everything written so far, for tests and benches.
    Memory(Vec<u8>),
}

/// Opens (creating if needed) `path` for appending, non-blocking (see [`AccessLog::open`]).
fn open_for_append(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// The access log of one core. See the module docs for its invariants.
pub struct AccessLog {
    format: Format,
    sink: Sink,
    /// Whole formatted lines not yet written.
    buf: Vec<u8>,
    /// Lines in `buf`, to count what a failed write drops.
    buffered_lines: u64,
    /// Storage for `Pending`s, reused so logging allocates nothing once warm.
    free: Vec<Vec<u8>>,
    /// When `tick` must write; `u64::MAX` while `buf` is empty.
    due_ms: u64,
    /// `now_ms` of the last write attempt.
    last_write_ms: u64,
    dropped: u64,
    write_errors: u64,
    /// Writes are failing; the failure was reported and later ones stay quiet.
    failing: bool,
    /// `dropped` when the current failure began, to report how many lines it cost.
    dropped_before_failure: u64,
}

impl AccessLog {
    /// Opens (creating if needed) the log file at `path` for appending. The file is opened
    /// non-blocking, which changes nothing for a regular file and keeps a FIFO or a pipe with a
    /// slow reader from stalling the core (its lines wait in the buffer, up to the cap).
    pub fn open(path: &Path, format: Format) -> io::Result<AccessLog> {
        Ok(AccessLog::with_writer(
            Box::new(open_for_append(path)?),
            path.display().to_string(),
            format,
        ))
    }

    /// Writes what is buffered to the file the log has, then opens `path` afresh and goes on
    /// there: after a rotation that renamed the file away, logging resumes in a new file under
    /// the configured name (SIGUSR1, as with nginx). Counters carry over. When `path` cannot be
    /// opened, the log keeps the file it had and the error is returned.
    pub fn reopen(&mut self, path: &Path) -> io::Result<()> {
        self.flush();
        let file = open_for_append(path)?;
        self.sink = Sink::Writer {
            out: Box::new(file),
            name: path.display().to_string(),
        };
        Ok(())
    }

    /// For tests and benches: format into memory instead of a file.
    pub fn in_memory(format: Format) -> AccessLog {
        AccessLog::with_sink(Sink::Memory(Vec::new()), format)
    }

    fn with_writer(out: Box<dyn Write + Send>, name: String, format: Format) -> AccessLog {
        AccessLog::with_sink(Sink::Writer { out, name }, format)
    }

    fn with_sink(sink: Sink, format: Format) -> AccessLog {
        AccessLog {
            format,
            sink,
            buf: Vec::with_capacity(INITIAL_BUFFER_BYTES),
            buffered_lines: 0,
            free: Vec::new(),
            due_ms: u64::MAX,
            last_write_ms: 0,
            dropped: 0,
            write_errors: 0,
            failing: false,
            dropped_before_failure: 0,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Copies what the line needs out of the request head, which the core is about to reuse.
    pub fn start(&mut self, s: &Start) -> Pending {
        let mut bytes = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PENDING_BYTES));
        let mut ends = [0; FIELDS];
        let fields = [
            s.method,
            s.target,
            s.version.as_bytes(),
            s.host,
            s.referer,
            s.user_agent,
        ];
        for (end, field) in ends.iter_mut().zip(fields) {
            bytes.extend_from_slice(field);
            *end = bytes.len();
        }
        Pending {
            client: s.client,
            wall_ms: s.wall_ms,
            bytes,
            ends,
        }
    }

    /// Formats the request's line into the buffer, gives its storage back, and writes the buffer
    /// if it reached [`FLUSH_BYTES`].
    pub fn finish(&mut self, p: Pending, o: &Outcome, now_ms: u64) {
        let bound = p.bytes.len() * MAX_ESCAPE + LINE_OVERHEAD;
        if self.buf.len() + bound > MAX_BUFFER_BYTES {
            self.dropped += 1;
        } else {
            if self.buf.is_empty() {
                self.due_ms = self.last_write_ms.saturating_add(FLUSH_INTERVAL_MS);
            }
            let before = self.buf.len();
            match self.format {
                Format::Combined => combined(&mut self.buf, &p, o),
                Format::Json => json(&mut self.buf, &p, o),
            }
            debug_assert!(
                self.buf.len() - before <= bound,
                "line longer than its bound"
            );
            self.buffered_lines += 1;
        }
        self.recycle(p.bytes);
        if self.buf.len() >= FLUSH_BYTES {
            self.write_out(now_ms);
        }
    }

    /// Gives a request's storage back without logging it.
    pub fn discard(&mut self, p: Pending) {
        self.recycle(p.bytes);
    }

    fn recycle(&mut self, mut bytes: Vec<u8>) {
        if bytes.capacity() <= MAX_KEPT_PENDING_BYTES {
            bytes.clear();
            self.free.push(bytes);
        }
    }

    /// Writes the buffer when [`FLUSH_INTERVAL_MS`] have passed since the last write. Called
    /// every loop turn, so the common case is one comparison.
    #[inline]
    pub fn tick(&mut self, now_ms: u64) {
        if now_ms < self.due_ms {
            return;
        }
        self.write_out(now_ms);
    }

    /// When `tick` next has work, on the `now_ms` clock; None while nothing is buffered. The
    /// core folds this into its poll timeout, or a quiet loop would hold lines until the next
    /// event.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.due_ms != u64::MAX).then_some(self.due_ms)
    }

    /// Writes what is buffered now, at shutdown. One attempt: lines a stalled pipe does not take
    /// stay in the buffer.
    pub fn flush(&mut self) {
        let last = self.last_write_ms;
        self.write_out(last);
    }

    /// Lines lost: dropped at the buffer cap or in a failed write.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes that failed (each dropping the buffer).
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// in_memory only: the bytes written so far (empty for a file).
    pub fn contents(&self) -> &[u8] {
        match &self.sink {
            Sink::Memory(written) => written,
            Sink::Writer { .. } => &[],
        }
    }

    /// One write of the buffer. Cold: it runs at most every `FLUSH_INTERVAL_MS` or `FLUSH_BYTES`.
    #[cold]
    fn write_out(&mut self, now_ms: u64) {
        self.last_write_ms = now_ms;
        self.due_ms = u64::MAX;
        if self.buf.is_empty() {
            return;
        }
        let result = match &mut self.sink {
            Sink::Memory(written) => {
                written.extend_from_slice(&self.buf);
                self.buf.clear();
                self.buffered_lines = 0;
                return;
            }
            Sink::Writer { out, .. } => out.write(&self.buf),
        };
        match result {
            Ok(n) if n == self.buf.len() => {
                self.buf.clear();
                self.buffered_lines = 0;
                self.recovered();
            }
            Ok(0) => self.failed(&io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                // A pipe took part of the buffer: keep the rest, which completes the cut line,
                // and try again after the interval.
                self.buf.drain(..n);
                self.buffered_lines = self.buf.iter().filter(|&&b| b == b'\n').count() as u64;
                self.due_ms = now_ms.saturating_add(FLUSH_INTERVAL_MS);
                self.recovered();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                // Back-pressure, not failure: the lines wait, bounded by the cap.
                self.due_ms = now_ms.saturating_add(FLUSH_INTERVAL_MS);
            }
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&mut self, err: &io::Error) {
        let lost = self.buffered_lines;
        self.write_errors += 1;
        if !self.failing {
            self.failing = true;
            self.dropped_before_failure = self.dropped;
            log::warn!(
                "access log {}: write failed ({err}); dropped {lost} lines; \
                 further failures are not reported until a write succeeds",
                self.name()
            );
        }
        self.dropped += lost;
        self.buf.clear();
        self.buffered_lines = 0;
    }

    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            log::info!(
                "access log {}: writing again after {} lines were dropped",
                self.name(),
                self.dropped - self.dropped_before_failure
            );
        }
    }

    fn name(&self) -> &str {
        match &self.sink {
            Sink::Writer { name, .. } => name,
            Sink::Memory(_) => "(memory)",
        }
    }
}

impl Drop for AccessLog {
    /// A core that exits without calling `flush` still gets its last lines out.
    fn drop(&mut self) {
        self.flush();
    }
}

/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent" upstream=.. connect_ms=.. reused=.. total_ms=.. cause=..`
fn combined(out: &mut Vec<u8>, p: &Pending, o: &Outcome) {
    crate::http::rewrite::push_ip(out, &p.client);
    out.extend_from_slice(b" - - [");
    push_time_local(out, p.wall_ms);
    out.extend_from_slice(b"] \"");
    push_nginx_escaped(out, p.field(METHOD));
    out.push(b' ');
    push_nginx_escaped(out, p.field(TARGET));
    out.push(b' ');
    push_nginx_escaped(out, p.field(VERSION));
    out.extend_from_slice(b"\" ");
    push_u64(out, u64::from(o.status));
    out.push(b' ');
    push_u64(out, o.bytes_sent);
    out.extend_from_slice(b" \"");
    push_nginx_field(out, p.field(REFERER));
    out.extend_from_slice(b"\" \"");
    push_nginx_field(out, p.field(USER_AGENT));
    out.extend_from_slice(b"\" upstream=");
    match &o.upstream {
        Some(addr) => push_socket_addr(out, addr),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" connect_ms=");
    push_u64(out, o.connect_ms);
    out.extend_from_slice(if o.reused {
        b" reused=1 total_ms="
    } else {
        b" reused=0 total_ms="
    });
    push_u64(out, o.total_ms);
    out.extend_from_slice(b" cause=");
    out.extend_from_slice(o.cause.unwrap_or("-").as_bytes());
    out.push(b'\n');
}

fn json(out: &mut Vec<u8>, p: &Pending, o: &Outcome) {
    out.extend_from_slice(b"{\"time\":\"");
    push_rfc3339(out, p.wall_ms);
    out.extend_from_slice(b"\",\"client\":\"");
    crate::http::rewrite::push_ip(out, &p.client);
    out.extend_from_slice(b"\",\"method\":");
    push_json_str(out, p.field(METHOD));
    out.extend_from_slice(b",\"target\":");
    push_json_str(out, p.field(TARGET));
    out.extend_from_slice(b",\"version\":");
    push_json_str(out, p.field(VERSION));
    out.extend_from_slice(b",\"host\":");
    push_json_str(out, p.field(HOST));
    out.extend_from_slice(b",\"status\":");
    push_u64(out, u64::from(o.status));
    out.extend_from_slice(b",\"bytes_sent\":");
    push_u64(out, o.bytes_sent);
    out.extend_from_slice(b",\"referer\":");
    push_json_str(out, p.field(REFERER));
    out.extend_from_slice(b",\"user_agent\":");
    push_json_str(out, p.field(USER_AGENT));
    out.extend_from_slice(b",\"upstream\":");
    match &o.upstream {
        Some(addr) => {
            // A socket address is digits, dots, colons, brackets and a scope id: nothing to escape.
            out.push(b'"');
            push_socket_addr(out, addr);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"connect_ms\":");
    push_u64(out, o.connect_ms);
    out.extend_from_slice(if o.reused {
        b",\"reused\":true,\"total_ms\":"
    } else {
        b",\"reused\":false,\"total_ms\":"
    });
    push_u64(out, o.total_ms);
    out.extend_from_slice(b",\"cause\":");
    match o.cause {
        // A cause token is lowercase letters and underscores: nothing to escape.
        Some(token) => {
            out.push(b'"');
            out.extend_from_slice(token.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

fn push_socket_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            crate::http::rewrite::push_ipv4(out, v4.ip());
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => push_display(out, addr),
    }
}

/// Through `Display`, which writes into the `Vec` without allocating.
fn push_display(out: &mut Vec<u8>, value: &dyn std::fmt::Display) {
    // Writing into a Vec<u8> cannot fail.
    let _ = write!(out, "{value}");
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// The bytes nginx's `ngx_http_log_escape` turns into `\xXX`.
fn nginx_escapes(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b >= 0x7f
}

/// An nginx header variable: `-` when empty, as nginx logs a missing `$http_referer`.
fn push_nginx_field(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.push(b'-');
    } else {
        push_nginx_escaped(out, bytes);
    }
}

fn push_nginx_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if nginx_escapes(b) {
            out.extend_from_slice(&bytes[plain..i]);
            out.extend_from_slice(&[
                b'\\',
                b'x',
                UPPER_HEX[usize::from(b >> 4)],
                UPPER_HEX[usize::from(b & 0xf)],
            ]);
            plain = i + 1;
        }
    }
    out.extend_from_slice(&bytes[plain..]);
}

/// A JSON string of arbitrary bytes; see the module docs for how invalid UTF-8 is written.
fn push_json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                push_json_utf8(out, valid.as_bytes());
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                push_json_utf8(out, valid);
                // None: a sequence cut short by the end of the field; all of it is invalid.
                let bad = e.error_len().unwrap_or(after.len());
                let (invalid, next) = after.split_at(bad);
                for &b in invalid {
                    push_u00(out, b);
                }
                rest = next;
            }
        }
    }
    out.push(b'"');
}

/// Valid UTF-8 into a JSON string: multi-byte characters pass through unchanged.
fn push_json_utf8(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0..0x20 | 0x7f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        if escaped.is_empty() {
            push_u00(out, b);
        } else {
            out.extend_from_slice(escaped);
        }
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
}

fn push_u00(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        b'0',
        b'0',
        LOWER_HEX[usize::from(b >> 4)],
        LOWER_HEX[usize::from(b & 0xf)],
    ]);
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    crate::http::rewrite::push_decimal(n, out);
}

/// `n` in at least `width` digits, zero-padded.
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = n;
    while rest > 0 || digits.len() - i < width {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    if i == digits.len() {
        i -= 1;
        digits[i] = b'0';
    }
    out.extend_from_slice(&digits[i..]);
}

/// A UTC calendar time, broken down from Unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: u64,
    /// 1..=12
    month: u64,
    /// 1..=31
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
    milli: u64,
}

impl Civil {
    /// Howard Hinnant's `civil_from_days`, on unsigned numbers since Unix time here is never
    /// negative. The proleptic Gregorian calendar repeats every 400 years (146 097 days); an era
    /// starts on 1 March so the leap day falls at the end of the year, and month lengths follow
    /// from `(153 * m + 2) / 5` counting from March.
    fn from_unix_ms(ms: u64) -> Civil {
        let secs = ms / 1000;
        let days = secs / 86_400;
        let of_day = secs % 86_400;
        let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
        let era = z / 146_097;
        let day_of_era = z % 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + u64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            milli: ms % 1000,
        }
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// nginx's `$time_local` in UTC: `22/Nov/2026:05:33:02 +0000`.
fn push_time_local(out: &mut Vec<u8>, wall_ms: u64) {
    let t = Civil::from_unix_ms(wall_ms);
    push_padded(out, t.day, 2);
    out.push(b'/');
    // month is 1..=12 by construction of `from_unix_ms`.
    out.extend_from_slice(MONTHS[(t.month - 1) as usize]);
    out.push(b'/');
    push_padded(out, t.year, 4);
    out.push(b':');
    push_padded(out, t.hour, 2);
    out.push(b':');
    push_padded(out, t.minute, 2);
    out.push(b':');
    push_padded(out, t.second, 2);
    out.extend_from_slice(b" +0000");
}

/// RFC 3339 in UTC with milliseconds: `2026-11-22T05:33:02.123Z`.
fn push_rfc3339(out: &mut Vec<u8>, wall_ms: u64) {
    let t = Civil::from_unix_ms(wall_ms);
    push_padded(out, t.year, 4);
    out.push(b'-');
    push_padded(out, t.month, 2);
    out.push(b'-');
    push_padded(out, t.day, 2);
    out.push(b'T');
    push_padded(out, t.hour, 2);
    out.push(b':');
    push_padded(out, t.minute, 2);
    out.push(b':');
    push_padded(out, t.second, 2);
    out.push(b'.');
    push_padded(out, t.milli, 3);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const WALL: u64 = 1_795_325_582_123; // 2026-11-22T05:33:02.123Z

    fn request<'a>(target: &'a [u8], user_agent: &'a [u8]) -> Start<'a> {
        Start {
            client: "192.0.2.7".parse().unwrap(),
            method: b"GET",
            target,
            version: "HTTP/1.1",
            host: b"example.com",
            referer: b"https://example.com/",
            user_agent,
            wall_ms: WALL,
        }
    }

    fn proxied() -> Outcome {
        Outcome {
            status: 200,
            bytes_sent: 1234,
            upstream: Some("127.0.0.1:9001".parse().unwrap()),
            connect_ms: 3,
            reused: false,
            total_ms: 17,
            cause: None,
        }
    }

    /// One line through a fresh in-memory log.
    fn line(format: Format, s: &Start, o: &Outcome) -> String {
        let mut log = AccessLog::in_memory(format);
        let p = log.start(s);
        log.finish(p, o, 0);
        log.flush();
        String::from_utf8(log.contents().to_vec()).unwrap()
    }

    #[test]
    fn both_formats_are_byte_exact() {
        let plain = request(b"/api/hello?x=1", b"curl/8.5.0");
        let bare = Start {
            client: "2001:db8::1".parse().unwrap(),
            method: b"GET",
            target: b"/",
            version: "HTTP/1.0",
            host: b"",
            referer: b"",
            user_agent: b"",
            wall_ms: 0,
        };
        let answered_itself = Outcome {
            status: 404,
            bytes_sent: 0,
            upstream: None,
            connect_ms: 0,
            reused: false,
            total_ms: 0,
            cause: Some("no_route"),
        };
        let reused = Outcome {
            upstream: Some("[::1]:8443".parse().unwrap()),
            connect_ms: 0,
            reused: true,
            ..proxied()
        };
        let cases: [(&Start, Outcome, &str, &str); 3] = [
            (
                &plain,
                proxied(),
                "192.0.2.7 - - [22/Nov/2026:05:33:02 +0000] \"GET /api/hello?x=1 HTTP/1.1\" 200 1234 \
                 \"https://example.com/\" \"curl/8.5.0\" upstream=127.0.0.1:9001 connect_ms=3 \
                 reused=0 total_ms=17 cause=-\n",
                "{\"time\":\"2026-11-22T05:33:02.123Z\",\"client\":\"192.0.2.7\",\"method\":\"GET\",\
                 \"target\":\"/api/hello?x=1\",\"version\":\"HTTP/1.1\",\"host\":\"example.com\",\
                 \"status\":200,\"bytes_sent\":1234,\"referer\":\"https://example.com/\",\
                 \"user_agent\":\"curl/8.5.0\",\"upstream\":\"127.0.0.1:9001\",\"connect_ms\":3,\
                 \"reused\":false,\"total_ms\":17,\"cause\":null}\n",
            ),
            (
                &bare,
                answered_itself,
                "2001:db8::1 - - [01/Jan/1970:00:00:00 +0000] \"GET / HTTP/1.0\" 404 0 \"-\" \"-\" \
                 upstream=- connect_ms=0 reused=0 total_ms=0 cause=no_route\n",
                "{\"time\":\"1970-01-01T00:00:00.000Z\",\"client\":\"2001:db8::1\",\"method\":\"GET\",\
                 \"target\":\"/\",\"version\":\"HTTP/1.0\",\"host\":\"\",\"status\":404,\
                 \"bytes_sent\":0,\"referer\":\"\",\"user_agent\":\"\",\"upstream\":null,\
                 \"connect_ms\":0,\"reused\":false,\"total_ms\":0,\"cause\":\"no_route\"}\n",
            ),
            (
                &plain,
                reused,
                "192.0.2.7 - - [22/Nov/2026:05:33:02 +0000] \"GET /api/hello?x=1 HTTP/1.1\" 200 1234 \
                 \"https://example.com/\" \"curl/8.5.0\" upstream=[::1]:8443 connect_ms=0 \
                 reused=1 total_ms=17 cause=-\n",
                "{\"time\":\"2026-11-22T05:33:02.123Z\",\"client\":\"192.0.2.7\",\"method\":\"GET\",\
                 \"target\":\"/api/hello?x=1\",\"version\":\"HTTP/1.1\",\"host\":\"example.com\",\
                 \"status\":200,\"bytes_sent\":1234,\"referer\":\"https://example.com/\",\
                 \"user_agent\":\"curl/8.5.0\",\"upstream\":\"[::1]:8443\",\"connect_ms\":0,\
                 \"reused\":true,\"total_ms\":17,\"cause\":null}\n",
            ),
        ];
        for (i, (s, o, combined, json)) in cases.iter().enumerate() {
            assert_eq!(line(Format::Combined, s, o), *combined, "case {i} combined");
            assert_eq!(line(Format::Json, s, o), *json, "case {i} json");
        }
    }

    #[test]
    fn addresses_read_as_their_display() {
        let ips = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "::",
            "::ffff:1.2.3.4",
            "fe80::1",
        ];
        for ip in ips {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            crate::http::rewrite::push_ip(&mut out, &ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
        let addrs = [
            "0.0.0.0:0",
            "127.0.0.1:65535",
            "[::1]:80",
            "[fe80::1%7]:8080",
        ];
        for addr in addrs {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            push_socket_addr(&mut out, &addr);
            assert_eq!(out, addr.to_string().as_bytes());
        }
    }

    #[test]
    fn fields_are_escaped() {
        // (raw bytes, as nginx's combined writes them, as a JSON string body)
        let cases: &[(&[u8], &str, &str)] = &[
            (b"plain/1.0 (x; y)", "plain/1.0 (x; y)", "plain/1.0 (x; y)"),
            (b"a\"b", "a\\x22b", "a\\\"b"),
            (b"a\\b", "a\\x5Cb", "a\\\\b"),
            (b"\r\n", "\\x0D\\x0A", "\\u000d\\u000a"),
            (b"\x00\x1f\x7f", "\\x00\\x1F\\x7F", "\\u0000\\u001f\\u007f"),
            ("é€".as_bytes(), "\\xC3\\xA9\\xE2\\x82\\xAC", "é€"),
            (b"\xff", "\\xFF", "\\u00ff"),
            // A sequence cut short by the end of the field.
            (b"ok\xc3", "ok\\xC3", "ok\\u00c3"),
            // Invalid byte between valid text, and a valid character after it.
            (b"a\xe9b\xc3\xa9", "a\\xE9b\\xC3\\xA9", "a\\u00e9bé"),
            (b"", "", ""),
        ];
        for (raw, combined, json) in cases {
            let mut out = Vec::new();
            push_nginx_escaped(&mut out, raw);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                *combined,
                "combined {raw:?}"
            );
            let mut out = Vec::new();
            push_json_str(&mut out, raw);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("\"{json}\""),
                "json {raw:?}"
            );
        }
    }

    /// Reverses nginx's `\xXX`, so a test can check the original bytes survive.
    fn unescape_nginx(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'\\' {
                assert_eq!(s[i + 1], b'x');
                let hex = std::str::from_utf8(&s[i + 2..i + 4]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 4;
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        out
    }

    /// Just enough JSON to read one access log line back: an object of strings, numbers,
    /// booleans and null. Strings decode `\u00xx` to the byte `xx`, so fields round-trip.
    fn parse_json_line(line: &[u8]) -> Vec<(String, Vec<u8>)> {
        fn string(s: &[u8], i: &mut usize) -> Vec<u8> {
            assert_eq!(s[*i], b'"');
            *i += 1;
            let mut out = Vec::new();
            loop {
                match s[*i] {
                    b'"' => {
                        *i += 1;
                        return out;
                    }
                    b'\\' => {
                        match s[*i + 1] {
                            b'"' => out.push(b'"'),
                            b'\\' => out.push(b'\\'),
                            b'u' => {
                                let hex = std::str::from_utf8(&s[*i + 2..*i + 6]).unwrap();
                                let code = u16::from_str_radix(hex, 16).unwrap();
                                out.push(u8::try_from(code).unwrap());
                                *i += 4;
                            }
                            other => panic!("unexpected escape {other}"),
                        }
                        *i += 2;
                    }
                    b => {
                        assert!(b >= 0x20, "raw control byte {b} in a JSON string");
                        out.push(b);
                        *i += 1;
                    }
                }
            }
        }
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let s = &line[..line.len() - 1];
        let mut fields = Vec::new();
        let mut i = 0;
        assert_eq!(s[i], b'{');
        i += 1;
        loop {
            let key = String::from_utf8(string(s, &mut i)).unwrap();
            assert_eq!(s[i], b':');
            i += 1;
            let value = if s[i] == b'"' {
                string(s, &mut i)
            } else {
                let end = i + s[i..].iter().position(|&b| b == b',' || b == b'}').unwrap();
                let v = s[i..end].to_vec();
                i = end;
                v
            };
            fields.push((key, value));
            match s[i] {
                b',' => i += 1,
                b'}' => break,
                other => panic!("unexpected {other} after a value"),
            }
        }
        assert_eq!(i + 1, s.len(), "bytes after the object");
        fields
    }

    #[test]
    fn hostile_bytes_never_break_the_line() {
        let target: &[u8] = b"/a\r\nHTTP/1.1 200 OK\r\n\"x\\\"\x00\xff";
        let user_agent: &[u8] = b"evil\"agent\r\n\" 500 0 \"-\" \"-\n{\"status\":1}\x1b[31m";
        let s = request(target, user_agent);

        let combined = line(Format::Combined, &s, &proxied());
        let bytes = combined.as_bytes();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(!bytes.contains(&b'\r'));
        assert!(bytes
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) || b == b'\n'));
        // Exactly the six quotes of the three quoted fields, and their contents round-trip.
        let quoted: Vec<&[u8]> = bytes.split(|&b| b == b'"').collect();
        assert_eq!(quoted.len(), 7, "{combined}");
        let mut request_line = b"GET ".to_vec();
        request_line.extend_from_slice(target);
        request_line.extend_from_slice(b" HTTP/1.1");
        assert_eq!(unescape_nginx(quoted[1]), request_line);
        assert_eq!(unescape_nginx(quoted[5]), user_agent);

        let json = line(Format::Json, &s, &proxied());
        let fields = parse_json_line(json.as_bytes());
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "time",
                "client",
                "method",
                "target",
                "version",
                "host",
                "status",
                "bytes_sent",
                "referer",
                "user_agent",
                "upstream",
                "connect_ms",
                "reused",
                "total_ms",
                "cause"
            ]
        );
        // The target is not valid UTF-8 only in its last byte, which reads back as that byte.
        assert_eq!(fields[3].1, target);
        assert_eq!(fields[9].1, user_agent);
        assert_eq!(fields[6].1, b"200");
    }

    #[test]
    fn longest_possible_line_stays_within_its_bound() {
        // Every byte needs the longest escape, and every other field is as long as it gets.
        let junk = [0xffu8; 300];
        let s = Start {
            client: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .unwrap(),
            method: &junk,
            target: &junk,
            version: "HTTP/1.1",
            host: &junk,
            referer: &junk,
            user_agent: &junk,
            wall_ms: u64::MAX,
        };
        let o = Outcome {
            status: u16::MAX,
            bytes_sent: u64::MAX,
            upstream: Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                    .parse()
                    .unwrap(),
                65535,
                0,
                u32::MAX,
            ))),
            connect_ms: u64::MAX,
            reused: false,
            total_ms: u64::MAX,
            cause: Some("bad_response_framing"),
        };
        for format in [Format::Combined, Format::Json] {
            let mut log = AccessLog::in_memory(format);
            let p = log.start(&s);
            let bound = p.bytes.len() * MAX_ESCAPE + LINE_OVERHEAD;
            log.finish(p, &o, 0);
            log.flush();
            assert_eq!(log.dropped(), 0);
            assert!(log.contents().len() <= bound, "{format:?}");
            if format == Format::Json {
                // Every stored byte became `\u00ff`: the bound is tight but for the overhead.
                assert!(log.contents().len() > bound - LINE_OVERHEAD);
            }
        }
    }

    #[test]
    fn dates_match_known_timestamps() {
        // (unix seconds, $time_local, RFC 3339 without the fraction); from `date -u -d @N`.
        let cases = [
            (0, "01/Jan/1970:00:00:00 +0000", "1970-01-01T00:00:00"),
            (68_256, "01/Jan/1970:18:57:36 +0000", "1970-01-01T18:57:36"),
            // 2000 is a leap year although divisible by 100, since it is divisible by 400.
            (
                951_782_400,
                "29/Feb/2000:00:00:00 +0000",
                "2000-02-29T00:00:00",
            ),
            (
                951_868_799,
                "29/Feb/2000:23:59:59 +0000",
                "2000-02-29T23:59:59",
            ),
            (
                1_709_164_800,
                "29/Feb/2024:00:00:00 +0000",
                "2024-02-29T00:00:00",
            ),
            // End of a leap year, and the next second.
            (
                1_735_689_599,
                "31/Dec/2024:23:59:59 +0000",
                "2024-12-31T23:59:59",
            ),
            (
                1_735_689_600,
                "01/Jan/2025:00:00:00 +0000",
                "2025-01-01T00:00:00",
            ),
            (
                1_795_325_582,
                "22/Nov/2026:05:33:02 +0000",
                "2026-11-22T05:33:02",
            ),
            // 2100 is not a leap year: February ends on the 28th.
            (
                4_107_542_399,
                "28/Feb/2100:23:59:59 +0000",
                "2100-02-28T23:59:59",
            ),
            (
                4_107_542_400,
                "01/Mar/2100:00:00:00 +0000",
                "2100-03-01T00:00:00",
            ),
            (
                253_402_300_799,
                "31/Dec/9999:23:59:59 +0000",
                "9999-12-31T23:59:59",
            ),
        ];
        for (secs, local, rfc) in cases {
            let mut out = Vec::new();
            push_time_local(&mut out, secs * 1000 + 999);
            assert_eq!(String::from_utf8(out).unwrap(), local, "{secs}");
            let mut out = Vec::new();
            push_rfc3339(&mut out, secs * 1000 + 7);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{rfc}.007Z"),
                "{secs}"
            );
        }
    }

    #[test]
    fn dates_agree_with_counting_days_until_2400() {
        fn days_in_month(year: u64, month: u64) -> u64 {
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            }
        }
        let (mut year, mut month, mut day) = (1970, 1, 1);
        let mut days = 0u64;
        while year < 2401 {
            let ms = days * 86_400_000 + 86_399_999;
            let t = Civil::from_unix_ms(ms);
            assert_eq!((t.year, t.month, t.day), (year, month, day), "day {days}");
            assert_eq!((t.hour, t.minute, t.second, t.milli), (23, 59, 59, 999));
            days += 1;
            day += 1;
            if day > days_in_month(year, month) {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    #[test]
    fn a_failed_reopen_keeps_the_file_it_had() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("hearth-reopen-unit-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut log = AccessLog::open(&path, Format::Combined).unwrap();
        let s = request(b"/before", b"ua");
        let p = log.start(&s);
        log.finish(p, &proxied(), 0);
        // A directory cannot be opened for appending.
        assert!(log.reopen(&dir).is_err());
        let s = request(b"/after", b"ua");
        let p = log.start(&s);
        log.finish(p, &proxied(), 0);
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("/before") && lines[1].contains("/after"),
            "{text}"
        );
    }

    #[test]
    fn tick_writes_once_the_interval_has_passed() {
        let mut log = AccessLog::in_memory(Format::Combined);
        let s = request(b"/", b"ua");
        // Nothing buffered: nothing is ever due.
        log.tick(0);
        log.tick(1_000_000);
        assert!(log.contents().is_empty());
        assert_eq!(log.next_deadline(), None);

        // The first line after a long quiet spell goes out at the next tick.
        let p = log.start(&s);
        log.finish(p, &proxied(), 1_000_000);
        assert!(
            log.contents().is_empty(),
            "finish wrote below the size threshold"
        );
        log.tick(1_000_000);
        let one = log.contents().len();
        assert!(one > 0);

        // The next one waits for 100 ms after that write.
        let p = log.start(&s);
        log.finish(p, &proxied(), 1_000_010);
        assert_eq!(log.next_deadline(), Some(1_000_100));
        for now in [1_000_010, 1_000_050, 1_000_099] {
            log.tick(now);
            assert_eq!(log.contents().len(), one, "written early at {now}");
        }
        log.tick(1_000_100);
        assert_eq!(log.contents().len(), 2 * one);

        // Lines that arrive within one interval leave in one write.
        for now in [1_000_150, 1_000_160, 1_000_170] {
            let p = log.start(&s);
            log.finish(p, &proxied(), now);
            log.tick(now);
        }
        assert_eq!(log.contents().len(), 2 * one);
        log.tick(1_000_200);
        assert_eq!(log.contents().len(), 5 * one);
        assert_eq!(log.next_deadline(), None);
    }

    #[test]
    fn finish_writes_once_the_buffer_is_large() {
        let mut log = AccessLog::in_memory(Format::Json);
        let s = request(b"/", b"ua");
        let mut lines = 0;
        while log.contents().is_empty() {
            let p = log.start(&s);
            log.finish(p, &proxied(), 5);
            lines += 1;
            assert!(lines < 10_000, "never wrote");
        }
        // One write of everything, as soon as the buffer reached the threshold.
        let written = log.contents();
        assert!(written.len() >= FLUSH_BYTES);
        assert!(written.len() < FLUSH_BYTES + 1024);
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), lines);
        assert!(log.buf.is_empty());
        assert_eq!(log.dropped(), 0);
    }

    #[derive(Clone, Copy, Debug)]
    enum Mode {
        Accept,
        /// Take at most this many bytes per write, as a pipe may.
        AcceptUpTo(usize),
        WouldBlock,
        Fail,
    }

    struct Scripted {
        mode: Mode,
        written: Vec<u8>,
        writes: usize,
    }

    /// A writer whose behaviour the test changes while the log owns it.
    #[derive(Clone)]
    struct Script(Arc<Mutex<Scripted>>);

    impl Script {
        fn new(mode: Mode) -> Script {
            Script(Arc::new(Mutex::new(Scripted {
                mode,
                written: Vec::new(),
                writes: 0,
            })))
        }
        fn set(&self, mode: Mode) {
            self.0.lock().unwrap().mode = mode;
        }
        fn written(&self) -> Vec<u8> {
            self.0.lock().unwrap().written.clone()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().writes
        }
        fn log(&self, format: Format) -> AccessLog {
            AccessLog::with_writer(Box::new(self.clone()), "scripted".into(), format)
        }
    }

    impl Write for Script {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.writes += 1;
            let n = match s.mode {
                Mode::Accept => bytes.len(),
                Mode::AcceptUpTo(n) => n.min(bytes.len()),
                Mode::WouldBlock => return Err(io::ErrorKind::WouldBlock.into()),
                Mode::Fail => return Err(io::Error::other("disk on fire")),
            };
            s.written.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them() {
        let script = Script::new(Mode::WouldBlock);
        let mut log = script.log(Format::Combined);
        let s = request(b"/stalled", b"ua");
        let capacity = log.buf.capacity();
        let mut accepted = 0u64;
        for i in 0..50_000u64 {
            let p = log.start(&s);
            log.finish(p, &proxied(), i);
            log.tick(i);
            if log.dropped() == 0 {
                accepted += 1;
            }
            assert!(log.buf.len() <= MAX_BUFFER_BYTES);
        }
        assert!(log.dropped() > 0);
        assert_eq!(accepted + log.dropped(), 50_000);
        assert!(
            log.buf.capacity() <= MAX_BUFFER_BYTES,
            "grew from {capacity}"
        );
        assert_eq!(log.write_errors(), 0, "back-pressure is not a failure");

        // Once the reader catches up, every line that was kept arrives whole.
        script.set(Mode::Accept);
        log.tick(u64::MAX);
        let written = script.written();
        assert_eq!(
            written.iter().filter(|&&b| b == b'\n').count() as u64,
            accepted
        );
        assert!(written.ends_with(b"\n"));
    }

    #[test]
    fn a_failed_write_drops_the_buffer_and_reports_once() {
        let script = Script::new(Mode::Fail);
        let mut log = script.log(Format::Json);
        let s = request(b"/", b"ua");
        for round in 1..=3u64 {
            let now = round * 1000;
            for _ in 0..4 {
                let p = log.start(&s);
                log.finish(p, &proxied(), now);
            }
            log.tick(now);
            assert!(log.buf.is_empty());
        }
        assert_eq!(log.dropped(), 12);
        assert_eq!(log.write_errors(), 3);
        assert!(log.failing);

        script.set(Mode::Accept);
        let p = log.start(&s);
        log.finish(p, &proxied(), 5000);
        log.tick(5000);
        assert!(!log.failing);
        assert_eq!(script.written().iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(script.writes(), 4);
    }

    #[test]
    fn partial_writes_keep_the_rest_and_finish_the_line() {
        let script = Script::new(Mode::AcceptUpTo(100));
        let mut log = script.log(Format::Combined);
        let mut expected = AccessLog::in_memory(Format::Combined);
        let s = request(b"/partial", b"ua");
        for _ in 0..5 {
            for l in [&mut log, &mut expected] {
                let p = l.start(&s);
                l.finish(p, &proxied(), 0);
            }
        }
        expected.flush();
        let mut now = 0;
        while !log.buf.is_empty() {
            log.tick(now);
            now += FLUSH_INTERVAL_MS;
            assert!(now < 100 * FLUSH_INTERVAL_MS, "never drained");
        }
        assert_eq!(script.written(), expected.contents());
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn pending_storage_is_reused_once_warm() {
        let mut log = AccessLog::in_memory(Format::Json);
        let inflight = 8;
        let run = |log: &mut AccessLog, round: u64| {
            let target = format!("/round/{round}");
            let s = request(target.as_bytes(), b"Mozilla/5.0 (X11; Linux x86_64)");
            let pendings: Vec<Pending> = (0..inflight).map(|_| log.start(&s)).collect();
            for p in pendings {
                log.finish(p, &proxied(), round);
            }
            log.tick(round * FLUSH_INTERVAL_MS);
        };
        run(&mut log, 0);
        let storage = |log: &AccessLog| {
            let mut v: Vec<(*const u8, usize)> = log
                .free
                .iter()
                .map(|b| (b.as_ptr(), b.capacity()))
                .collect();
            v.sort();
            v
        };
        let warm = storage(&log);
        let buf = (log.buf.as_ptr(), log.buf.capacity());
        assert_eq!(warm.len(), inflight);
        for round in 1..1000 {
            run(&mut log, round);
        }
        assert_eq!(storage(&log), warm, "free list allocated or regrew");
        assert_eq!((log.buf.as_ptr(), log.buf.capacity()), buf);

        // Storage that a huge head made large is freed, not kept.
        let huge = vec![b'a'; 2 * MAX_KEPT_PENDING_BYTES];
        let p = log.start(&request(&huge, b"ua"));
        log.discard(p);
        assert_eq!(log.free.len(), inflight - 1);
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("hearth-accesslog-{}-{name}", std::process::id()))
    }

    #[test]
    fn cores_append_whole_lines_to_one_file() {
        let path = temp_path("shared.log");
        let _ = std::fs::remove_file(&path);
        let mut a = AccessLog::open(&path, Format::Combined).unwrap();
        let mut b = AccessLog::open(&path, Format::Combined).unwrap();
        let from_a = request(b"/from-a", b"a");
        let from_b = request(b"/from-b", b"b");
        for round in 0..10 {
            for (log, s) in [(&mut a, &from_a), (&mut b, &from_b)] {
                let p = log.start(s);
                log.finish(p, &proxied(), round);
                log.tick(round * FLUSH_INTERVAL_MS);
            }
        }
        a.flush();
        drop(b); // dropping flushes too
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text.lines().count(), 20);
        assert_eq!(text.matches("/from-a").count(), 10);
        assert_eq!(text.matches("/from-b").count(), 10);
        assert!(text.lines().all(|l| l.starts_with("192.0.2.7 - - [")));
        assert!(text.lines().all(|l| l.ends_with("total_ms=17 cause=-")));
        assert_eq!((a.dropped(), a.write_errors()), (0, 0));
    }

    #[test]
    fn a_device_that_refuses_writes_counts_errors() {
        // /dev/full fails every write with ENOSPC: a real error path without a full disk.
        let path = Path::new("/dev/full");
        if !path.exists() {
            return;
        }
        let mut log = AccessLog::open(path, Format::Combined).unwrap();
        let p = log.start(&request(b"/", b"ua"));
        log.finish(p, &proxied(), 0);
        log.flush();
        assert_eq!((log.dropped(), log.write_errors()), (1, 1));
    }
}
