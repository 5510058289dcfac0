//! The `hearth` binary: parse arguments, set up logging, load the configuration, run the cores
//! until SIGTERM or SIGINT, then drain and exit.

use std::process::ExitCode;

use clap::Parser;
use log::{error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use hearth::cli::Cli;
use hearth::config::Config;
use hearth::runtime::server::SHUTDOWN_GRACE;
use hearth::runtime::Server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let (cfg, warnings) = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            eprintln!("hearth: {e}");
            return ExitCode::from(1);
        }
    };
    for w in &warnings {
        warn!("{w}");
    }
    if cli.check {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }

    // Register before the cores start so an early signal is not lost.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hearth: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let workers = cfg.workers;
    let admin = cfg.admin.clone();
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hearth: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(admin) = &admin {
        if let Err(e) = hearth::admin::start(admin.addr, server.stats_handle()) {
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

    if let Some(sig) = signals.forever().next() {
        info!(
            "signal {sig}: finishing requests in flight (up to {} s), then exiting",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    server.shutdown(SHUTDOWN_GRACE);
    // A second signal stops at once.
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
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
