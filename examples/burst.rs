//! The load generator of bench/posts.sh: keep-alive clients that send requests in bursts separated
//! by idle gaps, the traffic an upstream keep-alive pool exists for and the traffic that shows
//! whether a pool survives POSTs and an origin that closes idle connections.
//!
//! Each client is one thread with one connection, opened before the first burst and kept across
//! bursts; it is reopened only when the server closed it (`Connection: close`, a close noticed
//! while idle, or a failed exchange). In each burst every client sends its requests one after the
//! other, each after the answer to the one before; a gap (fixed, or drawn from a seeded generator
//! so every proxy of a run sees the same gaps) follows the end of a burst. Answers are parsed
//! (status line, then Content-Length, chunked or close-delimited bodies), so a proxy that frames
//! an answer wrongly shows up as a protocol error rather than as a slow request.
//!
//! It prints one line, `key=value` pairs, on stdout when done (or when the deadline cuts the run
//! short); `--verbose` adds a line per burst on stderr. It exits 2 on bad arguments and 0
//! otherwise: how a server behaved is in the counts, not in the exit status.
//!
//! `cargo run --release --example burst -- --addr 127.0.0.1:8080 --mix post-split`. It connects
//! only to a loopback address.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

// An answer head longer than this is a broken server, not a big answer.
const MAX_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

#[derive(Parser)]
#[command(about = "Keep-alive HTTP/1.1 clients sending bursts of requests with idle gaps")]
struct Args {
    /// Where to send the requests; a loopback address only.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Clients, each with one keep-alive connection of its own.
    #[arg(long, default_value_t = 40)]
    clients: usize,
    /// Requests each client sends per burst, one after the other.
    #[arg(long, default_value_t = 6)]
    requests: usize,
    /// Bursts.
    #[arg(long, default_value_t = 3)]
    bursts: usize,
    /// Idle seconds from the end of one burst to the start of the next: a value ("1") or a
    /// range ("1.5-3") each gap is drawn from, uniformly.
    #[arg(long, default_value = "1", value_parser = parse_gap)]
    gap: Gap,
    /// Seed of the gap generator; the same seed gives the same gaps.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// What to send: GETs, POSTs with head and body in one write, POSTs whose body is a second
    /// write after --split-pause-ms, or half GETs and half POSTs (mixed-split: split POSTs).
    #[arg(long, value_enum, default_value_t = Mix::Get)]
    mix: Mix,
    /// Bytes in each POST body (Content-Length framed).
    #[arg(long, default_value_t = 200)]
    body: usize,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Milliseconds between the head and the body of a split POST.
    #[arg(long, default_value_t = 2)]
    split_pause_ms: u64,
    /// Seconds over which the clients' starts are spread in each burst (client i starts
    /// i/clients of it late); 0 starts them all at once, the hardest case for a pool.
    #[arg(long, default_value_t = 0.0)]
    spread: f64,
    /// Seconds any one connect, read or write may take before the exchange counts as failed.
    #[arg(long, default_value_t = 5.0)]
    io_timeout: f64,
    /// Seconds the whole run may take; by default, enough for every request to time out.
    #[arg(long)]
    deadline: Option<f64>,
    /// A line per burst on stderr.
    #[arg(long)]
    verbose: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mix {
    Get,
    Post,
    PostSplit,
    Mixed,
    MixedSplit,
}

#[derive(Clone, Copy)]
enum Kind {
    Get,
    Post,
    PostSplit,
}

impl Mix {
    /// The kind of request `index` (counted over the whole run) of client `client`. Mixed runs
    /// alternate, offset by client, so each burst is half POSTs whenever clients is even.
    fn kind(self, client: usize, index: usize) -> Kind {
        let post_turn = (client + index) % 2 == 1;
        match self {
            Mix::Get => Kind::Get,
            Mix::Post => Kind::Post,
            Mix::PostSplit => Kind::PostSplit,
            Mix::Mixed if post_turn => Kind::Post,
            Mix::MixedSplit if post_turn => Kind::PostSplit,
            Mix::Mixed | Mix::MixedSplit => Kind::Get,
        }
    }
}

#[derive(Clone, Copy)]
struct Gap {
    min: f64,
    max: f64,
}

fn parse_gap(text: &str) -> Result<Gap, String> {
    let number = |s: &str| -> Result<f64, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number of seconds"))?;
        // An hour-long gap is a typo, and it would make the deadline meaningless.
        if !(0.0..=3600.0).contains(&v) {
            return Err(format!("{v} s is outside 0 to 3600 s"));
        }
        Ok(v)
    };
    let gap = match text.split_once('-') {
        Some((lo, hi)) => Gap {
            min: number(lo)?,
            max: number(hi)?,
        },
        None => {
            let v = number(text)?;
            Gap { min: v, max: v }
        }
    };
    if gap.min > gap.max {
        return Err(format!("the range {text} runs backwards"));
    }
    Ok(gap)
}

/// SplitMix64: a few lines, no crate, and the same gaps from the same seed on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn gap(&mut self, gap: Gap) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        gap.min + (gap.max - gap.min) * unit
    }
}

/// Counts shared by every client, updated after each exchange so that a run the deadline cuts
/// short still reports everything that happened.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    // Answers by the first digit of the status; index 0 holds anything outside 1xx-5xx.
    classes: [AtomicU64; 6],
    resets: AtomicU64,
    eof_before: AtomicU64,
    eof_mid: AtomicU64,
    timeouts: AtomicU64,
    protocol: AtomicU64,
    other: AtomicU64,
    // Requests that failed because no connection could be opened for them.
    connect_fails: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    server_closes: AtomicU64,
    idle_closes: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counts {
    fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let classes: Vec<u64> = self.classes.iter().map(get).collect();
        let errors = [
            &self.connect_fails,
            &self.resets,
            &self.eof_before,
            &self.eof_mid,
            &self.timeouts,
            &self.protocol,
            &self.other,
        ];
        Snapshot {
            requests: get(&self.requests),
            ok: classes[2],
            answers: classes.iter().sum(),
            errors: errors.iter().map(|c| get(c)).sum(),
        }
    }
}

struct Snapshot {
    requests: u64,
    ok: u64,
    answers: u64,
    errors: u64,
}

/// Why an exchange gave no complete answer.
enum Failure {
    Reset,
    /// The connection closed before any byte of the answer.
    EofBefore,
    /// The connection closed part way through the answer.
    EofMid,
    Timeout,
    /// An answer that is not HTTP/1.x, or framing that cannot be followed.
    Protocol,
    Other,
}

impl Failure {
    fn from_io(e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Failure::Reset,
            io::ErrorKind::UnexpectedEof => Failure::EofMid,
            _ => Failure::Other,
        }
    }

    fn counter(self, counts: &Counts) -> &AtomicU64 {
        match self {
            Failure::Reset => &counts.resets,
            Failure::EofBefore => &counts.eof_before,
            Failure::EofMid => &counts.eof_mid,
            Failure::Timeout => &counts.timeouts,
            Failure::Protocol => &counts.protocol,
            Failure::Other => &counts.other,
        }
    }
}

/// What the client needs to know of an answer once it has been read whole.
struct Answer {
    status: u16,
    /// The server will not take another request on this connection.
    close: bool,
}

/// How the body of an answer ends.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// One keep-alive connection and the bytes read from it but not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    io_timeout: Duration,
    deadline: Instant,
    /// Whether any byte of the answer being read has arrived, which tells an EOF mid-answer
    /// from one before it.
    started: bool,
}

impl Conn {
    /// Reads whatever arrives next onto the end of buf.
    fn fill(&mut self) -> Result<(), Failure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Timeout);
        }
        // std refuses a zero timeout; left is not zero here.
        let wait = self.io_timeout.min(left);
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(|e| Failure::from_io(&e))?;
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let read = loop {
            match self.stream.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) => {
                self.buf.truncate(old);
                Err(if self.started {
                    Failure::EofMid
                } else {
                    Failure::EofBefore
                })
            }
            Ok(n) => {
                self.buf.truncate(old + n);
                self.started = true;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(old);
                Err(Failure::from_io(&e))
            }
        }
    }

    /// Discards the next `n` bytes, reading as needed, without holding more than a read's worth.
    fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        while n > 0 {
            if self.buf.is_empty() {
                self.fill()?;
            }
            let take = n.min(self.buf.len() as u64) as usize;
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Consumes one line ending in CRLF and returns it without the CRLF.
    fn line(&mut self) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            // Chunk-size lines and trailers are short; a long one is a framing error.
            if self.buf.len() > MAX_HEAD {
                return Err(Failure::Protocol);
            }
            self.fill()?;
        }
    }

    fn chunked(&mut self) -> Result<(), Failure> {
        loop {
            let line = self.line()?;
            let digits = line.split(|&b| b == b';').next().unwrap_or_default();
            let digits = std::str::from_utf8(digits)
                .map_err(|_| Failure::Protocol)?
                .trim();
            let size = u64::from_str_radix(digits, 16).map_err(|_| Failure::Protocol)?;
            if size == 0 {
                // Trailer fields, if any, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(());
            }
            self.skip(size)?;
            if !self.line()?.is_empty() {
                return Err(Failure::Protocol);
            }
        }
    }

    /// Reads one final answer: interim 1xx answers are read past, the body is read and dropped.
    fn answer(&mut self) -> Result<Answer, Failure> {
        self.started = !self.buf.is_empty();
        loop {
            let (status, framing, close, head_len) = loop {
                if let Some(head) = parse_head(&self.buf)? {
                    break head;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(Failure::Protocol);
                }
                self.fill()?;
            };
            self.buf.drain(..head_len);
            // 101 would switch protocols, which no request here asks for.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let close = match framing {
                Framing::None => close,
                Framing::Length(n) => {
                    self.skip(n)?;
                    close
                }
                Framing::Chunked => {
                    self.chunked()?;
                    close
                }
                Framing::UntilClose => {
                    loop {
                        self.buf.clear();
                        match self.fill() {
                            Ok(()) => {}
                            Err(Failure::EofMid | Failure::EofBefore) => break,
                            Err(e) => return Err(e),
                        }
                    }
                    true
                }
            };
            return Ok(Answer { status, close });
        }
    }
}

/// The head at the front of buf, if it has all arrived: status, framing, whether the server
/// closes after this answer, and the head's length.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, Framing, bool, usize)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failure::Protocol),
    };
    let status = response.code.ok_or(Failure::Protocol)?;
    // HTTP/1.0 closes unless it says otherwise; 1.1 stays open unless it says otherwise.
    let mut close = response.version != Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_coded = false;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| Failure::Protocol)?;
        if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coded = true;
            // Chunked must be the last coding for the length to be knowable.
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.trim().parse().map_err(|_| Failure::Protocol)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(Failure::Protocol);
            }
            length = Some(n);
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if transfer_coded {
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some((status, framing, close, head_len)))
}

/// The fixed parts of every request, built once.
struct Requests {
    get: Vec<u8>,
    post_head: Vec<u8>,
    body: Vec<u8>,
    split_pause: Duration,
}

impl Requests {
    fn new(args: &Args) -> Requests {
        let host = format!("Host: {}\r\nUser-Agent: hearth-burst\r\n", args.addr);
        let get = format!("GET {} HTTP/1.1\r\n{host}\r\n", args.path).into_bytes();
        let post_head = format!(
            "POST {} HTTP/1.1\r\n{host}Content-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            args.path, args.body
        )
        .into_bytes();
        Requests {
            get,
            post_head,
            body: vec![b'x'; args.body],
            split_pause: Duration::from_millis(args.split_pause_ms),
        }
    }
}

/// One client: its connection (None until opened, or after the server closed it) and how many
/// connections it has opened.
struct Client {
    id: usize,
    addr: SocketAddr,
    io_timeout: Duration,
    deadline: Instant,
    conn: Option<Conn>,
    opened: u64,
}

impl Client {
    fn connect(&mut self, counts: &Counts) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let stream = if left.is_zero() {
            Err(io::Error::from(io::ErrorKind::TimedOut))
        } else {
            TcpStream::connect_timeout(&self.addr, self.io_timeout.min(left))
        };
        // Without NODELAY a split POST's body would wait for the ACK of its head, which is not
        // what the clients this imitates do, and the head and body would not be two segments.
        let stream = stream.and_then(|s| s.set_nodelay(true).map(|()| s));
        match stream {
            Ok(stream) => {
                bump(&counts.connects);
                if self.opened > 0 {
                    bump(&counts.reconnects);
                }
                self.opened += 1;
                self.conn = Some(Conn {
                    stream,
                    buf: Vec::with_capacity(READ_CHUNK),
                    io_timeout: self.io_timeout,
                    deadline: self.deadline,
                    started: false,
                });
                true
            }
            Err(_) => false,
        }
    }

    /// Drops the connection if the server closed it while it sat idle, as keep-alive clients
    /// check before reusing one, so that an idle close costs a reconnect and not a failed
    /// request.
    fn check_idle(&mut self, counts: &Counts) {
        let Some(conn) = &self.conn else { return };
        let mut byte = [0u8; 1];
        let closed = match conn.stream.set_nonblocking(true) {
            Ok(()) => {
                let peeked = conn.stream.peek(&mut byte);
                let restored = conn.stream.set_nonblocking(false);
                // Bytes nobody asked for (a 408, say) mean the server is done with it too.
                !matches!(peeked, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
                    || restored.is_err()
            }
            Err(_) => true,
        };
        if closed {
            bump(&counts.idle_closes);
            self.conn = None;
        }
    }

    /// One request and its answer, counted in one of the answer classes or failures.
    fn exchange(&mut self, kind: Kind, requests: &Requests, counts: &Counts) {
        if self.conn.is_none() && !self.connect(counts) {
            bump(&counts.connect_fails);
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let sent = send(conn, kind, requests);
        // A server may answer (413, 502) and close before taking the whole body; the answer
        // still counts if it can be read.
        let answer = match (sent, conn.answer()) {
            (_, Ok(answer)) => Ok(answer),
            (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(e),
        };
        match answer {
            Ok(answer) => {
                let class = usize::from(answer.status / 100);
                bump(&counts.classes[if (1..=5).contains(&class) { class } else { 0 }]);
                if answer.close {
                    bump(&counts.server_closes);
                    self.conn = None;
                }
            }
            Err(failure) => {
                bump(failure.counter(counts));
                self.conn = None;
            }
        }
    }
}

fn send(conn: &mut Conn, kind: Kind, requests: &Requests) -> Result<(), Failure> {
    let left = conn.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failure::Timeout);
    }
    let io = |e: io::Error| Failure::from_io(&e);
    conn.stream
        .set_write_timeout(Some(conn.io_timeout.min(left)))
        .map_err(io)?;
    match kind {
        Kind::Get => conn.stream.write_all(&requests.get).map_err(io),
        Kind::Post => {
            // One write, as a client that assembles the whole request first makes it.
            let mut whole = Vec::with_capacity(requests.post_head.len() + requests.body.len());
            whole.extend_from_slice(&requests.post_head);
            whole.extend_from_slice(&requests.body);
            conn.stream.write_all(&whole).map_err(io)
        }
        Kind::PostSplit => {
            conn.stream.write_all(&requests.post_head).map_err(io)?;
            thread::sleep(requests.split_pause);
            conn.stream.write_all(&requests.body).map_err(io)
        }
    }
}

fn check(args: &Args) -> Result<(), String> {
    if !args.addr.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address; this generator only loads the local machine",
            args.addr
        ));
    }
    if !(1..=4096).contains(&args.clients) {
        return Err("--clients must be 1 to 4096".into());
    }
    if !(1..=100_000).contains(&args.requests) || !(1..=100_000).contains(&args.bursts) {
        return Err("--requests and --bursts must be 1 to 100000".into());
    }
    if args.body > 64 << 20 {
        return Err("--body must be at most 64 MiB".into());
    }
    if !args.path.starts_with('/') || args.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("--path must start with / and hold no spaces or control characters".into());
    }
    if args.split_pause_ms > 10_000 {
        return Err("--split-pause-ms must be at most 10000".into());
    }
    if !(0.0..=60.0).contains(&args.spread) {
        return Err("--spread must be 0 to 60 seconds".into());
    }
    if !(args.io_timeout > 0.0 && args.io_timeout <= 600.0) {
        return Err("--io-timeout must be above 0 and at most 600 seconds".into());
    }
    if let Some(d) = args.deadline {
        if !(d > 0.0 && d <= 86_400.0) {
            return Err("--deadline must be above 0 and at most 86400 seconds".into());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        eprintln!("burst: {e}");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    // Enough for every gap at its longest and every request to time out, so the default never
    // cuts a run that is merely slow.
    let worst = 10.0
        + args.bursts as f64
            * (args.gap.max + args.spread + args.requests as f64 * 2.0 * args.io_timeout);
    let deadline = started + Duration::from_secs_f64(args.deadline.unwrap_or(worst));
    let io_timeout = Duration::from_secs_f64(args.io_timeout);
    let counts = Arc::new(Counts::default());
    let requests = Arc::new(Requests::new(&args));

    // Each client takes burst numbers from its own channel and says on `done` when it has
    // finished one; dropping the senders ends the clients.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut orders = Vec::with_capacity(args.clients);
    for id in 0..args.clients {
        let (tx, rx) = mpsc::channel::<usize>();
        orders.push(tx);
        let (counts, requests, done) =
            (Arc::clone(&counts), Arc::clone(&requests), done_tx.clone());
        let mut client = Client {
            id,
            addr: args.addr,
            io_timeout,
            deadline,
            conn: None,
            opened: 0,
        };
        let (mix, per_burst) = (args.mix, args.requests);
        let offset = Duration::from_secs_f64(args.spread * id as f64 / args.clients as f64);
        let spawned = thread::Builder::new()
            .name(format!("client-{id}"))
            .spawn(move || {
                // Connected before the first burst, so the bursts measure requests, not the
                // handshakes to the proxy. A failure here fails no request; the first request
                // tries again, and that failure counts.
                client.connect(&counts);
                if done.send(()).is_err() {
                    return;
                }
                while let Ok(burst) = rx.recv() {
                    if !offset.is_zero() {
                        let left = client.deadline.saturating_duration_since(Instant::now());
                        thread::sleep(offset.min(left));
                    }
                    client.check_idle(&counts);
                    for i in 0..per_burst {
                        if Instant::now() >= client.deadline {
                            break;
                        }
                        let kind = mix.kind(client.id, burst * per_burst + i);
                        client.exchange(kind, &requests, &counts);
                        // Counted once it ended, so requests always equals answers plus
                        // errors, even in a run the deadline cut.
                        bump(&counts.requests);
                    }
                    if done.send(()).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("burst: cannot start client thread {id}: {e}");
            return ExitCode::from(2);
        }
    }
    drop(done_tx);

    // Waits for `outstanding` clients to report, until `until`; returns how many did not.
    let wait_for = |mut outstanding: usize, until: Instant| {
        while outstanding > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
            outstanding -= 1;
        }
        outstanding
    };

    let mut rng = Rng(args.seed);
    let mut outstanding = wait_for(args.clients, deadline);
    let mut before = counts.snapshot();
    let mut bursts_run = 0;
    let mut gaps = String::new();
    for burst in 0..args.bursts {
        if outstanding > 0 {
            break;
        }
        if burst > 0 {
            let gap = rng.gap(args.gap);
            let _ = write!(gaps, "{}{gap:.2}", if gaps.is_empty() { "" } else { "," });
            let left = deadline.saturating_duration_since(Instant::now());
            thread::sleep(Duration::from_secs_f64(gap).min(left));
        }
        let t0 = Instant::now();
        for tx in &orders {
            // A client whose thread is gone cannot take orders; its absence shows in the counts.
            let _ = tx.send(burst);
        }
        outstanding = wait_for(args.clients, deadline);
        bursts_run += 1;
        if args.verbose {
            let now = counts.snapshot();
            eprintln!(
                "burst {}: {} requests, {} ok, {} other answers, {} errors in {:.3} s",
                burst + 1,
                now.requests - before.requests,
                now.ok - before.ok,
                (now.answers - before.answers) - (now.ok - before.ok),
                now.errors - before.errors,
                t0.elapsed().as_secs_f64()
            );
            before = now;
        }
    }
    drop(orders);
    let complete = outstanding == 0;
    if !complete {
        // Every read and write is bounded by the deadline too, so the exchanges still in flight
        // end within moments, as timeouts; wait for them so they are counted rather than lost.
        wait_for(outstanding, Instant::now() + Duration::from_secs(1));
    }

    let s = counts.snapshot();
    let get = |c: &AtomicU64| c.load(Relaxed);
    let class = |i: usize| get(&counts.classes[i]);
    println!(
        "requests={} ok={} non2xx={} s1xx={} s3xx={} s4xx={} s5xx={} sother={} errors={} \
         resets={} eof_before={} eof_mid={} timeouts={} protocol={} other={} \
         connect_fails={} connects={} reconnects={} server_closes={} idle_closes={} \
         bursts={} complete={} gaps={} secs={:.3}",
        s.requests,
        s.ok,
        s.answers - s.ok,
        class(1),
        class(3),
        class(4),
        class(5),
        class(0),
        s.errors,
        get(&counts.resets),
        get(&counts.eof_before),
        get(&counts.eof_mid),
        get(&counts.timeouts),
        get(&counts.protocol),
        get(&counts.other),
        get(&counts.connect_fails),
        get(&counts.connects),
        get(&counts.reconnects),
        get(&counts.server_closes),
        get(&counts.idle_closes),
        bursts_run,
        u8::from(complete),
        if gaps.is_empty() { "-" } else { &gaps },
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
