//! hearth as a program: load the configuration, start the cores, the admin listener and the
//! config-center watcher, follow signals, stop. `main` parses the arguments, sets up logging and
//! calls [`run`]; tests call [`start`] to run the same hearth in-process and [`Running::stop`] to
//! end it.
//!
//! A binary upgrade (`crate::upgrade`) is also driven from here: [`run`] offers the listening
//! sockets on the upgrade socket, starts a new hearth on SIGUSR2, and stops once one has taken
//! over; with `--upgrade` it is itself the new hearth, started on the sockets it took.
//!
//! Reloads of the file (SIGHUP, `POST /reload`), changes through the admin API and, with
//! `[config_center]`, changes read from etcd all go through one [`Dynamic`], so a reload of the
//! file keeps the routes added through the API or etcd. With a config center, everything in etcd
//! is read before the cores start (etcd unreachable and no cache: [`Error::ConfigCenter`]), and
//! the watcher follows etcd until shutdown. Without one, `[admin] state` names the file where
//! the admin API's routes and upstreams are kept: it is loaded before the cores start (a
//! corrupt one: [`Error::State`], naming file, line and key), and written before each change
//! the API applies.
//!
//! Invariants: only [`run`] touches process-wide state (signal handlers, `process::exit`), so
//! [`start`] may be called any number of times in one process; a fatal error is printed once, by
//! [`run`], as `hearth: ...`; whatever [`start`] started is stopped by [`Running::stop`], or by
//! dropping the [`Running`], except the admin listener, which has no stop and lives until the
//! process exits.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::select;
use log::{debug, info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::admin::Fleet;
use crate::admin_state::StateFile;
use crate::cli::Cli;
use crate::config::Config;
use crate::config_center::{StartError, Watcher, Writer};
use crate::dynamic::{load_file, CenterCounts, CenterSink, Dynamic};
use crate::runtime::server::{Handle, ListenSet, Listeners};
use crate::runtime::Server;
use crate::upgrade::old::{Offer, Source};
use crate::upgrade::wire::Addrs;

/// Why hearth could not start, or stopped on its own. Displays as the line `run` prints after
/// `hearth: `.
#[derive(Debug)]
pub enum Error {
    /// The configuration file did not load; the message names its file, line and key.
    Load(String),
    /// The admin API's state file (`[admin] state`) did not load; names file, line and key.
    State(crate::config::ConfigError),
    Signals(io::Error),
    /// etcd could not be read and there is no cache to start from.
    ConfigCenter(StartError),
    /// The cores did not start: a listen address, the access log, a thread.
    Start(io::Error),
    Admin(io::Error),
    /// A core failed while running.
    Core(io::Error),
    /// `--upgrade`: the running hearth could not be taken over (it keeps serving).
    Upgrade(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(message) => f.write_str(message),
            Error::Upgrade(message) => write!(f, "upgrade: {message}"),
            Error::State(e) => write!(f, "{e}"),
            Error::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            Error::ConfigCenter(e) => write!(f, "config center: {e}"),
            Error::Start(e) | Error::Admin(e) | Error::Core(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Load(_) | Error::Upgrade(_) => None,
            Error::State(e) => Some(e),
            Error::ConfigCenter(e) => Some(e),
            Error::Signals(e) | Error::Start(e) | Error::Admin(e) | Error::Core(e) => Some(e),
        }
    }
}

/// Runs hearth as the binary does: `--check` validates the file; otherwise hearth runs until
/// SIGTERM or SIGINT (reloading the file on SIGHUP, reopening the access log on SIGUSR1), then
/// lets requests in flight finish for up to `shutdown_grace`; a second stop signal exits at once
/// with status 130. SIGUSR2 starts a new hearth (`--upgrade`) from the executable and file this
/// one started with; once it has taken over, this one drains as for SIGTERM and exits. With
/// `--upgrade`, hearth first takes over from the one running. A fatal error is printed once and
/// is status 1.
pub fn run(cli: &Cli) -> ExitCode {
    match serve(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hearth: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(cli: &Cli) -> Result<ExitCode, Error> {
    let cfg = load_file(&cli.config).map_err(Error::Load)?;
    if cli.check {
        // What a start would load with the file, checked the same way, so a corrupt state
        // file fails the check rather than the next start.
        if let Some(path) = cfg.admin.as_ref().and_then(|a| a.state.clone()) {
            let dynamic = Dynamic::new(cli.config.clone(), cfg, Box::new(|_| {}));
            dynamic
                .load_state(StateFile::new(path))
                .map_err(Error::State)?;
        }
        println!("{}: ok", cli.config.display());
        return Ok(ExitCode::SUCCESS);
    }
    // Recorded now: SIGUSR2 starts what is at this path then (replacing the file is the point
    // of an upgrade, and by then /proc/self/exe names the deleted old binary), on this file
    // wherever the working directory has gone.
    let exe = std::env::current_exe().ok();
    let config = std::path::absolute(&cli.config).unwrap_or_else(|_| cli.config.clone());
    let socket = crate::upgrade::socket::path_for(&cfg);
    // Register before the cores start so an early signal is not lost.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2]).map_err(Error::Signals)?;
    let (mut running, taking) = if cli.upgrade {
        let path = socket.clone().ok_or_else(|| {
            Error::Upgrade(
                "no upgrade socket: set upgrade_socket (the first [[listen]] has port 0)".into(),
            )
        })?;
        let mut taking = crate::upgrade::new::connect(&path).map_err(Error::Upgrade)?;
        info!(
            "upgrade: taking over from the hearth with pid {} (this is pid {})",
            taking.old_pid,
            std::process::id()
        );
        let inherit = Inherit {
            sets: std::mem::take(&mut taking.sets),
            admin: taking.admin.take(),
        };
        (launch(&cli.config, cfg, Some(inherit))?, Some(taking))
    } else {
        (start(&cli.config, cfg)?, None)
    };
    let (handed_tx, handed_rx) = crossbeam_channel::bounded(1);
    // A hearth taking over binds the upgrade socket once the old one has let go of it.
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
    let offer = match &socket {
        Some(path) => {
            let source = running.upgrade_source().map_err(Error::Start)?;
            let go = taking.is_some().then_some(go_rx);
            Some(Offer::start(path.clone(), source, handed_tx, go).map_err(Error::Start)?)
        }
        None => {
            debug!("binary upgrade is unavailable: the first [[listen]] has port 0 and upgrade_socket is not set");
            None
        }
    };
    if let Some(t) = taking {
        t.ready(running.handle(), go_tx).map_err(Error::Upgrade)?;
    }
    // Signals come through a channel, so that the loop also hears of a hand-over.
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("hearth-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(sig).is_err() {
                    return;
                }
            }
        })
        .map_err(Error::Start)?;
    let grace = running.grace();
    let mut handed_rx = handed_rx;
    loop {
        select! {
            recv(sig_rx) -> sig => {
                let Ok(sig) = sig else { break };
                match sig {
                    SIGHUP => {
                        info!("SIGHUP: reloading {}", cli.config.display());
                        // A refused reload is logged where it is refused, and changes nothing.
                        let _ = running.reload_file();
                    }
                    SIGUSR1 => {
                        info!("SIGUSR1: reopening the access log");
                        running.reopen_logs();
                    }
                    SIGUSR2 => match (&offer, &exe) {
                        (Some(offer), Some(exe)) => offer.spawn(exe, &config),
                        (None, _) => warn!("SIGUSR2: binary upgrade is unavailable: no upgrade socket (set upgrade_socket)"),
                        (_, None) => warn!("SIGUSR2: binary upgrade is unavailable: the path of this executable was unknown at start"),
                    },
                    _ => {
                        info!("signal {sig}: finishing requests in flight (up to {grace:?}), then exiting");
                        break;
                    }
                }
            }
            recv(handed_rx) -> handed => match handed {
                Ok(h) => {
                    info!("upgrade: handed over to the new hearth (pid {}); finishing requests in flight (up to {grace:?}), then exiting", h.pid);
                    break;
                }
                // The upgrade socket's thread ended without a hand-over.
                Err(_) => handed_rx = crossbeam_channel::never(),
            },
        }
    }
    running.shutdown();
    // A second stop signal exits at once.
    std::thread::spawn(move || {
        if sig_rx
            .iter()
            .any(|s| s != SIGHUP && s != SIGUSR1 && s != SIGUSR2)
        {
            std::process::exit(130);
        }
    });
    let joined = running.join();
    if let Some(offer) = offer {
        offer.finish();
    }
    joined?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Sockets taken over from the hearth that a binary upgrade replaces.
struct Inherit {
    sets: Vec<ListenSet>,
    admin: Option<(Addrs, std::net::TcpListener)>,
}

/// Where the dynamic store sends a configuration it built.
enum Target {
    /// The cores are not running yet: the latest build waits to be their first.
    Starting(Option<Box<Config>>),
    Running(Handle),
}

fn lock(target: &Mutex<Target>) -> MutexGuard<'_, Target> {
    // Nothing panics while holding it; if something did, the value is still whole.
    target.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts hearth on `cfg`, loaded from `path` (which a reload reads again): the config-center
/// watcher first when configured, then the cores, then the admin listener. Installs no signal
/// handler. On error, whatever had started is stopped again, except a watcher, which stops as it
/// is dropped.
pub fn start(path: &Path, cfg: Config) -> Result<Running, Error> {
    launch(path, cfg, None)
}

/// As [`start`], on the sockets of `inherit` where the configuration still has their addresses.
fn launch(path: &Path, cfg: Config, inherit: Option<Inherit>) -> Result<Running, Error> {
    let (passed, mut passed_admin) = match inherit {
        Some(i) => (Some(i.sets), i.admin),
        None => (None, None),
    };
    let workers = cfg.workers;
    let grace = cfg.shutdown_grace;
    let admin = cfg.admin.clone();
    let center = cfg.config_center.clone();

    // The store applies through `target`: until the cores run it keeps the latest build, which
    // becomes their first configuration, so routes read from etcd are live from the first
    // accepted connection, and a start without etcd fails before anything listens.
    let target = Arc::new(Mutex::new(Target::Starting(None)));
    let apply = {
        let target = Arc::clone(&target);
        Box::new(move |built: Config| match &mut *lock(&target) {
            Target::Starting(first) => *first = Some(Box::new(built)),
            Target::Running(handle) => handle.reload(built),
        })
    };
    let dynamic = Arc::new(Dynamic::new(path.to_path_buf(), cfg.clone(), apply));
    // The config builder refuses a state file with a config center.
    if let Some(state) = admin.as_ref().and_then(|a| a.state.clone()) {
        dynamic
            .load_state(StateFile::new(state))
            .map_err(Error::State)?;
    }
    let watcher = match &center {
        None => None,
        Some(settings) => {
            let counts = Arc::new(CenterCounts::default());
            let sink = CenterSink::new(dynamic.clone(), &settings.prefix, counts.clone());
            let w = Watcher::start(settings, Box::new(sink)).map_err(Error::ConfigCenter)?;
            Some((w, counts))
        }
    };

    let server = {
        // Held while the cores start, so a change the watcher applies meanwhile waits for them
        // rather than landing in `Starting` after its build was taken.
        let mut t = lock(&target);
        let first = match &mut *t {
            Target::Starting(first) => first.take(),
            Target::Running(_) => None,
        }
        .map_or(cfg, |b| *b);
        // The new side of an upgrade listens on the old hearth's sockets, so the check that no
        // other process listens there (part of binding) is not for it.
        let s = match passed {
            Some(sets) => Listeners::inherit(&first.listen, first.workers, sets)
                .and_then(|l| Server::start_with(first, l, true)),
            None => Server::start(first),
        }
        .map_err(Error::Start)?;
        *t = Target::Running(s.handle());
        s
    };
    let mut admin_addr = None;
    let mut admin_sock = None;
    if let Some(admin) = &admin {
        let fleet = match (&center, &watcher) {
            (Some(settings), Some((w, counts))) => Some(Fleet {
                writer: Writer::new(settings),
                prefix: settings.prefix.clone(),
                connected: w.connected(),
                revision: w.revision(),
                counts: counts.clone(),
            }),
            _ => None,
        };
        let taken = passed_admin
            .take()
            .filter(|(a, _)| a.addr == admin.addr || a.bound == admin.addr);
        let listener = match taken {
            Some((_, l)) => l.set_nonblocking(false).map(|()| l),
            None => crate::admin::bind(admin.addr),
        }
        .and_then(|l| {
            let kept = l.try_clone()?;
            let addrs = Addrs {
                addr: admin.addr,
                bound: l.local_addr()?,
            };
            Ok((l, addrs, kept))
        });
        let started = listener.and_then(|(l, addrs, kept)| {
            admin_sock = Some((addrs, kept));
            crate::admin::start(l, server.handle(), dynamic.clone(), fleet)
        });
        match started {
            // The listener's thread is never joined: it serves until the process exits.
            Ok((addr, _thread)) => admin_addr = Some(addr),
            Err(e) => {
                server.shutdown(Duration::ZERO);
                let _ = server.join();
                return Err(Error::Admin(e));
            }
        }
    }
    if let Some((a, _)) = passed_admin {
        info!(
            "admin address {} is not in the configuration any more: closing it",
            a.bound
        );
    }
    info!(
        "hearth {} started with {workers} worker(s)",
        env!("CARGO_PKG_VERSION")
    );
    Ok(Running {
        server: Some(server),
        dynamic,
        watcher: watcher.map(|(w, _)| w),
        grace,
        admin: admin_addr,
        admin_sock,
    })
}

/// A running hearth, as [`start`] returns it.
pub struct Running {
    /// Some until [`Running::join`] takes it; only `join` and `drop` run after that.
    server: Option<Server>,
    dynamic: Arc<Dynamic>,
    /// Taken by [`Running::shutdown`], which stops it.
    watcher: Option<Watcher>,
    grace: Duration,
    admin: Option<SocketAddr>,
    /// A copy of the admin listener, for a binary upgrade to pass on.
    admin_sock: Option<(Addrs, std::net::TcpListener)>,
}

impl Running {
    fn server(&self) -> &Server {
        // `server` is taken only by `join`, which consumes the `Running`.
        self.server.as_ref().expect("the server runs until join")
    }

    /// The bound address of each `[[listen]]` entry, in order (port 0 resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        self.server().addrs()
    }

    /// The admin listener's bound address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// A handle to the cores: counters, metrics, reload with a built configuration.
    pub fn handle(&self) -> Handle {
        self.server().handle()
    }

    /// How long requests in flight may take to finish once [`Running::shutdown`] is asked.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// What a binary upgrade passes on to the hearth that takes over from this one.
    pub fn upgrade_source(&self) -> io::Result<Source> {
        let admin = match &self.admin_sock {
            Some((addrs, l)) => Some((*addrs, l.try_clone()?)),
            None => None,
        };
        Ok(Source {
            sockets: self.server().sockets(),
            admin,
            handle: self.handle(),
            grace: self.grace,
        })
    }

    /// Re-reads the file and applies it over the routes and upstreams from the admin API and
    /// etcd, as SIGHUP does. Err: the file was refused (and logged), nothing changed.
    pub fn reload_file(&self) -> Result<(), String> {
        self.dynamic.reload_file()
    }

    /// Asks every core to reopen its access log at the configured path, as SIGUSR1 does.
    pub fn reopen_logs(&self) {
        self.server().reopen_logs();
    }

    /// Stops accepting and lets requests in flight finish for up to the grace period; then stops
    /// the config-center watcher, which can take up to one etcd timeout, so the cores stop
    /// accepting first. [`Running::join`] waits for the cores.
    pub fn shutdown(&mut self) {
        self.server().shutdown(self.grace);
        if let Some(w) = self.watcher.take() {
            w.stop();
        }
    }

    /// Waits for every core to stop. [`Error::Core`] names the first core that failed.
    pub fn join(mut self) -> Result<(), Error> {
        match self.server.take() {
            Some(server) => server.join().map_err(Error::Core),
            None => Ok(()),
        }
    }

    /// [`Running::shutdown`], then [`Running::join`].
    pub fn stop(mut self) -> Result<(), Error> {
        self.shutdown();
        self.join()
    }
}

impl Drop for Running {
    /// A `Running` dropped without `stop` (a test that panicked, say) stops its cores at once,
    /// without a grace period; the watcher stops as it is dropped after them.
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::ZERO);
            let _ = server.join();
        }
    }
}
