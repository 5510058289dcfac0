//! Harness for the integration tests: runs the real `hearth` binary against mock upstreams.
//!
//! `Hearth` owns one hearth process started on a temporary config file; it learns the bound
//! address from the `listening on ADDR` log line, keeps every log line for failure reports, and
//! on drop stops the process (SIGTERM, then SIGKILL after a grace period) and removes the file.
//! `MockUpstream` (mock.rs) is the scriptable origin server, `Client` (client.rs) the raw client,
//! and `Conf` writes the TOML the tests need. Everything binds 127.0.0.1 port 0, every wait has a
//! deadline, and everything started is stopped by a `Drop`, also when a test panics.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod alloc;
pub mod client;
pub mod etcd;
pub mod fault;
pub mod held;
pub mod load;
pub mod mock;
pub mod wire;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use client::{chunked_body, get, request, Client, Response, HOST};
pub use mock::{Action, ConnEnd, ConnInfo, MockUpstream, Recorded, Reply};

/// How long hearth gets to bind and say so.
pub const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long hearth gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(5);

/// Polls `cond` every few milliseconds until it holds or `within` passes; returns the last
/// answer. The only way the tests wait for something that is not a timeout under test.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_EVERY);
    }
}

/// A config written to a uniquely named file in the temp dir, removed on drop.
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(toml: &str) -> ConfigFile {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "hearth-test-{}-{}-{nanos}.toml",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, toml)
            .unwrap_or_else(|e| panic!("writing config {}: {e}", path.display()));
        ConfigFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The binary under test: Cargo's build of hearth, unless `HEARTH_TEST_BIN` names another
/// (a release build, or a stand-in when checking the suite itself).
pub fn hearth_bin() -> String {
    std::env::var("HEARTH_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hearth").to_string())
}

fn sigterm(child: &Child) {
    signal(child, libc::SIGTERM);
}

/// Sends `sig` to a child that has not been reaped. The process stays a zombie until waited
/// for, so its pid cannot have been reused by another process.
#[allow(unsafe_code)] // the only way to send a signal with the allowed crates; see SAFETY.
fn signal(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is our own
    // unreaped child, as argued above.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Collects lines from a pipe into `logs` until the pipe closes.
fn collect_lines(
    pipe: impl Read + Send + 'static,
    tag: &'static str,
    logs: Arc<Mutex<Vec<String>>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    let text = format!("{tag}{text}");
                    logs.lock().unwrap_or_else(|e| e.into_inner()).push(text);
                }
            }
        }
    });
}

/// Pulls the address out of a `... listening on 127.0.0.1:PORT ...` log line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token: String = rest
        .trim_start_matches(['"', '\'', '`'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    token.trim_end_matches(['.', ':']).parse().ok()
}

/// One running hearth process.
pub struct Hearth {
    child: Child,
    addrs: Vec<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
    _config: ConfigFile,
}

impl Hearth {
    /// Starts `hearth -c FILE` on `toml` and waits until it reports its listening address.
    /// Panics, with the logs, if it exits or stays silent past the deadline.
    pub fn start(toml: &str) -> Hearth {
        let config = ConfigFile::new(toml);
        let mut command = Command::new(hearth_bin());
        command.arg("-c").arg(config.path()).env(
            "RUST_LOG",
            std::env::var("HEARTH_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        Hearth::launch(command, config, toml)
    }

    /// Starts any command as if it were hearth (the harness tests use a shell script) and
    /// waits for its `listening on` line. `config` lives as long as the process.
    pub fn launch(mut command: Command, config: ConfigFile, toml: &str) -> Hearth {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect_lines(out, "[stdout] ", Arc::clone(&logs));
        }
        if let Some(err) = child.stderr.take() {
            collect_lines(err, "", Arc::clone(&logs));
        }
        let mut hearth = Hearth {
            child,
            addrs: Vec::new(),
            logs,
            status: None,
            _config: config,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let found = hearth.listening_addrs();
            if !found.is_empty() {
                hearth.addrs = found;
                return hearth;
            }
            if let Ok(Some(status)) = hearth.child.try_wait() {
                hearth.status = Some(status);
                // Let the reader threads catch the last lines before reporting.
                thread::sleep(Duration::from_millis(50));
                // Drop prints the logs, since a panic is under way.
                panic!("hearth exited ({status}) before logging `listening on`; config:\n{toml}");
            }
            if Instant::now() >= deadline {
                panic!(
                    "hearth did not log `listening on` within {START_DEADLINE:?}; config:\n{toml}"
                );
            }
            thread::sleep(POLL_EVERY);
        }
    }

    fn listening_addrs(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for line in self.logs() {
            if let Some(a) = parse_listening(&line) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every distinct listening address logged so far.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.listening_addrs()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything hearth wrote so far, one entry per line (stdout lines are tagged).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn logs_text(&self) -> String {
        self.logs().join("\n")
    }

    /// Waits for a log line containing every one of `needles`.
    pub fn wait_log(&self, needles: &[&str], within: Duration) -> bool {
        wait_until(within, || {
            self.logs()
                .iter()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        })
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        if self.status.is_none() {
            sigterm(&self.child);
        }
    }

    /// The admin listener's address, from its `admin listening on` log line.
    pub fn admin_addr(&self) -> SocketAddr {
        let found = wait_until(Duration::from_secs(5), || {
            self.logs()
                .iter()
                .any(|l| l.contains("admin listening on "))
        });
        assert!(found, "hearth never logged its admin address");
        self.logs()
            .iter()
            .find(|l| l.contains("admin listening on "))
            .and_then(|l| parse_listening(l))
            .expect("the admin line names an address")
    }

    /// `GET /metrics` from the admin listener.
    pub fn metrics(&self) -> String {
        self.admin_get("/metrics")
    }

    /// The body of `GET path` from the admin listener.
    pub fn admin_get(&self, path: &str) -> String {
        Client::connect(self.admin_addr()).get(path).text()
    }

    /// Sends SIGUSR1, asking hearth to reopen its access log (after log rotation).
    pub fn reopen_logs(&self) {
        if self.status.is_none() {
            signal(&self.child, libc::SIGUSR1);
        }
    }

    /// Sends SIGUSR2, asking hearth to start a new binary that takes over from it.
    pub fn upgrade(&self) {
        if self.status.is_none() {
            signal(&self.child, libc::SIGUSR2);
        }
    }

    /// The configuration file hearth was started with (it lives as long as `self`).
    pub fn config_path(&self) -> &Path {
        self._config.path()
    }

    /// Stops the whole process (SIGSTOP) until the guard is dropped (SIGCONT). What arrives
    /// meanwhile waits in the kernel, and hearth's next pass collects all of it at once, in the
    /// order it arrived: a way to put two events into one pass in a chosen order.
    pub fn freeze(&self) -> Frozen<'_> {
        assert!(self.status.is_none(), "hearth has exited");
        signal(&self.child, libc::SIGSTOP);
        // kill(2) returns before a thread running on another CPU has stopped.
        let pid = self.child.id();
        let stopped = wait_until(Duration::from_secs(5), || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                    // The state follows the command name's closing parenthesis.
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                })
            })
        });
        let frozen = Frozen(self);
        assert!(stopped, "hearth's threads did not all stop");
        frozen
    }

    /// Rewrites the configuration file and sends SIGHUP, asking hearth to reload it.
    pub fn reload_with(&self, toml: &str) {
        std::fs::write(&self._config.path, toml).expect("rewriting the config file");
        if self.status.is_none() {
            signal(&self.child, libc::SIGHUP);
        }
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// SIGTERM, then wait up to `STOP_GRACE` for the exit status.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.sigterm();
        self.wait_exit(STOP_GRACE)
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.wait_exit(Duration::ZERO)
    }
}

/// A stopped hearth, continued when this is dropped (panics included).
pub struct Frozen<'a>(&'a Hearth);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        signal(&self.0.child, libc::SIGCONT);
    }
}

impl Drop for Hearth {
    fn drop(&mut self) {
        if self.status.is_none() && self.terminate().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- hearth logs (pid {}) ----\n{}\n---- end of hearth logs ----",
                self.child.id(),
                self.logs_text()
            );
        }
    }
}

/// Result of running hearth to completion (config checks, `--version`).
#[derive(Debug)]
pub struct Exit {
    /// `None` if it had to be killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Exit {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs `hearth ARGS` and waits up to `within` for it to exit; kills it past that.
pub fn run_hearth(args: &[&str], within: Duration) -> Exit {
    let mut child = Command::new(hearth_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", hearth_bin()));
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    if let Some(p) = child.stdout.take() {
        collect_lines(p, "", Arc::clone(&out));
    }
    if let Some(p) = child.stderr.take() {
        collect_lines(p, "", Arc::clone(&err));
    }
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL_EVERY);
    };
    // The pipes close with the process; give the reader threads a moment to drain them.
    thread::sleep(Duration::from_millis(50));
    let join = |v: &Arc<Mutex<Vec<String>>>| v.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
    Exit {
        status,
        stdout: join(&out),
        stderr: join(&err),
    }
}

/// An address on which nothing listens: bound, then released. Another process could grab it in
/// between, which on loopback within milliseconds is unlikely enough for a test.
pub fn dead_addr() -> SocketAddr {
    dead_addrs::<1>()[0]
}

/// `N` distinct dead addresses. Calling `dead_addr` twice can return the same one: the kernel may
/// hand out a port again once its listener is dropped, so all `N` are held until each is bound.
pub fn dead_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind for a dead port"))
        .collect();
    std::array::from_fn(|i| {
        held[i]
            .local_addr()
            .expect("local_addr of a bound listener")
    })
}

/// One series' value in `/metrics` text, matched by its full name with labels as Prometheus
/// prints them; panics, showing the text, when the series is missing.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("series {series} not in /metrics:\n{text}"))
}

/// Builder for the config TOML; by default one worker, one route `/*` to upstream `backend`.
#[derive(Clone)]
pub struct Conf {
    workers: usize,
    nodes: Vec<(SocketAddr, u32)>,
    client: Vec<String>,
    upstream: Vec<String>,
    routes: Option<String>,
    admin: bool,
}

/// A config proxying everything to `nodes`, each with weight 1.
pub fn conf(nodes: &[SocketAddr]) -> Conf {
    Conf {
        workers: 1,
        nodes: nodes.iter().map(|a| (*a, 1)).collect(),
        client: Vec::new(),
        upstream: Vec::new(),
        routes: None,
        admin: false,
    }
}

impl Conf {
    /// Adds `[admin]` on 127.0.0.1:0 (its address is logged as `admin listening on ...`).
    pub fn admin(mut self) -> Conf {
        self.admin = true;
        self
    }

    pub fn workers(mut self, n: usize) -> Conf {
        self.workers = n;
        self
    }

    pub fn weighted(mut self, nodes: &[(SocketAddr, u32)]) -> Conf {
        self.nodes = nodes.to_vec();
        self
    }

    /// A line for the `[client]` table, e.g. `max_requests = 2`.
    pub fn client(mut self, line: &str) -> Conf {
        self.client.push(line.to_string());
        self
    }

    /// A line for the `[upstreams.backend]` table, e.g. `keepalive_pool = { size = 0 }`.
    pub fn upstream(mut self, line: &str) -> Conf {
        self.upstream.push(line.to_string());
        self
    }

    /// Replaces the default route with these `[[routes]]` tables (verbatim TOML).
    pub fn routes(mut self, toml: &str) -> Conf {
        self.routes = Some(toml.to_string());
        self
    }

    pub fn toml(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(a, w)| format!("\"{a}\" = {w}"))
            .collect();
        let mut t = format!(
            "workers = {}\n\n[[listen]]\naddr = \"127.0.0.1:0\"\n\n[client]\n",
            self.workers
        );
        for l in &self.client {
            t.push_str(l);
            t.push('\n');
        }
        t.push_str(&format!(
            "\n[upstreams.backend]\nnodes = {{ {} }}\n",
            nodes.join(", ")
        ));
        for l in &self.upstream {
            t.push_str(l);
            t.push('\n');
        }
        t.push('\n');
        match &self.routes {
            Some(r) => t.push_str(r),
            None => t.push_str("[[routes]]\nuris = [\"/*\"]\nupstream = \"backend\"\n"),
        }
        if self.admin {
            t.push_str("\n[admin]\naddr = \"127.0.0.1:0\"\n");
        }
        t
    }

    pub fn start(&self) -> Hearth {
        Hearth::start(&self.toml())
    }
}

/// Deterministic pseudo-random bytes (splitmix64), so a failing payload can be regenerated.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, the "simple checksum" upstreams answer with.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// 1-based number of the first line of `text` containing `needle` (for `FILE:LINE:` checks).
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("test bug: {needle:?} is not in the config"))
}
