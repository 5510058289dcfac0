//! Binary upgrade (issue 22, item 1), driven through the real binary: SIGUSR2 starts a new
//! hearth that takes the listening sockets and the idle plain upstream connections of the
//! running one, which then drains and exits. Under keep-alive load nothing is refused, nothing
//! fails, and the origin accepts no new connection; a new hearth that cannot start leaves the
//! old one serving and saying why; TLS upstream connections close instead of moving. Each test
//! has its own `upgrade_socket` in a directory of its own, and stops the new hearth it caused.

mod common;
#[path = "common/tls.rs"]
mod tlskit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use tlskit::{Pki, TlsUpstream};

/// Time for a whole hand-over: the new hearth starts, takes over, the old one drains and exits.
const UPGRADE_WITHIN: Duration = Duration::from_secs(20);
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// A directory of this test's own, removed on drop, for the upgrade socket.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("hearth-upgrade-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creating the test's directory");
        Dir(d)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("upgrade.sock")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `toml` (a `Conf`'s, whose top-level keys come first) with `upgrade_socket = path`.
fn with_socket(toml: &str, path: &Path) -> String {
    format!("upgrade_socket = \"{}\"\n{toml}", path.display())
}

/// Sends `sig` to `pid`.
#[allow(unsafe_code)] // kill(2) through libc, the way tests/common signals hearth.
fn kill(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Whether `pid` is a live hearth (not a zombie, not a process that reused the number).
fn is_hearth(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((name, rest)) = stat.split_once(") ") else {
        return false;
    };
    name.contains("hearth") && !rest.starts_with('Z')
}

/// The new hearth an upgrade started: not our child (the old hearth started it), so it is
/// stopped here by pid, SIGTERM then SIGKILL.
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        if !is_hearth(self.0) {
            return;
        }
        kill(self.0, libc::SIGTERM);
        if !wait_until(STOP_GRACE, || !is_hearth(self.0)) {
            kill(self.0, libc::SIGKILL);
        }
    }
}

/// The pid of the new hearth SIGUSR2 started, from the old one's log line.
fn successor(old: &Hearth) -> Successor {
    assert!(
        old.wait_log(&["SIGUSR2: started", "--upgrade"], START_DEADLINE),
        "SIGUSR2 started no new hearth:\n{}",
        old.logs_text()
    );
    let line = old
        .logs()
        .into_iter()
        .find(|l| l.contains("SIGUSR2: started"))
        .expect("the line was just seen");
    let pid = line
        .rsplit_once("(pid ")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    Successor(pid)
}

/// What the load saw.
#[derive(Default, Debug)]
struct Seen {
    ok: usize,
    /// Answers other than 2xx, by status.
    bad: Vec<u16>,
    /// Connects, writes or reads that failed.
    errors: Vec<String>,
    /// Connections the clients opened (the first ones included).
    connects: usize,
}

/// Keep-alive clients, each on one connection at a time, sending `GET /load/{thread}` in a
/// loop; a client opens a new connection when hearth answers `Connection: close` (as an old
/// hearth does once the new one has taken over), and counts whatever else goes wrong.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<JoinHandle<()>>,
}

/// The most requests one client sends, and how long it runs at most.
const MAX_REQUESTS: usize = 200_000;
const LOAD_BOUND: Duration = Duration::from_secs(60);

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let threads = (0..clients)
            .map(|t| {
                let (stop, done, seen) = (stop.clone(), done.clone(), seen.clone());
                thread::spawn(move || {
                    let deadline = Instant::now() + LOAD_BOUND;
                    let path = format!("/load/{t}");
                    let mut conn: Option<Client> = None;
                    for _ in 0..MAX_REQUESTS {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        let mut c = match conn.take() {
                            Some(c) => c,
                            None => match Client::try_connect(addr) {
                                Ok(c) => {
                                    seen.lock().unwrap().connects += 1;
                                    c
                                }
                                Err(e) => {
                                    seen.lock().unwrap().errors.push(format!("connect: {e}"));
                                    continue;
                                }
                            },
                        };
                        match c.exchange(&get(&path)) {
                            Ok(r) => {
                                let mut s = seen.lock().unwrap();
                                if (200..300).contains(&r.status) && r.text() == path {
                                    s.ok += 1;
                                } else {
                                    s.bad.push(r.status);
                                }
                                drop(s);
                                done.fetch_add(1, Ordering::Relaxed);
                                if !r.has_token("connection", "close") {
                                    conn = Some(c);
                                }
                            }
                            Err(e) => {
                                seen.lock().unwrap().errors.push(format!("request: {e}"));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            seen,
            threads,
        }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests than now have been answered.
    fn advance(&self, n: usize, within: Duration) -> bool {
        let from = self.done();
        wait_until(within, || self.done() >= from + n)
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a load thread panicked");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Starts hearth on `toml` with an upgrade socket in `dir`, and waits until it offers it.
fn start_offering(toml: &str, dir: &Dir) -> Hearth {
    let h = Hearth::start(&with_socket(toml, &dir.socket()));
    assert!(
        h.wait_log(&["upgrade socket on"], START_DEADLINE),
        "no upgrade socket:\n{}",
        h.logs_text()
    );
    h
}

#[test]
fn sigusr2_under_keep_alive_load_refuses_nothing_and_opens_no_upstream_connection() {
    let origin = MockUpstream::echo_target();
    let dir = Dir::new("load");
    // No connection retires by its request count while the test runs: each one the origin
    // accepts after the warm-up is the upgrade's doing.
    let toml = conf(&[origin.addr()])
        .workers(2)
        .upstream("keepalive_pool = { requests = 1000000 }")
        .client("max_requests = 1000000")
        .toml();
    let mut old = start_offering(&toml, &dir);
    let addr = old.addr();
    let load = Load::start(addr, 4);
    // Warm: every client has had its answers, so each core's pool holds what its clients use.
    assert!(
        load.advance(2_000, Duration::from_secs(20)),
        "the load did not get going"
    );
    let before = origin.connections();
    assert!(before >= 1);

    old.upgrade();
    let new = successor(&old);
    assert!(
        old.wait_exit(UPGRADE_WITHIN).is_some(),
        "the old hearth did not exit after the upgrade:\n{}",
        old.logs_text()
    );
    assert!(
        is_hearth(new.0),
        "the new hearth is gone:\n{}",
        old.logs_text()
    );
    // The old one is gone: everything from now on is the new one's.
    assert!(
        load.advance(2_000, Duration::from_secs(20)),
        "the new hearth does not serve the load:\n{}",
        old.logs_text()
    );
    let seen = load.finish();
    let accepted = origin.connections();
    // And a fresh client gets the new hearth.
    assert_eq!(Client::connect(addr).get("/after").status, 200);
    // Stopped, the new hearth logs what each core did, for the report below.
    kill(new.0, libc::SIGTERM);
    wait_until(STOP_GRACE, || {
        old.logs().iter().filter(|l| l.ends_with("stopped")).count() >= 2
    });
    let logs = old.logs_text();
    assert!(
        seen.errors.is_empty() && seen.bad.is_empty(),
        "{} error(s) {:?}, non-2xx {:?}, over {} answers:\n{logs}",
        seen.errors.len(),
        seen.errors.iter().take(5).collect::<Vec<_>>(),
        seen.bad,
        seen.ok
    );
    assert!(
        seen.connects > 4,
        "no client moved to the new hearth ({} connects):\n{logs}",
        seen.connects
    );
    assert_eq!(
        accepted, before,
        "the origin accepted connections during the upgrade:\n{logs}"
    );
    assert!(
        logs.contains("upgrade: took over") && !logs.contains("took over 0 idle"),
        "{logs}"
    );
}

#[test]
fn an_invalid_config_fails_the_upgrade_and_the_running_hearth_serves_on() {
    let origin = MockUpstream::echo_target();
    let dir = Dir::new("bad");
    let toml = conf(&[origin.addr()]).toml();
    let mut old = start_offering(&toml, &dir);
    let bad_toml = with_socket(
        &toml.replacen("workers = 1", "workers = \"one\"", 1),
        &dir.socket(),
    );

    // By hand: the file's error, exit 1, and nothing taken.
    let bad = ConfigFile::new(&bad_toml);
    let exit = run_hearth(&["--upgrade", "-c", &bad.path_str()], EXIT_WITHIN);
    assert_eq!(exit.code(), Some(1), "{exit:?}");
    let shown = bad.path().display().to_string();
    assert!(
        exit.stderr.contains(&shown) && exit.stderr.contains("workers"),
        "the error names neither the file nor the key:\n{}",
        exit.stderr
    );
    assert!(old.exited().is_none(), "{}", old.logs_text());
    assert_eq!(old.client().get("/by-hand").status, 200);

    // SIGUSR2 with the file gone bad since the start: the new hearth exits, the old says so.
    std::fs::write(old.config_path(), &bad_toml).expect("rewriting the config");
    old.upgrade();
    let _new = successor(&old);
    assert!(
        old.wait_log(&["upgrade failed", "still serving"], UPGRADE_WITHIN),
        "the old hearth did not say the upgrade failed:\n{}",
        old.logs_text()
    );
    assert!(old.exited().is_none(), "{}", old.logs_text());
    let mut c = old.client();
    for i in 0..4 {
        assert_eq!(c.get(&format!("/after/{i}")).status, 200);
    }
    assert!(old.terminate().is_some_and(|s| s.success()));
}

#[test]
fn upgrade_with_nothing_running_says_so_and_fails() {
    let origin = MockUpstream::echo_target();
    let dir = Dir::new("none");
    let file = ConfigFile::new(&with_socket(&conf(&[origin.addr()]).toml(), &dir.socket()));
    let exit = run_hearth(&["--upgrade", "-c", &file.path_str()], EXIT_WITHIN);
    assert_eq!(exit.code(), Some(1), "{exit:?}");
    let shown = dir.socket().display().to_string();
    assert!(
        exit.stderr.contains("no running hearth") && exit.stderr.contains(&shown),
        "{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains("listening on"), "{}", exit.stderr);
}

#[test]
fn tls_upstream_connections_close_instead_of_moving() {
    let pki = Pki::new("upgrade");
    let (cert, key) = pki.issue("up", &["127.0.0.1", HOST]);
    let up = TlsUpstream::start(&cert, &key, None);
    let plain = MockUpstream::echo_target();
    let dir = Dir::new("tls");
    let toml = format!(
        "{}\n[upstreams.secure]\nnodes = {{ \"{}\" = 1 }}\nscheme = \"https\"\n\
         tls = {{ ca = \"{}\" }}\n\n[[routes]]\nuris = [\"/tls/*\"]\nupstream = \"secure\"\n",
        conf(&[plain.addr()])
            .routes("[[routes]]\nuris = [\"/plain/*\"]\nupstream = \"backend\"\n")
            .toml(),
        up.addr(),
        pki.ca_path().display()
    );
    let mut old = start_offering(&toml, &dir);
    let mut c = old.client();
    assert_eq!(c.get("/tls/a").status, 200);
    assert_eq!(c.get("/plain/a").status, 200);
    drop(c);
    let (tls_before, plain_before) = (up.conns().len(), plain.connections());

    old.upgrade();
    let new = successor(&old);
    assert!(
        old.wait_exit(UPGRADE_WITHIN).is_some(),
        "the old hearth did not exit:\n{}",
        old.logs_text()
    );
    let logs = old.logs_text();
    assert!(
        logs.contains("handed 1 idle upstream connection(s)")
            && logs.contains("closed 1 TLS one(s)"),
        "want the plain connection passed and the TLS one closed:\n{logs}"
    );
    assert!(is_hearth(new.0));
    let mut c = Client::connect(old.addr());
    assert_eq!(c.get("/tls/b").status, 200);
    assert_eq!(c.get("/plain/b").status, 200);
    // The https node needed a new connection (and handshake); the plain one did not.
    assert_eq!(up.conns().len(), tls_before + 1, "{}", old.logs_text());
    assert_eq!(plain.connections(), plain_before, "{}", old.logs_text());
}
