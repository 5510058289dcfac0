//! The load generator of bench/shapes.sh for the shapes wrk cannot drive: latency kept per class
//! of request (fast and slow), a step in the number of clients, and an open loop at a fixed rate.
//!
//! std only: one thread per keep-alive connection, blocking sockets, no async runtime. Answers
//! are parsed (status line, then Content-Length or chunked bodies), so a proxy that frames an
//! answer wrongly counts as an error, not as a fast answer. A request that gets no whole 2xx
//! answer counts as an error and its connection is opened again for the next one.
//!
//! Modes:
//! - `closed`: `--clients` connections, each sending its next request when the last is answered,
//!   for `--secs`. With `--slow-every N`, every Nth request of each client (offset by client, so
//!   the slow ones are spread) goes to `--slow-path`, the rest to `--path`; latency is kept per
//!   class. Prints req/s too, so it also measures a server's capacity.
//! - `step`: `--clients` connections throughout, and `--step-clients` in all during the window
//!   `--before` .. `--before + --step` seconds (the rest of `--secs` back at `--clients`); the
//!   requests started inside the window are the `step` class, the others `base`.
//! - `rate`: an open loop: request i is due at start + i / `--rate`, whatever happened to the
//!   ones before it; `--clients` connections take the due requests in order, and each latency
//!   counts from when the request was due, not from when a connection was free to send it, so a
//!   server that falls behind shows it (no coordinated omission).
//!
//! Output, on stdout, one line per class: `class=NAME requests=N errors=N p50_us=.. p99_us=..
//! p999_us=.. max_us=..`, then `total requests=N errors=N secs=S rps=R`. Exit status 2 on bad
//! arguments, 0 otherwise: how a server behaved is in the figures. It connects only to loopback.
//!
//! `cargo run --release --example load -- --addr 127.0.0.1:8080 --mode rate --rate 5000`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

const MAX_HEAD: usize = 64 * 1024;

#[derive(Parser)]
#[command(about = "Closed-loop, stepped and open-loop HTTP/1.1 load with latency per class")]
struct Args {
    /// Where to send the requests; a loopback address only.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    mode: Mode,
    /// Connections (closed, rate) or the base number of clients (step).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    #[arg(long, default_value = "/")]
    path: String,
    /// closed: every Nth request of a client goes to --slow-path (0: none).
    #[arg(long, default_value_t = 0)]
    slow_every: usize,
    #[arg(long, default_value = "/slow")]
    slow_path: String,
    /// step: clients during the step.
    #[arg(long, default_value_t = 300)]
    step_clients: usize,
    /// step: seconds before the step starts.
    #[arg(long, default_value_t = 3.0)]
    before: f64,
    /// step: seconds the step lasts.
    #[arg(long, default_value_t = 5.0)]
    step: f64,
    /// rate: requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds any one connect, read or write may take.
    #[arg(long, default_value_t = 10.0)]
    io_timeout: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Closed,
    Step,
    Rate,
}

/// Latencies of one class, in microseconds, and its errors.
#[derive(Default)]
struct Class {
    lat: Vec<u32>,
    errors: u64,
}

impl Class {
    fn record(&mut self, ok: bool, us: u64) {
        if ok {
            self.lat.push(u32::try_from(us).unwrap_or(u32::MAX));
        } else {
            self.errors += 1;
        }
    }

    fn merge(&mut self, o: Class) {
        self.lat.extend(o.lat);
        self.errors += o.errors;
    }
}

/// One keep-alive connection, reopened after a failure.
struct Conn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            timeout,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends `request` and reads one whole answer; true for a 2xx.
    fn exchange(&mut self, request: &[u8]) -> bool {
        match self.try_exchange(request) {
            Ok((status, close)) => {
                if close {
                    self.stream = None;
                }
                (200..300).contains(&status)
            }
            Err(_) => {
                self.stream = None;
                false
            }
        }
    }

    fn try_exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let s = self.stream.as_mut().expect("opened above");
        s.write_all(request)?;
        read_answer(s, &mut self.buf)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads more bytes onto `buf`; EOF is an error (no answer here is close-delimited).
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let old = buf.len();
    buf.resize(old + 64 * 1024, 0);
    let n = s.read(&mut buf[old..]);
    buf.truncate(old + *n.as_ref().unwrap_or(&0));
    match n? {
        0 => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        _ => Ok(()),
    }
}

/// Drops `n` body bytes, reading as needed.
fn skip(s: &mut TcpStream, buf: &mut Vec<u8>, mut n: usize) -> io::Result<()> {
    loop {
        let take = n.min(buf.len());
        buf.drain(..take);
        n -= take;
        if n == 0 {
            return Ok(());
        }
        fill(s, buf)?;
    }
}

fn line(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let l = buf[..i].to_vec();
            buf.drain(..i + 2);
            return Ok(l);
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("line too long"));
        }
        fill(s, buf)?;
    }
}

/// One final answer: status and whether the server closes after it.
fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    loop {
        let (status, length, chunked, close, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(buf).map_err(|_| bad("bad head"))? {
                let mut length = None;
                let mut chunked = false;
                let mut close = r.version != Some(1);
                for h in r.headers.iter() {
                    let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = Some(v.trim().parse::<usize>().map_err(|_| bad("length"))?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = v.contains("chunked");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = v.contains("close");
                    }
                }
                break (r.code.unwrap_or(0), length, chunked, close, n);
            }
            if buf.len() > MAX_HEAD {
                return Err(bad("head too long"));
            }
            fill(s, buf)?;
        };
        buf.drain(..head_len);
        if (100..200).contains(&status) {
            continue;
        }
        if chunked {
            loop {
                let l = line(s, buf)?;
                let digits = String::from_utf8_lossy(&l);
                let digits = digits.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(digits, 16).map_err(|_| bad("chunk size"))?;
                if size == 0 {
                    while !line(s, buf)?.is_empty() {}
                    break;
                }
                skip(s, buf, size)?;
                if !line(s, buf)?.is_empty() {
                    return Err(bad("chunk end"));
                }
            }
        } else if let Some(n) = length {
            skip(s, buf, n)?;
        } else if !(status == 204 || status == 304) {
            return Err(bad("close-delimited answer"));
        }
        return Ok((status, close));
    }
}

fn get(args: &Args, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hearth-load\r\n\r\n",
        args.addr
    )
    .into_bytes()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, mut c: Class) {
    c.lat.sort_unstable();
    println!(
        "class={name} requests={} errors={} p50_us={} p99_us={} p999_us={} max_us={}",
        c.lat.len() as u64 + c.errors,
        c.errors,
        percentile(&c.lat, 0.50),
        percentile(&c.lat, 0.99),
        percentile(&c.lat, 0.999),
        c.lat.last().copied().unwrap_or(0)
    );
}

fn check(args: &Args) -> Result<(), String> {
    if !args.addr.ip().is_loopback() {
        return Err(format!("{} is not a loopback address", args.addr));
    }
    if !(1..=4096).contains(&args.clients) || !(1..=4096).contains(&args.step_clients) {
        return Err("--clients and --step-clients must be 1 to 4096".into());
    }
    if !(args.secs > 0.0 && args.secs <= 3600.0) {
        return Err("--secs must be above 0 and at most 3600".into());
    }
    if !(args.rate > 0.0 && args.rate <= 1e6) {
        return Err("--rate must be above 0 and at most 1000000".into());
    }
    if !(args.io_timeout > 0.0 && args.io_timeout <= 600.0) {
        return Err("--io-timeout must be above 0 and at most 600".into());
    }
    let steps = args.mode == Mode::Step;
    if steps && (args.before < 0.0 || args.step < 0.0 || args.before + args.step > args.secs) {
        return Err("--before + --step must fit in --secs".into());
    }
    for p in [&args.path, &args.slow_path] {
        if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("paths must start with / and hold no spaces".into());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        eprintln!("load: {e}");
        return ExitCode::from(2);
    }
    let args = Arc::new(args);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.secs);
    let threads = match args.mode {
        Mode::Step => args.clients.max(args.step_clients),
        _ => args.clients,
    };
    // rate: the next request number to take; its due time is start + n / rate.
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(threads);
    for id in 0..threads {
        let (args, next) = (Arc::clone(&args), Arc::clone(&next));
        let spawned = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || worker(&args, id, start, end, &next));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("load: cannot start thread {id}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let (mut a, mut b) = (Class::default(), Class::default());
    for h in handles {
        if let Ok((x, y)) = h.join() {
            a.merge(x);
            b.merge(y);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let total = (a.lat.len() + b.lat.len()) as u64;
    let errors = a.errors + b.errors;
    let names = match args.mode {
        Mode::Closed => ("fast", "slow"),
        Mode::Step => ("base", "step"),
        Mode::Rate => ("all", "unused"),
    };
    report(names.0, a);
    if args.mode != Mode::Rate {
        report(names.1, b);
    }
    println!(
        "total requests={} errors={errors} secs={secs:.3} rps={:.1}",
        total + errors,
        total as f64 / secs
    );
    ExitCode::SUCCESS
}

/// One connection's loop; returns its two classes (see `names` in main).
fn worker(
    args: &Args,
    id: usize,
    start: Instant,
    end: Instant,
    next: &AtomicU64,
) -> (Class, Class) {
    let timeout = Duration::from_secs_f64(args.io_timeout);
    let mut conn = Conn::new(args.addr, timeout);
    let fast = get(args, &args.path);
    let slow = get(args, &args.slow_path);
    let (mut a, mut b) = (Class::default(), Class::default());
    let mut sent = 0usize;
    match args.mode {
        Mode::Closed => {
            while Instant::now() < end {
                let is_slow = args.slow_every > 0 && (sent + id) % args.slow_every == 0;
                sent += 1;
                let t0 = Instant::now();
                let ok = conn.exchange(if is_slow { &slow } else { &fast });
                let us = t0.elapsed().as_micros() as u64;
                if is_slow { &mut b } else { &mut a }.record(ok, us);
            }
        }
        Mode::Step => {
            let from = start + Duration::from_secs_f64(args.before);
            let to = from + Duration::from_secs_f64(args.step);
            let always = id < args.clients;
            if !always {
                // A step client works only in the window.
                if id >= args.step_clients {
                    return (a, b);
                }
                thread::sleep(from.saturating_duration_since(Instant::now()));
            }
            loop {
                let t0 = Instant::now();
                if t0 >= end || (!always && t0 >= to) {
                    break;
                }
                let ok = conn.exchange(&fast);
                let us = t0.elapsed().as_micros() as u64;
                let in_step = t0 >= from && t0 < to;
                if in_step { &mut b } else { &mut a }.record(ok, us);
            }
        }
        Mode::Rate => loop {
            let n = next.fetch_add(1, Relaxed);
            let due = start + Duration::from_secs_f64(n as f64 / args.rate);
            if due >= end {
                break;
            }
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            let ok = conn.exchange(&fast);
            a.record(ok, due.elapsed().as_micros() as u64);
        },
    }
    (a, b)
}
