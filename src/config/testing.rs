//! Test fixtures shared by the configuration's unit tests: the smallest valid file and
//! `Config::parse` under the file name `t.toml`, which the expected messages quote.
//!
//! `MINIMAL` is the smallest file that loads (one listener, one upstream, one route to it), so a
//! test adds only the keys it is about; the fixtures name the builder's entry point and nothing
//! of its sections, so the tests of each section can share them.

use super::locate::{ConfigError, Warning};
use super::types::Config;

pub(crate) const MINIMAL: &str = r#"
[[listen]]
addr = "127.0.0.1:0"

[upstreams.u]
nodes = { "127.0.0.1:9001" = 1 }

[[routes]]
uris = ["/*"]
upstream = "u"
"#;

pub(crate) fn parse(text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    Config::parse(text, "t.toml")
}

pub(crate) fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}
