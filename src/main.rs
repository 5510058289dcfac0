//! The `hearth` binary: parse arguments, set up logging, load the configuration, run the cores
//! until SIGTERM or SIGINT (reloading on SIGHUP), then drain and exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use log::{error, info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use hearth::cli::Cli;
use hearth::config::Config;
use hearth::runtime::server::Handle;
use hearth::runtime::Server;

/// Loads and validates `path`; logs its warnings.
fn load(path: &Path) -> Result<Config, String> {
    let (cfg, warnings) = Config::load(path).map_err(|e| e.to_string())?;
    for w in &warnings {
        warn!("{w}");
    }
    Ok(cfg)
}

/// Re-reads the file and applies it only if it is valid in full; a bad file changes nothing.
fn reload(path: &Path, handle: &Handle) -> Result<(), String> {
    match load(path) {
        Ok(cfg) => {
            handle.reload(cfg);
            Ok(())
        }
        Err(e) => {
            error!("reload refused, the running configuration stays: {e}");
            Err(e)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let cfg = match load(&cli.config) {
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
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hearth: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let workers = cfg.workers;
    let grace = cfg.shutdown_grace;
    let admin = cfg.admin.clone();
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hearth: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(admin) = &admin {
        let (path, handle): (PathBuf, Handle) = (cli.config.clone(), server.handle());
        let reload_fn: hearth::admin::ReloadFn = Box::new(move || reload(&path, &handle));
        if let Err(e) = hearth::admin::start(admin.addr, server.handle(), reload_fn) {
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
            let _ = reload(&cli.config, &server.handle());
            continue;
        }
        info!("signal {sig}: finishing requests in flight (up to {grace:?}), then exiting");
        break;
    }
    server.shutdown(grace);
    // A second stop signal exits at once.
    std::thread::spawn(move || {
        if signals.forever().any(|s| s != SIGHUP) {
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
