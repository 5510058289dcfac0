//! Configuration: the TOML file format, its defaults, and its validation.
//!
//! This module owns the translation from the text of `hearth.toml` into a [`Config`] that the
//! runtime can trust without re-checking: every duration is bounded by [`MAX_DURATION`], every
//! route names an upstream that exists (by index), every upstream has at least one node with a
//! resolved address and a weight of at least 1, and `pass_host = "rewrite"` always carries its
//! host. Loading happens once, before any core starts, so this module may block (it reads the
//! file and resolves node names) but it never panics on what the file says.
//!
//! Every error names the file, the 1-based line and the dotted key path of the offending value.
//! Lines come from the spans toml reports; key paths come from a second, spanned parse of the
//! same text (`locate::Locator`), which finds the key whose span covers the error. That keeps the
//! serde layer plain (`deny_unknown_fields` everywhere) while still giving errors that point at
//! the exact key, including keys inside inline tables and arrays of tables.
//!
//! The submodules follow a file through loading, leaves first:
//! - `types`: what a loaded configuration is ([`Config`] and everything in it), with defaults;
//! - `value`: durations and sizes as written ([`parse_duration`], [`parse_size`]) and the serde
//!   readers for them and for counts, with the bounds they enforce;
//! - `raw`: the serde mirror of the file, one struct per table, nothing checked beyond types;
//! - `locate`: [`ConfigError`] and [`Warning`], and turning a byte offset into `file:line: key`;
//! - `build`: the builder that checks the raw tree and turns it into a [`Config`]
//!   ([`Config::load`], [`Config::parse`]), with `build::upstream` for `[upstreams.NAME]`.
//!
//! A route, its patterns and a balancing kind are defined by the modules that act on them
//! (`route`, `balance`) and the upgrade list's grammar by `http::rewrite`; the builder validates
//! with their functions and this module re-exports them, so `config::Route` is `route::Route`.
//! Inside this directory, modules name each other by their own paths (`super::types::Config`),
//! never through these re-exports, so the parent never depends on a child that depends on it.

mod build;
mod locate;
mod raw;
#[cfg(test)]
mod testing;
pub(crate) mod types;
mod value;

pub use crate::balance::Balance;
pub use crate::http::rewrite::{default_upgrade, upgrade_protocol};
pub use crate::route::{route_host, uri_pattern, HostPattern, Route, UriPattern};
pub use locate::{ConfigError, Warning};
pub use types::{
    AccessLogSettings, ActiveChecks, Admin, CertFiles, ClientSettings, Config, ConfigCenter,
    EtcdTls, Listen, ListenTls, Node, PassHost, PassiveHealth, PoolSettings, QueueSettings,
    Resolve, Scheme, Upstream, UpstreamTimeouts, UpstreamTls, MAX_HEAD_BYTES, MAX_WORKERS,
    MIN_HEAD_BYTES,
};
pub use value::{parse_duration, parse_size, MAX_DURATION};
