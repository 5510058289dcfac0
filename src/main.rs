//! The `hearth` binary: parse arguments, set up logging, load the configuration, run the cores
//! until SIGTERM or SIGINT (reloading on SIGHUP, reopening the access log on SIGUSR1), then drain
//! and exit.
//!
//! Reloads of the file (SIGHUP, `POST /reload`), changes through the admin API and, with
//! `[config_center]`, changes read from etcd all go through one [`Dynamic`], so a reload of the
//! file keeps the routes added through the API or etcd. With a config center, everything in etcd
//! is read before the cores start (etcd unreachable and no cache: exit 1), and the watcher
//! follows etcd until shutdown.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use clap::Parser;
use log::{error, info};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use hearth::admin::Fleet;
use hearth::cli::Cli;
use hearth::config::Config;
use hearth::config_center::{Watcher, Writer};
use hearth::dynamic::{load_file, CenterCounts, CenterSink, Dynamic};
use hearth::runtime::server::Handle;
use hearth::runtime::Server;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let cfg = match load_file(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            eprintln!("hearth: {e}");
            return ExitCode::from(1);
        }
    };
    if cli.check {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }

    // Register before the cores start so an early signal is not lost.
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hearth: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
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
    let dynamic = Arc::new(Dynamic::new(cli.config.clone(), cfg.clone(), apply));
    let watcher = match &center {
        None => None,
        Some(settings) => {
            let counts = Arc::new(CenterCounts::default());
            let sink = CenterSink::new(dynamic.clone(), &settings.prefix, counts.clone());
            match Watcher::start(settings, Box::new(sink)) {
                Ok(w) => Some((w, counts)),
                Err(e) => {
                    error!("config center: {e}");
                    eprintln!("hearth: config center: {e}");
                    return ExitCode::from(1);
                }
            }
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
        match Server::start(first) {
            Ok(s) => {
                *t = Target::Running(s.handle());
                s
            }
            Err(e) => {
                eprintln!("hearth: {e}");
                return ExitCode::from(1);
            }
        }
    };
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
        if let Err(e) = hearth::admin::start(admin.addr, server.handle(), dynamic.clone(), fleet) {
            eprintln!("hearth: {e}");
            server.shutdown(std::time::Duration::ZERO);
            let _ = server.join();
            return ExitCode::from(1);
        }
    }
    info!(
        "hearth {} started with {workers} worker(s)",
        env!("CARGO_PKG_VERSION")
    );

    for sig in signals.forever() {
        if sig == SIGHUP {
            info!("SIGHUP: reloading {}", cli.config.display());
            let _ = dynamic.reload_file();
            continue;
        }
        if sig == SIGUSR1 {
            info!("SIGUSR1: reopening the access log");
            server.reopen_logs();
            continue;
        }
        info!("signal {sig}: finishing requests in flight (up to {grace:?}), then exiting");
        break;
    }
    server.shutdown(grace);
    // Stopping the watcher can take up to one etcd timeout, so the cores stop accepting first.
    if let Some((w, _)) = watcher {
        w.stop();
    }
    // A second stop signal exits at once.
    std::thread::spawn(move || {
        if signals.forever().any(|s| s != SIGHUP && s != SIGUSR1) {
            std::process::exit(130);
        }
    });
    match server.join() {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}
