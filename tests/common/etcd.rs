//! A real etcd server for the config-center tests, and a relay that can cut the way to it.
//!
//! `Etcd::start` runs Debian's `etcd` on two loopback ports picked at run time, with its data in a
//! fresh temp dir (`Etcd::start_tls` serves its clients over TLS, with certificates the test made,
//! and optionally `--client-cert-auth`); `stop` and `start_again` reuse the same ports and data (a restart, as an
//! operator would do one), and drop kills the process and removes the dir. When the `etcd`
//! binary is missing the tests skip with a loud message, unless `HEARTH_REQUIRE_ETCD` is set (CI
//! sets it, after `.ci/etcd.sh`), in which case they fail.
//!
//! `Relay` forwards TCP to etcd and can refuse and break every connection on demand, so a test
//! can keep a watcher away from etcd while it changes things there, without racing the
//! watcher's backoff.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hearth::etcd::{Client, Endpoint};
use rustls::ClientConfig;

/// Set to make a missing etcd binary a failure instead of a skip.
pub const REQUIRE_ENV: &str = "HEARTH_REQUIRE_ETCD";
/// How long etcd gets to answer after it is started (it takes well under a second here).
const READY_DEADLINE: Duration = Duration::from_secs(20);

pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Extra command-line flags, kept across restarts.
    flags: Vec<String>,
    /// Some: clients speak TLS to it.
    tls: Option<TlsFiles>,
}

/// The PEM files of an etcd that serves its clients over TLS.
#[derive(Clone)]
pub struct TlsFiles {
    /// The CA that signed `cert`, and, with `client_cert_auth`, the clients' certificates.
    pub ca: PathBuf,
    /// etcd's own certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `--client-cert-auth`: etcd refuses a client without a certificate `ca` signed.
    pub client_cert_auth: bool,
    /// The certificate and key the test's own clients (and etcdctl) present.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// A client configuration trusting `ca`, presenting `client` if there is one.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let ca = hearth::tls::load_certs(&self.ca).expect("the CA");
        let client = self.client.as_ref().map(|(c, k)| {
            (
                hearth::tls::load_certs(c).expect("the client certificate"),
                hearth::tls::load_key(k).expect("the client key"),
            )
        });
        hearth::tls::etcd_client_config(Some(ca), client, true).expect("a client configuration")
    }
}

/// Whether an `etcd` binary can be run.
fn installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Etcd {
    /// A fresh etcd, answering; `None` (after a loud message) only when etcd is not installed
    /// and `HEARTH_REQUIRE_ETCD` is unset.
    pub fn start() -> Option<Etcd> {
        Etcd::start_with(&[])
    }

    /// Like [`Etcd::start`], with extra command-line flags.
    pub fn start_with(flags: &[&str]) -> Option<Etcd> {
        Etcd::start_as(flags, None)
    }

    /// Like [`Etcd::start`], serving clients over TLS with `tls`.
    pub fn start_tls(tls: TlsFiles) -> Option<Etcd> {
        Etcd::start_as(&[], Some(tls))
    }

    fn start_as(flags: &[&str], tls: Option<TlsFiles>) -> Option<Etcd> {
        if !installed() {
            assert!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{REQUIRE_ENV} is set but no etcd binary is on PATH; run .ci/etcd.sh"
            );
            // Straight to stderr, not through eprintln!, which the test harness captures and
            // hides for a test that passes: a skip must be seen.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPING the etcd tests: no etcd binary on PATH, so the config center \
                     was not tested. Install it with `bash .ci/etcd.sh` (CI sets {REQUIRE_ENV} to \
                     make this a failure). ***\n"
                );
            });
            return None;
        }
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "hearth-etcd-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the etcd temp dir");
        // Both listeners are held at once so the two ports differ; etcd binds them right after.
        let a = TcpListener::bind("127.0.0.1:0").expect("pick a port");
        let b = TcpListener::bind("127.0.0.1:0").expect("pick a port");
        let client_port = a.local_addr().unwrap().port();
        let peer_port = b.local_addr().unwrap().port();
        drop((a, b));
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port,
            peer_port,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            tls,
        };
        etcd.start_again();
        Some(etcd)
    }

    /// Starts etcd (again) on the same ports and data dir and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut tls_flags: Vec<std::ffi::OsString> = Vec::new();
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &t.cert),
                ("--key-file", &t.key),
                ("--trusted-ca-file", &t.ca),
            ] {
                tls_flags.push(flag.into());
                tls_flags.push(path.into());
            }
            if t.client_cert_auth {
                tls_flags.push("--client-cert-auth".into());
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log");
        let child = Command::new("etcd")
            .args(["--name", "hearth-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("hearth-test={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(&self.flags)
            .args(&tls_flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let mut probe = Client::new(vec![self.endpoint()], None, Duration::from_millis(500))
            .with_tls(self.tls.as_ref().map(TlsFiles::client_config));
        // Any answer of etcd's own counts: with auth on, the probe's refusal is an answer too.
        let ready = super::wait_until(READY_DEADLINE, || {
            matches!(
                probe.range_prefix(b"/probe"),
                Ok(_) | Err(hearth::etcd::Error::Etcd { .. })
            )
        });
        assert!(
            ready,
            "etcd did not answer within {READY_DEADLINE:?}; its log:\n{}",
            self.log()
        );
    }

    /// Kills etcd (SIGKILL: the harshest way it can go away) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::parse(&self.url()).expect("a valid endpoint")
    }

    /// A client straight to this etcd, for the test's own reads and writes.
    pub fn client(&self) -> Client {
        Client::new(vec![self.endpoint()], None, Duration::from_secs(5))
            .with_tls(self.tls.as_ref().map(TlsFiles::client_config))
    }

    /// Runs `sh -c "ETCDCTL_API=3 etcdctl --endpoints=URL <rest>"`: `rest` is typed as a user
    /// would type it, quotes included.
    pub fn etcdctl(&self, rest: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "etcdctl --endpoints={}{} {rest}",
                self.url(),
                self.etcdctl_tls()
            ))
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl")
    }

    /// etcdctl's TLS flags for this etcd (none without TLS).
    fn etcdctl_tls(&self) -> String {
        let Some(t) = &self.tls else {
            return String::new();
        };
        let mut flags = format!(" --cacert={}", t.ca.display());
        if let Some((c, k)) = &t.client {
            flags.push_str(&format!(" --cert={} --key={}", c.display(), k.display()));
        }
        flags
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP relay to `target` that can be cut (every connection broken, new ones closed at once)
/// and restored.
pub struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let done = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let thread = {
            let (open, done, conns) = (Arc::clone(&open), Arc::clone(&done), Arc::clone(&conns));
            thread::spawn(move || {
                for client in listener.incoming() {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let mut list = conns.lock().unwrap();
                    for s in [&client, &server] {
                        if let Ok(s) = s.try_clone() {
                            list.push(s);
                        }
                    }
                    drop(list);
                    pump(&client, &server);
                    pump(&server, &client);
                }
            })
        };
        Relay {
            addr,
            open,
            done,
            conns,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::parse(&self.url()).expect("a valid endpoint")
    }

    /// Breaks every relayed connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread of its own until either side ends.
fn pump(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.done.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `done`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
