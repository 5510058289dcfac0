//! The `hearth` binary: parse the arguments, set up logging, and hand over to
//! [`hearth::app::run`], which loads the configuration, runs until SIGTERM or SIGINT and returns
//! the exit status. Everything else lives in the library, where tests can reach it.

use std::process::ExitCode;

use clap::Parser;

use hearth::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    hearth::app::run(&cli)
}
