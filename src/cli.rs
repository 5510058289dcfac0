//! Command line: which configuration file to load, and whether only to check it or to take over
//! from a running hearth (a binary upgrade).
//!
//! This module owns the argument grammar and nothing else; [`app::run`](crate::app::run) acts on
//! the result, so the grammar can be tested without starting anything.

use std::path::PathBuf;

use clap::Parser;

/// A low-latency HTTP/1.1 reverse proxy.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Configuration file to load.
    #[arg(short, long, value_name = "FILE", default_value = "hearth.toml")]
    pub config: PathBuf,

    /// Validate the configuration file and exit: status 0 if it is valid, 1 if not.
    #[arg(long)]
    pub check: bool,

    /// Take over from the hearth running with this configuration (binary upgrade): validate the
    /// file, then take its listening sockets and idle upstream connections through its
    /// `upgrade_socket`; it drains and exits. On any error before that, it keeps serving.
    #[arg(long, conflicts_with = "check")]
    pub upgrade: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn arguments() {
        let table: &[(&[&str], &str, bool, bool)] = &[
            (&[], "hearth.toml", false, false),
            (&["-c", "a.toml"], "a.toml", false, false),
            (&["--config", "b.toml", "--check"], "b.toml", true, false),
            (&["--config=c.toml"], "c.toml", false, false),
            (&["--check"], "hearth.toml", true, false),
            (&["--upgrade", "-c", "d.toml"], "d.toml", false, true),
        ];
        for (args, config, check, upgrade) in table {
            let cli = Cli::try_parse_from(std::iter::once("hearth").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(
                cli,
                Cli {
                    config: config.into(),
                    check: *check,
                    upgrade: *upgrade,
                },
                "{args:?}"
            );
        }
    }

    #[test]
    fn help_version_and_mistakes() {
        let kind = |args: &[&str]| Cli::try_parse_from(args).unwrap_err().kind();
        assert_eq!(kind(&["hearth", "--help"]), ErrorKind::DisplayHelp);
        assert_eq!(kind(&["hearth", "--version"]), ErrorKind::DisplayVersion);
        assert_eq!(kind(&["hearth", "--bogus"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["hearth", "-c"]), ErrorKind::InvalidValue);
        assert_eq!(kind(&["hearth", "stray"]), ErrorKind::UnknownArgument);
        assert_eq!(
            kind(&["hearth", "--check", "--upgrade"]),
            ErrorKind::ArgumentConflict
        );
    }
}
