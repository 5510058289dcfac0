//! hearth started in-process through `hearth::app::start`, the function the binary's `run` calls
//! after it has installed its signal handlers: one request through a one-worker hearth to a
//! small std::net upstream, then a clean stop.
//!
//! Unlike the other integration tests this one starts no process, so it also checks what only an
//! in-process start can: that starting hearth installs no signal handler (the test process would
//! otherwise take SIGTERM or SIGINT from its runner as hearth's), and that after `stop` the
//! listener is closed. Everything binds 127.0.0.1 port 0 and every wait has a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hearth::config::Config;

/// Longest wait for any one step (a read, a stop) before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(10);

/// The signals `hearth::app::run` handles: SIGHUP, SIGINT, SIGUSR1, SIGTERM on Linux.
const RUN_SIGNALS: [u32; 4] = [1, 2, 10, 15];

/// The signals this process catches, from `SigCgt` in /proc/self/status (a hex bit mask, bit
/// N-1 for signal N); None where there is no such file.
fn caught_signals() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
    u64::from_str_radix(mask.trim(), 16).ok()
}

/// A config file in the temp dir, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!(
            "hearth-in-process-{}-{:?}.toml",
            std::process::id(),
            thread::current().id()
        ));
        std::fs::write(&path, text).expect("write the config file");
        ConfigFile(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads from `s` until `done` holds for what arrived, EOF, or the deadline.
fn read_until(s: &mut impl Read, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

fn has_head(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n")
}

/// An origin that answers one request with `hello` and returns the head it received.
fn upstream() -> (SocketAddr, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let addr = listener.local_addr().expect("the upstream's address");
    let thread = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("hearth connects to the upstream");
        conn.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        let head = read_until(&mut conn, has_head);
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .expect("answer");
        String::from_utf8_lossy(&head).into_owned()
    });
    (addr, thread)
}

#[test]
fn starts_in_process_proxies_a_request_and_stops() {
    let before = caught_signals();
    let (up, origin) = upstream();
    let file = ConfigFile::new(&format!(
        r#"
workers = 1
shutdown_grace = "1s"

[[listen]]
addr = "127.0.0.1:0"

[upstreams.origin]
nodes = {{ "{up}" = 1 }}

[[routes]]
uris = ["/*"]
upstream = "origin"
"#
    ));
    let (cfg, warnings) = Config::load(&file.0).expect("the config loads");
    assert!(warnings.is_empty(), "{warnings:?}");

    let running = hearth::app::start(&file.0, cfg).expect("hearth starts");
    let addr = running.addrs()[0];
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    if let (Some(before), Some(after)) = (before, caught_signals()) {
        for sig in RUN_SIGNALS {
            assert_eq!(
                after & (1 << (sig - 1)),
                before & (1 << (sig - 1)),
                "starting hearth changed the handling of signal {sig}"
            );
        }
    }

    let mut client = TcpStream::connect(addr).expect("connect to hearth");
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set a read timeout");
    client
        .write_all(b"GET /hello HTTP/1.1\r\nHost: in-process.test\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let answer = read_until(&mut client, |b| has_head(b) && b.ends_with(b"hello"));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");

    let head = origin.join().expect("the upstream thread");
    assert!(head.starts_with("GET /hello HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nhost: in-process.test\r\n"),
        "{head}"
    );
    drop(client);

    // Stop on another thread, so a stop that hangs fails the test at the deadline.
    let (done, stopped) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(running.stop().map_err(|e| e.to_string()));
    });
    match stopped.recv_timeout(DEADLINE) {
        Ok(result) => result.expect("hearth stops cleanly"),
        Err(_) => panic!("hearth did not stop within {DEADLINE:?}"),
    }
    let refused = TcpStream::connect_timeout(&addr, DEADLINE);
    assert!(
        refused.is_err(),
        "{addr} still accepts connections after stop"
    );
}
