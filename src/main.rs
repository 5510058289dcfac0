//! The `hearth` binary: parse arguments, set up logging, load the configuration, run the cores
//! until SIGTERM or SIGINT (reloading on SIGHUP), then drain and exit.
//!
//! Reloads of the file (SIGHUP, `POST /reload`) and changes through the admin API all go through
//! one [`Dynamic`], so a reload of the file keeps the routes added through the API.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use log::{error, info};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use hearth::cli::Cli;
use hearth::dynamic::{load_file, Dynamic};
use hearth::runtime::Server;

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
    let file_cfg = cfg.clone();
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hearth: {e}");
            return ExitCode::from(1);
        }
    };
    let dynamic = Arc::new(Dynamic::with_handle(
        cli.config.clone(),
        file_cfg,
        server.handle(),
    ));
    if let Some(admin) = &admin {
        if let Err(e) = hearth::admin::start(admin.addr, server.handle(), dynamic.clone()) {
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
