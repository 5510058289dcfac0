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
//! same text ([`Locator`]), which finds the key whose span covers the error. That keeps the serde
//! layer plain (`deny_unknown_fields` everywhere) while still giving errors that point at the
//! exact key, including keys inside inline tables and arrays of tables.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub use crate::balance::Balance;
pub use crate::http::rewrite::{default_upgrade, upgrade_protocol};
pub use crate::route::{route_host, uri_pattern, HostPattern, Route, UriPattern};

/// Smallest accepted `client.max_head_bytes`: below this even an ordinary browser request head
/// with a few cookies would be refused.
pub const MIN_HEAD_BYTES: usize = 1024;
/// Largest accepted `client.max_head_bytes`: a head must fit in one buffer, and buffers this
/// large per connection would make the buffer pool the memory bottleneck.
pub const MAX_HEAD_BYTES: usize = 1024 * 1024;
/// Largest accepted `workers`; more threads than this is a typo, not a deployment.
pub const MAX_WORKERS: usize = 1024;
/// Longest accepted duration. The runtime adds durations to `Instant`s, which panics on
/// overflow, so the bound is enforced here rather than trusted.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Durations above this are accepted but draw a warning: a timeout of days is usually a unit
/// mistake.
const SUSPICIOUS_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Bare integers from this many seconds up draw the same warning even under a day: the usual
/// mistake is milliseconds written as bare seconds (`idle_timeout = 60000`, 16h 40m), which the
/// one-day rule alone would miss. Someone who means hours can write `"3h"` and silence it.
const SUSPICIOUS_BARE_SECONDS: u64 = 10_000;

/// Everything hearth needs to run, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Event-loop threads; default: the number of online cores.
    pub workers: usize,
    /// Pin each worker to one CPU.
    pub pin_cores: bool,
    /// Client connections per process; at the cap accepting pauses until the count falls below
    /// 90% of it. 0 means unlimited.
    pub max_client_connections: usize,
    /// After SIGTERM/SIGINT, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    pub listen: Vec<Listen>,
    pub client: ClientSettings,
    /// In order of appearance in the file; the index is the upstream id routes refer to.
    pub upstreams: Vec<Upstream>,
    /// In order of appearance in the file.
    pub routes: Vec<Route>,
    /// The admin listener (`/metrics`), off unless configured.
    pub admin: Option<Admin>,
    /// One line per request, off unless configured.
    pub access_log: Option<AccessLogSettings>,
    /// Routes and upstreams also followed from etcd, off unless configured.
    pub config_center: Option<ConfigCenter>,
}

/// `[config_center]`: routes and upstreams also come from etcd, under APISIX's key layout
/// (`{prefix}/routes/{id}`, `{prefix}/upstreams/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigCenter {
    /// Tried in order; never empty.
    pub endpoints: Vec<crate::etcd::Endpoint>,
    /// Starts with `/` and has no trailing `/`; default `/apisix`.
    pub prefix: String,
    /// Both `user` and `password`, or neither.
    pub credentials: Option<crate::etcd::Credentials>,
    /// Bounds each connect, read and write to etcd; default 5 s.
    pub timeout: Duration,
    /// Where the last snapshot read from etcd is kept, for a start while etcd is down.
    pub cache: Option<std::path::PathBuf>,
}

/// `access_log = { path = "...", format = "combined" | "json" }`; `access_log = false` is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    pub path: std::path::PathBuf,
    pub format: crate::accesslog::Format,
}

/// `[admin]`: an HTTP listener for operators, served by its own thread, never by a core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub addr: SocketAddr,
    /// Required as header `X-API-KEY` on every `/apisix/admin` request; None: no check, which is
    /// accepted only on a loopback address. Never empty.
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// TLS on this listener (`tls` and/or `certs`); None: plain HTTP.
    pub tls: Option<ListenTls>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A TLS listener's certificates. The first is the default (`tls`, or else the first of
/// `certs`); the others are chosen by the SNI names in their subjectAltName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTls {
    pub certs: Vec<CertFiles>,
}

/// `tls = { ... }` of an https upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// None: the Host that `pass_host` sends, without its port (see `tls::sni_for`).
    pub sni: Option<String>,
    /// Check the certificate chain and name; off logs a warning.
    pub verify: bool,
    /// Trusted CAs (PEM); None: the webpki roots.
    pub ca: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            sni: None,
            verify: true,
            ca: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// Limits applied to each client (downstream) connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// The whole request head must arrive within this.
    pub header_timeout: Duration,
    /// Longest wait for the next request on a keep-alive connection.
    pub idle_timeout: Duration,
    /// A request body that makes no progress for this long is cut.
    pub body_timeout: Duration,
    /// A client that accepts no response bytes for this long is cut.
    pub send_timeout: Duration,
    /// Requests served on one connection before it is closed.
    pub max_requests: u64,
    /// Largest request head, in bytes; within `MIN_HEAD_BYTES..=MAX_HEAD_BYTES`.
    pub max_head_bytes: usize,
    /// Largest request body, in bytes; 0 means unlimited.
    pub max_body_bytes: u64,
    /// Take a lone LF as a line end in request heads and chunked bodies (RFC 9112 §2.2), for
    /// legacy clients; what hearth sends on ends its lines in CRLF either way.
    pub accept_bare_lf: bool,
    /// Keep a request going when its client closes (FIN or reset) before the answer, as nginx's
    /// `proxy_ignore_client_abort`; by default the upstream connection is closed at once.
    pub ignore_abort: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_requests: 1000,
            max_head_bytes: 16 * 1024,
            max_body_bytes: 0,
            accept_bare_lf: false,
            ignore_abort: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The table name under `[upstreams.NAME]`.
    pub name: String,
    /// Never empty; in order of appearance in the file.
    pub nodes: Vec<Node>,
    pub scheme: Scheme,
    /// Set exactly when `scheme` is `Https`.
    pub tls: Option<UpstreamTls>,
    pub pass_host: PassHost,
    pub timeout: UpstreamTimeouts,
    pub keepalive_pool: PoolSettings,
    /// Connections per node across the whole process; 0 means unlimited.
    pub max_connections: u32,
    /// Connection attempts in flight per node; 0 means unlimited.
    pub max_connecting: u32,
    pub queue: QueueSettings,
    /// How a node is chosen for a request (APISIX `type`, `hash_on`, `key`).
    pub balance: Balance,
    /// Further nodes tried after a connect failure or a failure before the request was sent;
    /// None means the number of nodes minus one (APISIX's default).
    pub retries: Option<u32>,
    /// Time budget for all tries of one request, from the first; zero means no limit.
    pub retry_timeout: Duration,
    /// Passive health: `max_fails` failures within `fail_timeout` take a node out for
    /// `fail_timeout` (nginx `max_fails` / `fail_timeout`).
    pub passive: PassiveHealth,
    /// Active health checks (APISIX `checks.active`); None: off.
    pub checks: Option<ActiveChecks>,
    /// Protocols a request may ask this upstream to switch to (`Upgrade`), lowercase names
    /// without versions; `websocket` by default. `h2c` is never allowed (see `upgrade_list`).
    pub upgrade: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveHealth {
    /// 0 turns passive health off.
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

/// `checks.active` of APISIX, HTTP only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveChecks {
    /// Path probed with GET (`http_path`), default "/".
    pub http_path: String,
    /// Host header of probes; None: the node's `host:port`.
    pub host: Option<String>,
    /// Probe timeout (APISIX `timeout`, default 1 s).
    pub timeout: Duration,
    /// Between probes of a healthy node (`healthy.interval`, default 1 s).
    pub healthy_interval: Duration,
    /// Consecutive successes that bring a node back (`healthy.successes`, default 2).
    pub healthy_successes: u32,
    /// Statuses counted as success (`healthy.http_statuses`, default 200 and 302).
    pub healthy_statuses: Vec<u16>,
    /// Between probes of an unhealthy node (`unhealthy.interval`, default 1 s).
    pub unhealthy_interval: Duration,
    /// Consecutive bad statuses that take a node out (`unhealthy.http_failures`, default 2).
    pub unhealthy_failures: u32,
    /// Statuses counted as failures (`unhealthy.http_statuses`, APISIX's default: 429, 404,
    /// 500 to 505). A status in neither list counts for nothing, as in APISIX.
    pub unhealthy_statuses: Vec<u16>,
    /// Consecutive refused, reset or cut connections that take a node out
    /// (`unhealthy.tcp_failures`, default 2).
    pub tcp_failures: u32,
    /// Consecutive probes without a status line within `timeout` that take a node out
    /// (`unhealthy.timeouts`, default 2).
    pub timeouts: u32,
}

impl Default for ActiveChecks {
    fn default() -> Self {
        ActiveChecks {
            http_path: "/".into(),
            host: None,
            timeout: Duration::from_secs(1),
            healthy_interval: Duration::from_secs(1),
            healthy_successes: 2,
            healthy_statuses: vec![200, 302],
            unhealthy_interval: Duration::from_secs(1),
            unhealthy_failures: 2,
            unhealthy_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            tcp_failures: 2,
            timeouts: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The first address `host` resolved to at load time.
    pub addr: SocketAddr,
    /// The address as written, `host:port`; sent as Host with `pass_host = "node"`.
    pub host: String,
    /// Share in smooth weighted round robin; at least 1.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// Which Host header the upstream request carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PassHost {
    /// The client's Host, unchanged.
    #[default]
    Pass,
    /// The chosen node's address as written in the file.
    Node,
    /// This fixed host (`upstream_host`).
    Rewrite(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Longest stall while writing the request to the upstream.
    pub send: Duration,
    /// Longest stall while reading the response from the upstream.
    pub read: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_secs(6),
            send: Duration::from_secs(60),
            read: Duration::from_secs(60),
        }
    }
}

/// Keep-alive pool limits. The defaults follow APISIX (`size`, `requests`, `idle_timeout`) and
/// nginx (`max_lifetime`, its `keepalive_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept per pool.
    pub size: usize,
    /// Requests sent on one upstream connection before it is retired.
    pub requests: u64,
    /// An idle pooled connection older than this is closed. With `idle_auto` this is the
    /// ceiling and the working value is learned from the upstream.
    pub idle_timeout: Duration,
    /// `idle_timeout = "auto"`: stay under the shortest idle age at which the upstream was seen
    /// to close a connection.
    pub idle_auto: bool,
    /// A connection is not reused once it has been open this long.
    pub max_lifetime: Duration,
    /// Idle connections kept open per node per core even without traffic, opened in the
    /// background at start, after reload and after losses.
    pub min_idle: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            size: 320,
            requests: 1000,
            idle_timeout: Duration::from_secs(60),
            idle_auto: false,
            max_lifetime: Duration::from_secs(3600),
            min_idle: 0,
        }
    }
}

/// Requests waiting for a connection when a node is at `max_connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub size: usize,
    pub timeout: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            size: 1024,
            timeout: Duration::from_secs(1),
        }
    }
}

/// Something in the file that is valid but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a configuration was refused. Displays as `file:line: key: message`; `line` and `key`
/// are left out when there is nothing to point at (an unreadable file, a missing section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: String,
    line: Option<usize>,
    key: Option<String>,
    message: String,
}

impl ConfigError {
    pub fn file(&self) -> &str {
        &self.file
    }

    /// 1-based.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// Dotted path such as `upstreams.backend.timeout.connect` or `routes[0].upstream`.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &file),
            Err(e) => Err(ConfigError {
                file,
                line: None,
                key: None,
                message: format!("cannot read the configuration: {e}"),
            }),
        }
    }

    /// Validates `text`; `file` is only used to name the source in errors and warnings.
    pub fn parse(text: &str, file: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
        // The spanned parse also catches every syntax error, so a failure here has no tree to
        // compute a key path from.
        let tree = match DeTable::parse(text) {
            Ok(tree) => tree,
            Err(e) => {
                return Err(ConfigError {
                    file: file.to_owned(),
                    line: e.span().map(|s| line_of(text, s.start)),
                    key: None,
                    message: e.message().to_owned(),
                });
            }
        };
        let locator = Locator {
            file,
            text,
            tree: tree.get_ref(),
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| locator.error(e.span(), e.message()))?;
        let mut builder = Builder {
            locator,
            warnings: Vec::new(),
        };
        let config = builder.config(raw)?;
        Ok((config, builder.warnings))
    }
}

/// Parses a duration written as a whole number with a unit: `ms`, `s`, `m` or `h` (`"1500ms"`,
/// `"10s"`, `"2m"`, `"1h"`).
///
/// A bare number in a string (`"10"`) is refused: in a string the unit is what says the author
/// thought about it, while a bare TOML integer (`10`, handled by the deserializer) means seconds
/// as in APISIX. Fractions (`"1.5s"`) are refused too, with a hint to use a smaller unit: that
/// keeps parsing exact and the accepted forms few. Durations above [`MAX_DURATION`] are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(if s.starts_with('-') {
            format!("{s:?} is negative; durations cannot be")
        } else {
            format!("expected a whole number with a unit (ms, s, m, h), found {s:?}")
        });
    }
    if unit.starts_with('.') {
        return Err(format!(
            "{s:?} has a fraction; use a smaller unit instead, e.g. \"1500ms\" for 1.5s"
        ));
    }
    let too_long = || format!("{s:?} is longer than the longest accepted duration (365 days)");
    let n: u64 = number.parse().map_err(|_| too_long())?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
        "" => {
            return Err(format!(
                "{s:?} has no unit; write \"{n}s\" (or the bare integer {n} for seconds)"
            ))
        }
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?}; expected ms, s, m or h"
            ))
        }
    };
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

/// Parses a size in bytes: a whole number with an optional `k`, `m` or `g` suffix (powers of
/// 1024, either case), e.g. `"16k"`, `"1m"`, `"0"`. Fractions and other suffixes are refused.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = s.split_at(digits);
    if number.is_empty() {
        return Err(if s.starts_with('-') {
            format!("{s:?} is negative; sizes cannot be")
        } else {
            format!("expected a whole number with an optional k, m or g suffix, found {s:?}")
        });
    }
    let too_large = || format!("{s:?} is too large");
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let shift = match suffix {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => {
            return Err(format!(
                "{s:?} has an unknown suffix {suffix:?}; expected k, m or g (powers of 1024)"
            ))
        }
    };
    n.checked_mul(1 << shift).ok_or_else(too_large)
}

// The serde layer mirrors the file one to one. Optional keys stay `Option` so that defaults live
// in one place (the `Default` impls above); values checked after deserialising keep their span.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workers: Option<Spanned<Count<usize>>>,
    pin_cores: Option<bool>,
    max_client_connections: Option<Count<usize>>,
    shutdown_grace: Option<Spanned<RawDuration>>,
    listen: Option<Spanned<Vec<RawListen>>>,
    client: Option<RawClient>,
    upstreams: Option<Spanned<BTreeMap<Spanned<String>, Spanned<RawUpstream>>>>,
    routes: Option<Spanned<Vec<RawRoute>>>,
    admin: Option<RawAdmin>,
    access_log: Option<Spanned<RawAccessLog>>,
    config_center: Option<Spanned<RawConfigCenter>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigCenter {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    prefix: Option<Spanned<String>>,
    user: Option<String>,
    password: Option<String>,
    timeout: Option<Spanned<RawDuration>>,
    cache: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawAccessLog {
    Switch(bool),
    On(RawAccessLogTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLogTable {
    path: String,
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    addr: Spanned<String>,
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addr: Spanned<String>,
    tls: Option<Spanned<RawCertFiles>>,
    certs: Option<Spanned<Vec<RawCertFiles>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertFiles {
    cert: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTls {
    sni: Option<String>,
    verify: Option<bool>,
    ca: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    header_timeout: Option<Spanned<RawDuration>>,
    idle_timeout: Option<Spanned<RawDuration>>,
    body_timeout: Option<Spanned<RawDuration>>,
    send_timeout: Option<Spanned<RawDuration>>,
    max_requests: Option<Count<u64>>,
    max_head_bytes: Option<Spanned<RawSize>>,
    max_body_bytes: Option<RawSize>,
    accept_bare_lf: Option<bool>,
    ignore_abort: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    nodes: Spanned<BTreeMap<Spanned<String>, Spanned<Count<u32>>>>,
    scheme: Option<Spanned<String>>,
    tls: Option<Spanned<RawUpstreamTls>>,
    pass_host: Option<Spanned<String>>,
    upstream_host: Option<Spanned<String>>,
    timeout: Option<RawTimeouts>,
    keepalive_pool: Option<RawPool>,
    max_connections: Option<Count<u32>>,
    max_connecting: Option<Count<u32>>,
    queue: Option<RawQueue>,
    checks: Option<RawChecks>,
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    hash_on: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    retries: Option<Count<u32>>,
    retry_timeout: Option<Spanned<RawDuration>>,
    max_fails: Option<Count<u32>>,
    fail_timeout: Option<Spanned<RawDuration>>,
    upgrade: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Spanned<RawDuration>>,
    send: Option<Spanned<RawDuration>>,
    read: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    size: Option<Count<usize>>,
    requests: Option<Count<u64>>,
    min_idle: Option<Count<usize>>,
    idle_timeout: Option<Spanned<RawDuration>>,
    max_lifetime: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    size: Option<Count<usize>>,
    timeout: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    id: Option<Spanned<String>>,
    uris: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    #[serde(default)]
    methods: Vec<Spanned<String>>,
    priority: Option<i64>,
    status: Option<Spanned<i64>>,
    #[serde(default)]
    vars: Vec<Spanned<Vec<Spanned<RawOperand>>>>,
    upstream: Spanned<String>,
    enable_websocket: Option<bool>,
}

// `[upstreams.NAME.checks.active]`, with APISIX's key names. `interval` and `unhealthy.failures`
// are shorthands: the first sets both intervals, the second every failure count; the specific
// keys override them.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChecks {
    active: Option<RawActive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActive {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    http_path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    timeout: Option<Spanned<RawDuration>>,
    interval: Option<Spanned<RawDuration>>,
    healthy: Option<RawHealthy>,
    unhealthy: Option<RawUnhealthy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthy {
    interval: Option<Spanned<RawDuration>>,
    successes: Option<Spanned<Count<u32>>>,
    http_statuses: Option<Spanned<Vec<Spanned<Count<u16>>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnhealthy {
    interval: Option<Spanned<RawDuration>>,
    failures: Option<Spanned<Count<u32>>>,
    http_failures: Option<Spanned<Count<u32>>>,
    tcp_failures: Option<Spanned<Count<u32>>>,
    timeouts: Option<Spanned<Count<u32>>>,
    http_statuses: Option<Spanned<Vec<Spanned<Count<u16>>>>>,
}

/// One element of a `vars` condition. TOML arrays may mix types, so `["arg_n", ">", 5]` and
/// `["http_x", "IN", ["a", "b"]]` read as written in APISIX's JSON.
struct RawOperand(crate::route::Operand);

impl<'de> Deserialize<'de> for RawOperand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OperandVisitor)
    }
}

struct OperandVisitor;

impl<'de> Visitor<'de> for OperandVisitor {
    type Value = RawOperand;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or a list of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(RawOperand(crate::route::Operand::Str(v.to_owned())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(RawOperand(crate::route::Operand::Num(v as f64)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(RawOperand(crate::route::Operand::Num(v as f64)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(RawOperand(crate::route::Operand::Num(v)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(RawOperand(crate::route::Operand::List(items)))
    }
}

/// A non-negative integer that fits `T`, with errors phrased for people rather than for serde.
struct Count<T>(T);

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Count<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor(std::marker::PhantomData))
    }
}

struct CountVisitor<T>(std::marker::PhantomData<T>);

impl<T: TryFrom<u64>> Visitor<'_> for CountVisitor<T> {
    type Value = Count<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::try_from(v)
            .map(Count)
            .map_err(|_| E::custom(format!("{v} is too large for this setting")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "expected a non-negative integer, found {v}"
            ))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "expected a non-negative integer, found {v:?}"
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "expected a non-negative integer, found {v}"
        )))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "expected a non-negative integer, found {v}"
        )))
    }
}

/// A duration as read, kept with its text so a warning can quote it back.
struct RawDuration {
    value: Duration,
    /// The text as written: the integer, or the string with its quotes.
    as_read: String,
    /// The number and unit, for suggesting a reading in milliseconds.
    number: u64,
    in_seconds: bool,
    /// Written as a TOML integer rather than a string with a unit.
    bare: bool,
    /// The word "auto" (learn the value), accepted only where a setting says so.
    auto: bool,
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"10s\", \"1500ms\", \"2m\", \"1h\", or whole seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let value = Duration::from_secs(v);
        if value > MAX_DURATION {
            return Err(E::custom(format!(
                "{v} seconds is longer than the longest accepted duration (365 days)"
            )));
        }
        Ok(RawDuration {
            value,
            as_read: v.to_string(),
            number: v,
            in_seconds: true,
            bare: true,
            auto: false,
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("{v} is negative; durations cannot be"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "{v} has a fraction; write a string with a smaller unit, e.g. \"1500ms\" for 1.5s"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v == "auto" {
            // Only keepalive_pool.idle_timeout accepts it; everywhere else it is refused later,
            // with the key's line.
            return Ok(RawDuration {
                value: Duration::ZERO,
                as_read: "\"auto\"".into(),
                number: 0,
                in_seconds: false,
                bare: false,
                auto: true,
            });
        }
        let value = parse_duration(v).map_err(E::custom)?;
        // parse_duration accepted it, so it starts with a run of digits that fits in u64.
        let digits = v.bytes().take_while(u8::is_ascii_digit).count();
        let number = v[..digits].parse().unwrap_or(0);
        Ok(RawDuration {
            value,
            as_read: format!("{v:?}"),
            number,
            in_seconds: v.ends_with('s') && !v.ends_with("ms"),
            bare: false,
            auto: false,
        })
    }
}

/// A size in bytes: a TOML integer or a string for [`parse_size`].
struct RawSize(u64);

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = RawSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as 1024, \"16k\" or \"1m\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(RawSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(RawSize)
            .map_err(|_| E::custom(format!("{v} is negative; sizes cannot be")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Float(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_size(v).map(RawSize).map_err(E::custom)
    }
}

/// Turns byte offsets into the `file:line: key` part of errors and warnings.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
    tree: &'a DeTable<'a>,
}

impl Locator<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: span.as_ref().map(|s| line_of(self.text, s.start)),
            key: span.and_then(|s| key_path(self.tree, s.start)),
            message: message.into(),
        }
    }

    /// For things that are absent, so have no span of their own.
    fn missing(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: None,
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// 1-based line of a byte offset; counts bytes, so an offset inside a character cannot panic.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted path of the deepest key whose key or value span covers `offset`. Leaf spans never
/// overlap, so the first match in a depth-first walk is the one; table spans (which toml sets to
/// their header) are checked only after their children.
fn key_path(tree: &DeTable<'_>, offset: usize) -> Option<String> {
    let mut path = String::new();
    path_in_table(tree, offset, &mut path).then_some(path)
}

fn path_in_table(table: &DeTable<'_>, offset: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        push_key(path, key.get_ref());
        if path_in_value(value, offset, path)
            || covers(&key.span(), offset)
            || covers(&value.span(), offset)
        {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn path_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => path_in_table(table, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                // Writing to a String cannot fail.
                let _ = write!(path, "[{i}]");
                if path_in_value(item, offset, path) || covers(&item.span(), offset) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        _ => false,
    }
}

/// Empty spans never cover: toml gives implicit tables empty spans at offset 0, which would
/// otherwise claim every error on the first line.
fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end
}

/// Keys are written as TOML would need them, so `nodes."127.0.0.1:9001"` reads back unambiguous.
fn push_key(path: &mut String, key: &str) {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        path.push_str(key);
    } else {
        let _ = write!(path, "{key:?}");
    }
}

/// Converts the raw tree into a [`Config`], checking what serde cannot and collecting warnings.
struct Builder<'a> {
    locator: Locator<'a>,
    warnings: Vec<Warning>,
}

impl Builder<'_> {
    fn config(&mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let workers = match raw.workers {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(w) => {
                let n = w.get_ref().0;
                if n == 0 || n > MAX_WORKERS {
                    return Err(self.locator.error(
                        Some(w.span()),
                        format!("must be between 1 and {MAX_WORKERS}, found {n} (omit it to use one per core)"),
                    ));
                }
                n
            }
        };
        let listen = self.listen(raw.listen)?;
        let client = match raw.client {
            Some(c) => self.client(c)?,
            None => ClientSettings::default(),
        };
        // With a config center, routes and upstreams may all come from etcd: the file may
        // define none.
        let from_center = raw.config_center.is_some();
        let raw_upstreams = raw.upstreams.filter(|u| !u.get_ref().is_empty());
        if raw_upstreams.is_none() && !from_center {
            return Err(self.locator.missing(
                "upstreams",
                "at least one upstream is required, e.g. [upstreams.backend]",
            ));
        }
        // Order of appearance is the upstream id; the map itself is sorted by name.
        let mut entries: Vec<_> = raw_upstreams
            .map(|u| u.into_inner().into_iter().collect())
            .unwrap_or_default();
        entries.sort_by_key(|(name, _)| name.span().start);
        let mut upstreams = Vec::with_capacity(entries.len());
        for (name, raw) in entries {
            upstreams.push(self.upstream(name.into_inner(), raw.into_inner())?);
        }
        let routes = if from_center && raw.routes.as_ref().is_none_or(|r| r.get_ref().is_empty()) {
            Vec::new()
        } else {
            self.routes(raw.routes, &upstreams)?
        };
        let admin = match raw.admin {
            None => None,
            Some(a) => {
                let text = a.addr.get_ref();
                let addr: SocketAddr = text.parse().map_err(|_| {
                    self.locator.error(
                        Some(a.addr.span()),
                        format!("expected an IP address and port such as \"127.0.0.1:9180\", found {text:?}"),
                    )
                })?;
                Some(Admin {
                    addr,
                    key: self.admin_key(addr, &a)?,
                })
            }
        };
        let access_log = match raw.access_log {
            None => None,
            Some(a) => {
                let span = a.span();
                match a.into_inner() {
                    RawAccessLog::Switch(false) => None,
                    RawAccessLog::Switch(true) => {
                        return Err(self.locator.error(Some(span), "give the file: access_log = { path = \"access.log\", format = \"combined\" }".to_owned()))
                    }
                    RawAccessLog::On(t) => {
                        let format = match t.format.as_deref() {
                            None | Some("combined") => crate::accesslog::Format::Combined,
                            Some("json") => crate::accesslog::Format::Json,
                            Some(other) => {
                                return Err(self.locator.error(Some(span), format!("format must be \"combined\" or \"json\", found {other:?}")))
                            }
                        };
                        if t.path.is_empty() {
                            return Err(self.locator.error(Some(span), "path must not be empty".to_owned()));
                        }
                        Some(AccessLogSettings { path: t.path.into(), format })
                    }
                }
            }
        };
        let config_center = match raw.config_center {
            None => None,
            Some(c) => Some(self.config_center(c)?),
        };
        Ok(Config {
            workers,
            pin_cores: raw.pin_cores.unwrap_or(false),
            max_client_connections: raw.max_client_connections.map_or(0, |c| c.0),
            shutdown_grace: self.duration(raw.shutdown_grace, Duration::from_secs(10))?,
            listen,
            client,
            upstreams,
            routes,
            admin,
            access_log,
            config_center,
        })
    }

    fn config_center(
        &mut self,
        raw: Spanned<RawConfigCenter>,
    ) -> Result<ConfigCenter, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        match &raw.kind {
            Some(k) if k.get_ref() == "etcd" => {}
            Some(k) => {
                return Err(self.locator.error(
                    Some(k.span()),
                    format!(
                        "the only config center is \"etcd\", found {:?}",
                        k.get_ref()
                    ),
                ))
            }
            None => {
                return Err(self
                    .locator
                    .missing("config_center.type", "required: type = \"etcd\""))
            }
        }
        let endpoints = match raw.endpoints {
            Some(e) if !e.get_ref().is_empty() => e.into_inner(),
            Some(e) => {
                return Err(self
                    .locator
                    .error(Some(e.span()), "at least one endpoint is required"))
            }
            None => {
                return Err(self.locator.missing(
                    "config_center.endpoints",
                    "required, e.g. endpoints = [\"http://127.0.0.1:2379\"]",
                ))
            }
        };
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                crate::etcd::Endpoint::parse(e.get_ref())
                    .map_err(|m| self.locator.error(Some(e.span()), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prefix = match raw.prefix {
            None => "/apisix".to_owned(),
            Some(p) => {
                let text = p.get_ref().trim_end_matches('/');
                if !text.starts_with('/') {
                    return Err(self.locator.error(
                        Some(p.span()),
                        format!("must start with '/' and name more than the root, e.g. \"/apisix\"; found {:?}", p.get_ref()),
                    ));
                }
                text.to_owned()
            }
        };
        let credentials = match (raw.user, raw.password) {
            (None, None) => None,
            (Some(user), Some(password)) if !user.is_empty() => {
                Some(crate::etcd::Credentials { user, password })
            }
            _ => return Err(self.locator.error(
                Some(span),
                "user and password go together: give a non-empty user and its password, or neither",
            )),
        };
        let timeout = self.duration(raw.timeout, Duration::from_secs(5))?;
        if timeout.is_zero() {
            return Err(self
                .locator
                .missing("config_center.timeout", "must be more than 0"));
        }
        let cache = match raw.cache {
            None => None,
            Some(c) if c.get_ref().is_empty() => {
                return Err(self.locator.error(Some(c.span()), "path must not be empty"))
            }
            Some(c) => Some(c.into_inner().into()),
        };
        Ok(ConfigCenter {
            endpoints,
            prefix,
            credentials,
            timeout,
            cache,
        })
    }

    fn listen(&self, raw: Option<Spanned<Vec<RawListen>>>) -> Result<Vec<Listen>, ConfigError> {
        let raw = match raw {
            Some(l) if !l.get_ref().is_empty() => l.into_inner(),
            _ => {
                return Err(self
                    .locator
                    .missing("listen", "at least one [[listen]] with an addr is required"))
            }
        };
        let mut listen: Vec<Listen> = Vec::with_capacity(raw.len());
        for l in raw {
            let text = l.addr.get_ref();
            let addr: SocketAddr = text.parse().map_err(|_| {
                self.locator.error(
                    Some(l.addr.span()),
                    format!("expected an IP address and port such as \"127.0.0.1:8080\", found {text:?}"),
                )
            })?;
            // Port 0 asks the kernel for a fresh port each time, so repeats are not clashes.
            if addr.port() != 0 && listen.iter().any(|seen| seen.addr == addr) {
                return Err(self
                    .locator
                    .error(Some(l.addr.span()), format!("{addr} is listed twice")));
            }
            let tls = self.listen_tls(l.tls, l.certs)?;
            listen.push(Listen { addr, tls });
        }
        Ok(listen)
    }

    /// A path from the file, relative to the configuration file's directory.
    fn path(&self, p: &str) -> std::path::PathBuf {
        let p = std::path::Path::new(p);
        match std::path::Path::new(self.locator.file).parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// `tls` and `certs` of a `[[listen]]`; the files are loaded here so that a bad certificate
    /// fails `--check` and a reload rather than the first handshake.
    fn listen_tls(
        &self,
        tls: Option<Spanned<RawCertFiles>>,
        certs: Option<Spanned<Vec<RawCertFiles>>>,
    ) -> Result<Option<ListenTls>, ConfigError> {
        let span = match (&tls, &certs) {
            (None, None) => return Ok(None),
            (Some(t), _) => t.span(),
            (None, Some(c)) => c.span(),
        };
        let files = |r: RawCertFiles| CertFiles {
            cert: self.path(&r.cert),
            key: self.path(&r.key),
        };
        let mut list: Vec<CertFiles> = tls.map(|t| files(t.into_inner())).into_iter().collect();
        list.extend(
            certs
                .map(Spanned::into_inner)
                .unwrap_or_default()
                .into_iter()
                .map(files),
        );
        if list.is_empty() {
            return Err(self.locator.error(
                Some(span),
                "certs is empty and no tls certificate is given".to_owned(),
            ));
        }
        let out = ListenTls { certs: list };
        crate::tls::server_config(&out).map_err(|e| self.locator.error(Some(span), e))?;
        Ok(Some(out))
    }

    fn client(&mut self, raw: RawClient) -> Result<ClientSettings, ConfigError> {
        let d = ClientSettings::default();
        let max_head_bytes = match raw.max_head_bytes {
            None => d.max_head_bytes,
            Some(size) => {
                let n = size.get_ref().0;
                match usize::try_from(n) {
                    Ok(n) if (MIN_HEAD_BYTES..=MAX_HEAD_BYTES).contains(&n) => n,
                    _ => {
                        return Err(self.locator.error(
                            Some(size.span()),
                            format!("must be between 1k and 1m (1024 to 1048576 bytes), found {n}"),
                        ))
                    }
                }
            }
        };
        Ok(ClientSettings {
            header_timeout: self.duration(raw.header_timeout, d.header_timeout)?,
            idle_timeout: self.duration(raw.idle_timeout, d.idle_timeout)?,
            body_timeout: self.duration(raw.body_timeout, d.body_timeout)?,
            send_timeout: self.duration(raw.send_timeout, d.send_timeout)?,
            max_requests: raw.max_requests.map_or(d.max_requests, |c| c.0),
            max_head_bytes,
            max_body_bytes: raw.max_body_bytes.map_or(d.max_body_bytes, |s| s.0),
            accept_bare_lf: raw.accept_bare_lf.unwrap_or(d.accept_bare_lf),
            ignore_abort: raw.ignore_abort.unwrap_or(d.ignore_abort),
        })
    }

    /// The `tls` block of an upstream: only with `scheme = "https"`, files loaded and every
    /// node's SNI checked here, so that a reload with a bad file changes nothing.
    fn upstream_tls(
        &mut self,
        name: &str,
        scheme: Scheme,
        raw: Option<Spanned<RawUpstreamTls>>,
        pass_host: &PassHost,
        nodes: &[Node],
    ) -> Result<Option<UpstreamTls>, ConfigError> {
        let span = raw.as_ref().map(Spanned::span);
        if scheme == Scheme::Http {
            return match span {
                Some(s) => Err(self
                    .locator
                    .error(Some(s), "tls needs scheme = \"https\"".to_owned())),
                None => Ok(None),
            };
        }
        let tls = match raw.map(Spanned::into_inner) {
            None => UpstreamTls::default(),
            Some(r) => UpstreamTls {
                sni: r.sni,
                verify: r.verify.unwrap_or(true),
                ca: r.ca.map(|p| self.path(&p)),
                client_cert: r.client_cert.map(|p| self.path(&p)),
                client_key: r.client_key.map(|p| self.path(&p)),
            },
        };
        for n in nodes {
            let sni = crate::tls::sni_for(&tls, pass_host, &n.host);
            crate::tls::load_client(&tls, sni)
                .and_then(|m| crate::tls::client_config(&m, 1))
                .map_err(|e| self.locator.error(span.clone(), e))?;
        }
        if !tls.verify {
            let at = self.prefix(span, &format!("upstreams.{name}.tls.verify"));
            self.warnings.push(Warning(format!(
                "{at}: false: the certificates of this upstream's nodes are not checked"
            )));
        }
        Ok(Some(tls))
    }

    fn upstream(&mut self, name: String, raw: RawUpstream) -> Result<Upstream, ConfigError> {
        let nodes_span = raw.nodes.span();
        let mut entries: Vec<_> = raw.nodes.into_inner().into_iter().collect();
        if entries.is_empty() {
            return Err(self.locator.error(
                Some(nodes_span),
                "at least one node is required, e.g. { \"127.0.0.1:9001\" = 1 }",
            ));
        }
        // Order of appearance, so the balancer's tie-breaking follows the file.
        entries.sort_by_key(|(host, _)| host.span().start);
        let mut nodes = Vec::with_capacity(entries.len());
        for (host, weight) in entries {
            let addr = self.resolve(&host)?;
            let w = weight.get_ref().0;
            if w == 0 {
                return Err(self.locator.error(
                    Some(weight.span()),
                    "weight must be at least 1 (remove the node to take it out)",
                ));
            }
            nodes.push(Node {
                addr,
                host: host.into_inner(),
                weight: w,
            });
        }
        let scheme = match &raw.scheme {
            None => Scheme::Http,
            Some(s) => match s.get_ref().as_str() {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                other => {
                    return Err(self.locator.error(
                        Some(s.span()),
                        format!("expected \"http\" or \"https\", found {other:?}"),
                    ))
                }
            },
        };
        let pass_host = self.pass_host(raw.pass_host, raw.upstream_host)?;
        let tls = self.upstream_tls(&name, scheme, raw.tls, &pass_host, &nodes)?;
        let t = UpstreamTimeouts::default();
        let timeout = match raw.timeout {
            None => t,
            Some(r) => UpstreamTimeouts {
                connect: self.duration(r.connect, t.connect)?,
                send: self.duration(r.send, t.send)?,
                read: self.duration(r.read, t.read)?,
            },
        };
        let p = PoolSettings::default();
        let keepalive_pool = match raw.keepalive_pool {
            None => p,
            Some(r) => PoolSettings {
                size: r.size.map_or(p.size, |c| c.0),
                requests: r.requests.map_or(p.requests, |c| c.0),
                idle_auto: r.idle_timeout.as_ref().is_some_and(|d| d.get_ref().auto),
                idle_timeout: match r.idle_timeout {
                    Some(d) if d.get_ref().auto => p.idle_timeout,
                    other => self.duration(other, p.idle_timeout)?,
                },
                max_lifetime: self.duration(r.max_lifetime, p.max_lifetime)?,
                min_idle: r.min_idle.map_or(p.min_idle, |c| c.0),
            },
        };
        let q = QueueSettings::default();
        let queue = match raw.queue {
            None => q,
            Some(r) => QueueSettings {
                size: r.size.map_or(q.size, |c| c.0),
                timeout: self.duration(r.timeout, q.timeout)?,
            },
        };
        // APISIX accepts `hash_on` and `key` beside any type and uses them only for chash.
        let balance = match &raw.kind {
            None => Balance::default(),
            Some(kind) => crate::balance::parse_balance(
                kind.get_ref(),
                raw.hash_on.as_ref().map(|h| h.get_ref().as_str()),
                raw.key.as_ref().map(|k| k.get_ref().as_str()),
            )
            .map_err(|e| {
                // Point at the key the message is about.
                let span = if e.starts_with("hash_on") {
                    raw.hash_on.as_ref().map(Spanned::span)
                } else if e.contains("variable") {
                    raw.key.as_ref().map(Spanned::span)
                } else {
                    Some(kind.span())
                };
                self.locator.error(span, e)
            })?,
        };
        let p = PassiveHealth::default();
        let passive = PassiveHealth {
            max_fails: raw.max_fails.map_or(p.max_fails, |c| c.0),
            fail_timeout: self.duration(raw.fail_timeout, p.fail_timeout)?,
        };
        Ok(Upstream {
            name,
            nodes,
            scheme,
            tls,
            pass_host,
            timeout,
            keepalive_pool,
            max_connections: raw.max_connections.map_or(0, |c| c.0),
            max_connecting: raw.max_connecting.map_or(0, |c| c.0),
            queue,
            balance,
            retries: raw.retries.map(|c| c.0),
            retry_timeout: self.duration(raw.retry_timeout, Duration::ZERO)?,
            passive,
            checks: self.checks(raw.checks)?,
            upgrade: match raw.upgrade {
                None => default_upgrade(),
                Some(list) => {
                    let mut out: Vec<String> = Vec::with_capacity(list.len());
                    for entry in list {
                        let name = upgrade_protocol(entry.get_ref())
                            .map_err(|m| self.locator.error(Some(entry.span()), m))?;
                        if !out.contains(&name) {
                            out.push(name);
                        }
                    }
                    out
                }
            },
        })
    }

    /// The admin key, checked here so that `--check`, start and reload all refuse an admin API
    /// that anyone on the network could use to rewrite the routes.
    fn admin_key(&self, addr: SocketAddr, raw: &RawAdmin) -> Result<Option<String>, ConfigError> {
        match &raw.key {
            Some(k) if k.get_ref().is_empty() => Err(self.locator.error(
                Some(k.span()),
                "must not be empty; omit it to run without a key on a loopback address",
            )),
            // It travels in a header line, so it must be a valid field value (RFC 9110 section
            // 5.5) without spaces, which clients would trim.
            Some(k) if k.get_ref().bytes().any(|b| !b.is_ascii_graphic()) => Err(self
                .locator
                .error(Some(k.span()), "must be visible ASCII without spaces")),
            Some(k) => Ok(Some(k.get_ref().clone())),
            None if !addr.ip().is_loopback() => Err(self.locator.error(
                Some(raw.addr.span()),
                format!(
                    "{addr} is not a loopback address, so the admin API needs a key: \
                     add key = \"...\" to [admin]"
                ),
            )),
            None => Ok(None),
        }
    }

    /// Resolves once, at load: a node's address is fixed for the life of the process.
    fn resolve(&self, host: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        let text = host.get_ref();
        let fail = |message: String| self.locator.error(Some(host.span()), message);
        // `ToSocketAddrs` would accept a name without a port only to fail with a vague message;
        // checking the shape first gives a better one and avoids a lookup.
        let has_port = text
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !has_port {
            return Err(fail(format!(
                "expected \"host:port\" such as \"127.0.0.1:9001\", found {text:?}"
            )));
        }
        match text.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .ok_or_else(|| fail(format!("{text:?} resolved to no address"))),
            Err(e) => Err(fail(format!("cannot resolve {text:?}: {e}"))),
        }
    }

    fn pass_host(
        &self,
        pass_host: Option<Spanned<String>>,
        upstream_host: Option<Spanned<String>>,
    ) -> Result<PassHost, ConfigError> {
        let mode = pass_host.as_ref().map_or("pass", |p| p.get_ref().as_str());
        let mode_span = pass_host.as_ref().map(Spanned::span);
        match (mode, upstream_host) {
            ("pass", None) => Ok(PassHost::Pass),
            ("node", None) => Ok(PassHost::Node),
            ("rewrite", Some(h)) => {
                let host = h.get_ref();
                // It goes into the Host header verbatim (RFC 9110 section 7.2: uri-host
                // [":" port]), so anything that could break or smuggle past the header line is
                // refused here rather than at request time.
                if host.is_empty() || host.bytes().any(|b| !b.is_ascii_graphic() || b == b'/') {
                    return Err(self.locator.error(
                        Some(h.span()),
                        format!("expected a host such as \"api.example.com\", found {host:?}"),
                    ));
                }
                Ok(PassHost::Rewrite(h.into_inner()))
            }
            ("rewrite", None) => Err(self.locator.error(
                mode_span,
                "pass_host = \"rewrite\" needs upstream_host, the Host to send",
            )),
            ("pass" | "node", Some(h)) => Err(self.locator.error(
                Some(h.span()),
                "upstream_host is only used with pass_host = \"rewrite\"",
            )),
            (other, _) => Err(self.locator.error(
                mode_span,
                format!("expected \"pass\", \"node\" or \"rewrite\", found {other:?}"),
            )),
        }
    }

    fn routes(
        &mut self,
        raw: Option<Spanned<Vec<RawRoute>>>,
        upstreams: &[Upstream],
    ) -> Result<Vec<Route>, ConfigError> {
        let raw = match raw {
            Some(r) if !r.get_ref().is_empty() => r.into_inner(),
            _ => {
                return Err(self.locator.missing(
                    "routes",
                    "at least one [[routes]] is required, e.g. uris = [\"/*\"] and an upstream",
                ))
            }
        };
        let mut used = vec![false; upstreams.len()];
        let mut routes = Vec::with_capacity(raw.len());
        for r in raw {
            if r.uris.get_ref().is_empty() {
                return Err(self.locator.error(
                    Some(r.uris.span()),
                    "at least one uri is required; \"/*\" matches every path",
                ));
            }
            let uris = r
                .uris
                .get_ref()
                .iter()
                .map(|u| {
                    uri_pattern(u.get_ref()).map_err(|m| self.locator.error(Some(u.span()), m))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let hosts = r
                .hosts
                .iter()
                .map(|h| route_host(h.get_ref()).map_err(|m| self.locator.error(Some(h.span()), m)))
                .collect::<Result<Vec<_>, _>>()?;
            let methods = r
                .methods
                .iter()
                .map(|m| {
                    let upper = m.get_ref().to_ascii_uppercase();
                    if crate::route::METHODS.contains(&upper.as_str()) {
                        Ok(upper)
                    } else {
                        Err(self.locator.error(
                            Some(m.span()),
                            format!(
                                "unknown method {:?}; expected one of {}",
                                m.get_ref(),
                                crate::route::METHODS.join(", ")
                            ),
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let enabled = match r.status.as_ref().map(|s| (*s.get_ref(), s.span())) {
                None | Some((1, _)) => true,
                Some((0, _)) => false,
                Some((n, span)) => {
                    return Err(self.locator.error(
                        Some(span),
                        format!("must be 1 (enabled) or 0 (disabled), found {n}"),
                    ))
                }
            };
            let vars = r
                .vars
                .into_iter()
                .map(|c| self.cond(c))
                .collect::<Result<Vec<_>, _>>()?;
            // APISIX ids are free-form; the default names the position, which a later explicit
            // id may collide with, so uniqueness is checked on the final ids.
            let id = match &r.id {
                None => format!("file-{}", routes.len() + 1),
                Some(id) if id.get_ref().is_empty() => {
                    return Err(self.locator.error(Some(id.span()), "must not be empty"))
                }
                Some(id) => id.get_ref().clone(),
            };
            if let Some(dup) = routes.iter().position(|r: &Route| r.id == id) {
                let span = r.id.as_ref().map_or(r.uris.span(), |i| i.span());
                return Err(self.locator.error(
                    Some(span),
                    format!(
                        "route id {id:?} is already used by route {} (ids default to \
                         \"file-\" and the route's position)",
                        dup + 1
                    ),
                ));
            }
            let name = r.upstream.get_ref();
            let Some(upstream) = upstreams.iter().position(|u| &u.name == name) else {
                let known: Vec<_> = upstreams.iter().map(|u| format!("{:?}", u.name)).collect();
                return Err(self.locator.error(
                    Some(r.upstream.span()),
                    format!("no upstream named {name:?}; defined: {}", known.join(", ")),
                ));
            };
            used[upstream] = true;
            routes.push(Route {
                id,
                uris,
                hosts,
                methods,
                priority: r.priority.unwrap_or(0),
                enabled,
                vars,
                upstream,
                websocket: r.enable_websocket,
            });
        }
        for (u, used) in upstreams.iter().zip(used) {
            if !used {
                let at = self.prefix(None, &format!("upstreams.{}", u.name));
                self.warnings
                    .push(Warning(format!("{at}: no route uses this upstream")));
            }
        }
        Ok(routes)
    }

    /// One `vars` entry, `[variable, operator, value]`, with errors pointing at the element
    /// at fault.
    fn cond(
        &self,
        raw: Spanned<Vec<Spanned<RawOperand>>>,
    ) -> Result<crate::route::Cond, ConfigError> {
        use crate::route::Operand;
        let span = raw.span();
        let mut items = raw.into_inner();
        if items.len() != 3 {
            return Err(self.locator.error(
                Some(span),
                format!(
                    "expected [variable, operator, value], e.g. [\"http_x_tenant\", \"==\", \"a\"]; \
                     found {} elements",
                    items.len()
                ),
            ));
        }
        let value = items.pop().expect("three elements");
        let op = items.pop().expect("three elements");
        let var = items.pop().expect("three elements");
        let text = |item: &Spanned<RawOperand>, what: &str| match &item.get_ref().0 {
            Operand::Str(s) => Ok(s.clone()),
            _ => Err(self
                .locator
                .error(Some(item.span()), format!("the {what} must be a string"))),
        };
        let var_name = text(&var, "variable")?;
        let op_name = text(&op, "operator")?;
        crate::route::parse_var(&var_name).map_err(|m| self.locator.error(Some(var.span()), m))?;
        let value_span = value.span();
        crate::route::parse_cond(&var_name, &op_name, value.into_inner().0).map_err(|m| {
            let at = if m.starts_with("unknown operator") {
                op.span()
            } else {
                value_span
            };
            self.locator.error(Some(at), m)
        })
    }

    /// The chosen value or the default, warning when it looks like a unit mistake.
    fn duration(
        &mut self,
        raw: Option<Spanned<RawDuration>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else { return Ok(default) };
        if raw.get_ref().auto {
            return Err(self.locator.error(
                Some(raw.span()),
                "\"auto\" is accepted only for keepalive_pool.idle_timeout".to_owned(),
            ));
        }
        let span = raw.span();
        let d = raw.into_inner();
        if d.value > SUSPICIOUS_DURATION || (d.bare && d.number >= SUSPICIOUS_BARE_SECONDS) {
            let key = key_path(self.locator.tree, span.start).unwrap_or_default();
            let at = self.prefix(Some(span), &key);
            let hint = if d.in_seconds {
                format!("did you mean {} ms? write \"{}ms\"", d.number, d.number)
            } else {
                "is that intended?".to_owned()
            };
            self.warnings.push(Warning(format!(
                "{at}: {} is {}; {hint}",
                d.as_read,
                spelled_out(d.value)
            )));
        }
        Ok(d.value)
    }

    fn prefix(&self, span: Option<Range<usize>>, key: &str) -> String {
        match span {
            Some(s) => format!(
                "{}:{}: {key}",
                self.locator.file,
                line_of(self.locator.text, s.start)
            ),
            None => format!("{}: {key}", self.locator.file),
        }
    }
}

/// APISIX's bounds for health-check counters (`successes`, `http_failures`, ...).
const MAX_CHECK_COUNT: u32 = 254;

impl Builder<'_> {
    /// `checks.active` into [`ActiveChecks`]; `checks` without `active` is no checking.
    fn checks(&mut self, raw: Option<RawChecks>) -> Result<Option<ActiveChecks>, ConfigError> {
        let Some(a) = raw.and_then(|c| c.active) else {
            return Ok(None);
        };
        let d = ActiveChecks::default();
        if let Some(k) = &a.kind {
            if k.get_ref() != "http" {
                return Err(self.locator.error(
                    Some(k.span()),
                    format!(
                        "only \"http\" checks are supported, found {:?}",
                        k.get_ref()
                    ),
                ));
            }
        }
        let http_path = match a.http_path {
            None => d.http_path,
            Some(p) => {
                // It goes into the probe's request line verbatim (RFC 9112 section 3.2:
                // origin-form), so anything that could break that line is refused here.
                let text = p.get_ref();
                if !text.starts_with('/') || text.bytes().any(|b| !b.is_ascii_graphic()) {
                    return Err(self.locator.error(
                        Some(p.span()),
                        format!("expected a path such as \"/health\", found {text:?}"),
                    ));
                }
                p.into_inner()
            }
        };
        let host = match a.host {
            None => None,
            Some(h) => {
                let text = h.get_ref();
                if text.is_empty() || text.bytes().any(|b| !b.is_ascii_graphic() || b == b'/') {
                    return Err(self.locator.error(
                        Some(h.span()),
                        format!("expected a host such as \"api.example.com\", found {text:?}"),
                    ));
                }
                Some(h.into_inner())
            }
        };
        let timeout = self.positive(a.timeout, d.timeout)?;
        let interval = self.positive(a.interval, d.healthy_interval)?;
        let (healthy, unhealthy) = (a.healthy, a.unhealthy);
        let (mut healthy_interval, mut healthy_successes, mut healthy_statuses) =
            (interval, d.healthy_successes, d.healthy_statuses);
        if let Some(h) = healthy {
            healthy_interval = self.positive(h.interval, interval)?;
            healthy_successes = self.check_count(h.successes, healthy_successes)?;
            if let Some(list) = h.http_statuses {
                let span = list.span();
                healthy_statuses = self.statuses(list)?;
                if healthy_statuses.is_empty() {
                    return Err(self.locator.error(
                        Some(span),
                        "at least one status is needed, or a node could never come back",
                    ));
                }
            }
        }
        let mut out = ActiveChecks {
            http_path,
            host,
            timeout,
            healthy_interval,
            healthy_successes,
            healthy_statuses,
            unhealthy_interval: interval,
            ..d
        };
        if let Some(u) = unhealthy {
            out.unhealthy_interval = self.positive(u.interval, interval)?;
            let all = self.check_count(u.failures, d.unhealthy_failures)?;
            out.unhealthy_failures = self.check_count(u.http_failures, all)?;
            out.tcp_failures = self.check_count(u.tcp_failures, all)?;
            out.timeouts = self.check_count(u.timeouts, all)?;
            if let Some(list) = u.http_statuses {
                out.unhealthy_statuses = self.statuses(list)?;
            }
        }
        Ok(Some(out))
    }

    /// A duration that must not be zero (a zero interval would probe in a loop).
    fn positive(
        &mut self,
        raw: Option<Spanned<RawDuration>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let span = raw.as_ref().map(Spanned::span);
        let d = self.duration(raw, default)?;
        if d.is_zero() {
            return Err(self
                .locator
                .error(span, "must be longer than zero, e.g. \"1s\""));
        }
        Ok(d)
    }

    fn check_count(
        &self,
        raw: Option<Spanned<Count<u32>>>,
        default: u32,
    ) -> Result<u32, ConfigError> {
        let Some(c) = raw else { return Ok(default) };
        let n = c.get_ref().0;
        if n == 0 || n > MAX_CHECK_COUNT {
            return Err(self.locator.error(
                Some(c.span()),
                format!("must be between 1 and {MAX_CHECK_COUNT}, found {n}"),
            ));
        }
        Ok(n)
    }

    fn statuses(&self, raw: Spanned<Vec<Spanned<Count<u16>>>>) -> Result<Vec<u16>, ConfigError> {
        let mut out = Vec::with_capacity(raw.get_ref().len());
        for s in raw.into_inner() {
            let code = s.get_ref().0;
            if !(200..=599).contains(&code) {
                return Err(self.locator.error(
                    Some(s.span()),
                    format!("expected a status between 200 and 599, found {code}"),
                ));
            }
            out.push(code);
        }
        Ok(out)
    }
}

/// A long duration in days, hours and minutes, so a warning shows what was actually asked for.
fn spelled_out(d: Duration) -> String {
    let minutes = d.as_secs() / 60;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    if days > 0 {
        format!("{days}d {hours}h {minutes}m")
    } else {
        format!("{hours}h {minutes}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[listen]]
addr = "127.0.0.1:0"

[upstreams.u]
nodes = { "127.0.0.1:9001" = 1 }

[[routes]]
uris = ["/*"]
upstream = "u"
"#;

    fn parse(text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
        Config::parse(text, "t.toml")
    }

    fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_when_keys_are_omitted() {
        let (config, warnings) = parse(MINIMAL).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.workers, cores);
        assert!(!config.pin_cores);
        assert_eq!(
            config.listen,
            vec![Listen {
                addr: "127.0.0.1:0".parse().unwrap(),
                tls: None,
            }]
        );
        assert_eq!(config.client, ClientSettings::default());
        assert_eq!(config.client.header_timeout, Duration::from_secs(10));
        assert_eq!(config.client.idle_timeout, Duration::from_secs(75));
        assert_eq!(config.client.max_head_bytes, 16384);
        let u = &config.upstreams[0];
        assert_eq!(u.name, "u");
        assert_eq!(
            u.nodes,
            vec![Node {
                addr: "127.0.0.1:9001".parse().unwrap(),
                host: "127.0.0.1:9001".into(),
                weight: 1
            }]
        );
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.pass_host, PassHost::Pass);
        assert_eq!(u.timeout.connect, Duration::from_secs(6));
        assert_eq!(u.timeout.send, Duration::from_secs(60));
        assert_eq!(u.timeout.read, Duration::from_secs(60));
        assert_eq!(u.keepalive_pool.size, 320);
        assert_eq!(u.keepalive_pool.requests, 1000);
        assert_eq!(u.keepalive_pool.idle_timeout, Duration::from_secs(60));
        assert_eq!(u.keepalive_pool.max_lifetime, Duration::from_secs(3600));
        assert_eq!((u.max_connections, u.max_connecting), (0, 0));
        assert_eq!(
            u.queue,
            QueueSettings {
                size: 1024,
                timeout: Duration::from_secs(1)
            }
        );
        assert_eq!(
            config.routes,
            vec![Route {
                id: "file-1".into(),
                uris: vec![UriPattern::Prefix("/".into())],
                hosts: vec![],
                methods: vec![],
                priority: 0,
                enabled: true,
                vars: vec![],
                upstream: 0,
                websocket: None,
            }]
        );
    }

    #[test]
    fn access_log_table_or_false() {
        let base = "[[listen]]\naddr = \"127.0.0.1:0\"\n[upstreams.u]\nnodes = { \"127.0.0.1:1\" = 1 }\n[[routes]]\nuris = [\"/*\"]\nupstream = \"u\"\n";
        let on = format!("access_log = {{ path = \"/tmp/a.log\", format = \"json\" }}\n{base}");
        let c = Config::parse(&on, "t.toml").expect("json log").0;
        assert_eq!(
            c.access_log,
            Some(AccessLogSettings {
                path: "/tmp/a.log".into(),
                format: crate::accesslog::Format::Json
            })
        );
        let off = format!("access_log = false\n{base}");
        assert_eq!(
            Config::parse(&off, "t.toml").expect("off").0.access_log,
            None
        );
        let bad = format!("access_log = {{ path = \"a\", format = \"xml\" }}\n{base}");
        let e = Config::parse(&bad, "t.toml").expect_err("bad format");
        assert_eq!(e.line(), Some(1));
        assert!(e.to_string().contains("combined"), "{e}");
    }

    #[test]
    fn idle_timeout_auto_is_accepted_only_for_the_pool() {
        let base =
            "[[listen]]\naddr = \"127.0.0.1:0\"\n[upstreams.u]\nnodes = { \"127.0.0.1:1\" = 1 }\n";
        let route = "[[routes]]\nuris = [\"/*\"]\nupstream = \"u\"\n";
        let ok = format!("{base}keepalive_pool = {{ idle_timeout = \"auto\" }}\n{route}");
        let (c, _) = Config::parse(&ok, "t.toml").expect("auto pool idle timeout");
        assert!(c.upstreams[0].keepalive_pool.idle_auto);
        assert_eq!(
            c.upstreams[0].keepalive_pool.idle_timeout,
            Duration::from_secs(60),
            "the ceiling stays the default"
        );
        let bad = format!("{base}timeout = {{ read = \"auto\" }}\n{route}");
        let e = Config::parse(&bad, "t.toml").expect_err("auto read timeout");
        assert_eq!(e.line(), Some(5));
        assert!(
            e.to_string()
                .contains("only for keepalive_pool.idle_timeout"),
            "{e}"
        );
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
workers = 3
pin_cores = true
max_client_connections = 9
shutdown_grace = "3s"
[[listen]]
addr = "127.0.0.1:8080"
[[listen]]
addr = "[::1]:8081"
[client]
header_timeout = "1500ms"
idle_timeout = 5
body_timeout = "2m"
send_timeout = "1h"
max_requests = 7
max_head_bytes = "32k"
max_body_bytes = "1g"
[upstreams.zeta]
nodes = { "127.0.0.1:9002" = 2, "127.0.0.1:9001" = 1 }
scheme = "http"
pass_host = "rewrite"
upstream_host = "api.example.com"
timeout = { connect = 180, send = "3s", read = "4s" }
keepalive_pool = { size = 10, requests = 11, idle_timeout = "12s", max_lifetime = "13m", min_idle = 2 }
max_connections = 14
max_connecting = 15
queue = { size = 16, timeout = "17ms" }
[upstreams.alpha]
nodes = { "localhost:9003" = 1 }
pass_host = "node"
[[routes]]
uris = ["/api/*", "/health"]
hosts = ["Example.COM", "[::1]"]
upstream = "alpha"
[[routes]]
uris = ["/*"]
upstream = "zeta"
"#;
        let (c, warnings) = parse(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!((c.workers, c.pin_cores), (3, true));
        assert_eq!(c.listen[1].addr, "[::1]:8081".parse().unwrap());
        assert_eq!(
            c.client,
            ClientSettings {
                header_timeout: Duration::from_millis(1500),
                idle_timeout: Duration::from_secs(5),
                body_timeout: Duration::from_secs(120),
                send_timeout: Duration::from_secs(3600),
                max_requests: 7,
                max_head_bytes: 32 * 1024,
                max_body_bytes: 1 << 30,
                accept_bare_lf: false,
                ignore_abort: false,
            }
        );
        assert_eq!(c.max_client_connections, 9);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        // Order of appearance, not alphabetical: routes refer to upstreams by this index.
        assert_eq!(c.upstreams[0].name, "zeta");
        assert_eq!(c.upstreams[1].name, "alpha");
        let z = &c.upstreams[0];
        let hosts: Vec<_> = z
            .nodes
            .iter()
            .map(|n| (n.host.as_str(), n.weight))
            .collect();
        assert_eq!(hosts, [("127.0.0.1:9002", 2), ("127.0.0.1:9001", 1)]);
        assert_eq!(z.pass_host, PassHost::Rewrite("api.example.com".into()));
        assert_eq!(
            z.timeout,
            UpstreamTimeouts {
                connect: Duration::from_secs(180),
                send: Duration::from_secs(3),
                read: Duration::from_secs(4)
            }
        );
        assert_eq!(
            z.keepalive_pool,
            PoolSettings {
                size: 10,
                requests: 11,
                idle_timeout: Duration::from_secs(12),
                idle_auto: false,
                max_lifetime: Duration::from_secs(13 * 60),
                min_idle: 2,
            }
        );
        assert_eq!((z.max_connections, z.max_connecting), (14, 15));
        assert_eq!(
            z.queue,
            QueueSettings {
                size: 16,
                timeout: Duration::from_millis(17)
            }
        );
        let a = &c.upstreams[1];
        assert_eq!(a.pass_host, PassHost::Node);
        assert_eq!(a.nodes[0].host, "localhost:9003");
        assert_eq!(a.nodes[0].addr.port(), 9003);
        assert!(a.nodes[0].addr.ip().is_loopback());
        assert_eq!(
            c.routes[0],
            Route {
                id: "file-1".into(),
                uris: vec![
                    UriPattern::Prefix("/api/".into()),
                    UriPattern::Exact("/health".into())
                ],
                hosts: vec![
                    HostPattern::Exact("example.com".into()),
                    HostPattern::Exact("[::1]".into())
                ],
                methods: vec![],
                priority: 0,
                enabled: true,
                vars: vec![],
                upstream: 1,
                websocket: None
            }
        );
        assert_eq!(c.routes[1].upstream, 0);
    }

    /// Balancing, retries and passive health as APISIX and nginx spell them, with defaults.
    #[test]
    fn upstream_balance_retries_and_passive_health() {
        let up = |lines: &str| {
            let text = format!(
                "[[listen]]\naddr = \"127.0.0.1:0\"\n[upstreams.u]\n\
                 nodes = {{ \"127.0.0.1:9001\" = 1, \"127.0.0.1:9002\" = 1 }}\n{lines}\n\
                 [[routes]]\nuris = [\"/*\"]\nupstream = \"u\"\n"
            );
            parse(&text).map(|(c, _)| c.upstreams[0].clone())
        };
        let d = up("").unwrap();
        assert_eq!(d.balance, Balance::RoundRobin);
        assert_eq!((d.retries, d.retry_timeout), (None, Duration::ZERO));
        assert_eq!(d.passive, PassiveHealth::default());
        assert_eq!(
            (d.passive.max_fails, d.passive.fail_timeout),
            (1, Duration::from_secs(10)),
            "nginx's defaults"
        );
        use crate::route::Var;
        let table: &[(&str, Balance)] = &[
            (
                "type = \"roundrobin\"\nhash_on = \"vars\"",
                Balance::RoundRobin,
            ),
            ("type = \"least_conn\"", Balance::LeastConn),
            ("type = \"ewma\"", Balance::Ewma),
            (
                "type = \"chash\"\nkey = \"remote_addr\"",
                Balance::Chash {
                    key: Var::RemoteAddr,
                },
            ),
            (
                "type = \"chash\"\nhash_on = \"header\"\nkey = \"X_Tenant\"",
                Balance::Chash {
                    key: Var::Header("x-tenant".into()),
                },
            ),
            (
                "type = \"chash\"\nhash_on = \"cookie\"\nkey = \"sid\"",
                Balance::Chash {
                    key: Var::Cookie("sid".into()),
                },
            ),
            (
                "type = \"chash\"\nhash_on = \"vars\"\nkey = \"arg_user\"",
                Balance::Chash {
                    key: Var::Arg("user".into()),
                },
            ),
        ];
        for (lines, want) in table {
            assert_eq!(&up(lines).unwrap().balance, want, "{lines}");
        }
        let u =
            up("retries = 0\nretry_timeout = \"2s\"\nmax_fails = 3\nfail_timeout = 30").unwrap();
        assert_eq!(
            (u.retries, u.retry_timeout),
            (Some(0), Duration::from_secs(2))
        );
        assert_eq!(
            u.passive,
            PassiveHealth {
                max_fails: 3,
                fail_timeout: Duration::from_secs(30)
            }
        );
        let errors: &[(&str, &str, &str)] = &[
            (
                "type = \"random\"",
                "upstreams.u.type",
                "expected \"roundrobin\"",
            ),
            ("type = \"chash\"", "upstreams.u.type", "needs a key"),
            (
                "type = \"chash\"\nhash_on = \"body\"\nkey = \"x\"",
                "upstreams.u.hash_on",
                "expected \"vars\", \"header\" or \"cookie\"",
            ),
            (
                "type = \"chash\"\nkey = \"nope\"",
                "upstreams.u.key",
                "unknown variable",
            ),
            ("retries = -1", "upstreams.u.retries", "non-negative"),
            ("max_fails = \"x\"", "upstreams.u.max_fails", "non-negative"),
            (
                "fail_timeout = \"10y\"",
                "upstreams.u.fail_timeout",
                "unknown unit",
            ),
            (
                "retry_timeout = \"auto\"",
                "upstreams.u.retry_timeout",
                "auto",
            ),
        ];
        for (lines, key, msg) in errors {
            let e = up(lines).expect_err(lines).to_string();
            assert!(e.contains(key) && e.contains(msg), "{lines}: {e}");
        }
    }

    #[test]
    fn route_keys() {
        use crate::route::{Cond, Number, Op, Var};
        let text = format!(
            "{MINIMAL}{}",
            r#"
[[routes]]
id = "00000000000000000956"
uris = ["/pki/*", "/a*", "/x"]
hosts = ["*.Example.com", "api.test"]
methods = ["get", "POST"]
priority = -3
status = 0
vars = [
    ["http_X-SW-Authorization-TenantCode", "==", "tenant"],
    ["http_x_sw_authorization_appcode", "IN", ["", "testapp"]],
    ["arg_n", "!>", 5],
    ["cookie_k", "~=", 1.5],
]
upstream = "u"

[[routes]]
uris = ["/*"]
upstream = "u"
"#
        );
        let (c, _) = parse(&text).unwrap();
        let r = &c.routes[1];
        assert_eq!(r.id, "00000000000000000956");
        assert_eq!(
            r.uris,
            [
                UriPattern::Prefix("/pki/".into()),
                UriPattern::Prefix("/a".into()),
                UriPattern::Exact("/x".into())
            ]
        );
        assert_eq!(
            r.hosts,
            [
                HostPattern::Wildcard(".example.com".into()),
                HostPattern::Exact("api.test".into())
            ]
        );
        assert_eq!(r.methods, ["GET", "POST"]);
        assert_eq!((r.priority, r.enabled), (-3, false));
        let tenant = Var::Header("x-sw-authorization-tenantcode".into());
        assert_eq!(
            r.vars,
            [
                Cond {
                    var: tenant,
                    negate: false,
                    op: Op::Eq("tenant".into())
                },
                Cond {
                    var: Var::Header("x-sw-authorization-appcode".into()),
                    negate: false,
                    op: Op::In(vec!["".into(), "testapp".into()])
                },
                Cond {
                    var: Var::Arg("n".into()),
                    negate: true,
                    op: Op::Gt(Number("5".into()))
                },
                Cond {
                    var: Var::Cookie("k".into()),
                    negate: false,
                    op: Op::Ne("1.5".into())
                },
            ]
        );
        // The defaults: the position as id, enabled, priority 0, any method, no conditions.
        let d = &c.routes[2];
        assert_eq!(d.id, "file-3");
        assert!(d.enabled && d.priority == 0 && d.methods.is_empty() && d.vars.is_empty());
        assert_eq!(d.uris, [UriPattern::Prefix("/".into())]);
    }

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("0s", Duration::ZERO),
            ("1500ms", Duration::from_millis(1500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("8760h", MAX_DURATION),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("10", "no unit"),
            ("-1s", "negative"),
            ("1.5s", "fraction"),
            ("10x", "unknown unit"),
            ("10S", "unknown unit"),
            ("10 s", "unknown unit"),
            ("", "expected a whole number"),
            ("s", "expected a whole number"),
            (" 10s", "expected a whole number"),
            ("99999999999999999999s", "longest"),
            ("18446744073709551615h", "longest"),
            ("8761h", "longest"),
        ];
        for (text, want) in bad {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1024", 1024),
            ("16k", 16 * 1024),
            ("16K", 16 * 1024),
            ("1m", 1 << 20),
            ("2g", 2 << 30),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "expected a whole number"),
            ("k", "expected a whole number"),
            ("-1", "negative"),
            ("1.5k", "unknown suffix"),
            ("16kb", "unknown suffix"),
            ("10x", "unknown suffix"),
            ("99999999999999999999", "too large"),
            ("17179869184g", "too large"),
        ];
        for (text, want) in bad {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn durations_and_sizes_in_the_file() {
        let with = |line: &str| format!("{MINIMAL}[client]\n{line}\n");
        let (c, _) = parse(&with("header_timeout = 3")).unwrap();
        assert_eq!(c.client.header_timeout, Duration::from_secs(3));
        let (c, _) = parse(&with("max_body_bytes = 100")).unwrap();
        assert_eq!(c.client.max_body_bytes, 100);
        let (c, _) = parse(&with("max_head_bytes = 1024")).unwrap();
        assert_eq!(c.client.max_head_bytes, 1024);
        let (c, _) = parse(&with("max_head_bytes = \"1m\"")).unwrap();
        assert_eq!(c.client.max_head_bytes, 1 << 20);
        for (line, want) in [
            ("header_timeout = -1", "negative"),
            ("header_timeout = 1.5", "fraction"),
            ("header_timeout = \"10\"", "no unit"),
            ("header_timeout = true", "expected a duration"),
            ("header_timeout = 99999999999", "longest"),
            ("max_body_bytes = -1", "negative"),
            ("max_body_bytes = 1.5", "expected a size"),
            ("max_body_bytes = \"1t\"", "unknown suffix"),
        ] {
            let e = err(&with(line));
            assert_eq!(
                e.key(),
                Some(&*format!("client.{}", line.split(' ').next().unwrap()))
            );
            assert!(e.message().contains(want), "{line}: {e}");
        }
    }

    /// Each kind of error, with the line and key it must point at.
    #[test]
    fn errors_name_line_and_key() {
        let table: &[(&str, usize, &str, &str)] = &[
            // Unknown keys at every level, including inside inline tables.
            ("bogus = 1\n", 1, "bogus", "unknown field `bogus`"),
            ("[client]\nheader_timeot = \"1s\"\n", 12, "client.header_timeot", "unknown field"),
            (
                "[upstreams.u.timeout]\nconect = 1\n",
                12,
                "upstreams.u.timeout.conect",
                "unknown field",
            ),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\nqueue = { sise = 1 }\n",
                13,
                "upstreams.v.queue.sise",
                "unknown field",
            ),
            // Wrong types.
            ("workers = \"two\"\n", 1, "workers", "expected a non-negative integer, found \"two\""),
            ("workers = -2\n", 1, "workers", "expected a non-negative integer, found -2"),
            ("pin_cores = 1\n", 1, "pin_cores", "invalid type"),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\nkeepalive_pool = { size = \"x\" }\n",
                13,
                "upstreams.v.keepalive_pool.size",
                "expected a non-negative integer, found \"x\"",
            ),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\nmax_connections = 4294967296\n",
                13,
                "upstreams.v.max_connections",
                "too large",
            ),
            // Bad durations and sizes.
            ("[client]\nidle_timeout = \"10x\"\n", 12, "client.idle_timeout", "unknown unit"),
            (
                "[upstreams.u.keepalive_pool]\nmax_lifetime = \"1.5h\"\n",
                12,
                "upstreams.u.keepalive_pool.max_lifetime",
                "fraction",
            ),
            ("[client]\nmax_body_bytes = \"lots\"\n", 12, "client.max_body_bytes", "whole number"),
            ("[client]\nmax_head_bytes = \"2m\"\n", 12, "client.max_head_bytes", "between 1k and 1m"),
            ("[client]\nmax_head_bytes = 1023\n", 12, "client.max_head_bytes", "between 1k and 1m"),
            ("workers = 0\n", 1, "workers", "between 1 and"),
            // Bad addresses.
            ("[[listen]]\naddr = \"localhost:80\"\n", 12, "listen[1].addr", "IP address and port"),
            ("[[listen]]\naddr = \"127.0.0.1:0\"\n[[listen]]\naddr = \"127.0.0.1:80\"\n[[listen]]\naddr = \"127.0.0.1:80\"\n", 16, "listen[3].addr", "listed twice"),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1\" = 1 }\n",
                12,
                "upstreams.v.nodes.\"127.0.0.1\"",
                "host:port",
            ),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:99999\" = 1 }\n",
                12,
                "upstreams.v.nodes.\"127.0.0.1:99999\"",
                "host:port",
            ),
            // Node sets and weights.
            ("[upstreams.v]\nnodes = {}\n", 12, "upstreams.v.nodes", "at least one node"),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 0 }\n",
                12,
                "upstreams.v.nodes.\"127.0.0.1:1\"",
                "weight must be at least 1",
            ),
            ("[upstreams.v]\nscheme = \"http\"\n", 11, "upstreams.v", "missing field `nodes`"),
            // Scheme and Host handling.
            ("[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\ntls = { verify = false }\n", 13, "upstreams.v.tls", "needs scheme"),
            ("[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\nscheme = \"https\"\ntls = { client_cert = \"/nonexistent.pem\" }\n", 14, "upstreams.v.tls", "go together"),
            ("[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\nscheme = \"https\"\ntls = { ca = \"/nonexistent/ca.pem\" }\n", 14, "upstreams.v.tls", "cannot read certificates"),
            ("[[listen]]\naddr = \"127.0.0.1:0\"\ntls = { cert = \"/nonexistent.pem\", key = \"/nonexistent.key\" }\n", 13, "listen[1].tls", "cannot read certificates"),
            ("[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\nscheme = \"ftp\"\n", 13, "upstreams.v.scheme", "expected \"http\" or \"https\""),
            ("[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\npass_host = \"keep\"\n", 13, "upstreams.v.pass_host", "expected \"pass\""),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\npass_host = \"rewrite\"\n",
                13,
                "upstreams.v.pass_host",
                "needs upstream_host",
            ),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\npass_host = \"node\"\nupstream_host = \"a.example\"\n",
                14,
                "upstreams.v.upstream_host",
                "only used with pass_host",
            ),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\npass_host = \"rewrite\"\nupstream_host = \"a b\"\n",
                14,
                "upstreams.v.upstream_host",
                "expected a host",
            ),
            (
                "[upstreams.v]\nnodes = { \"127.0.0.1:1\" = 1 }\nupstream_host = \"a.example\"\n",
                13,
                "upstreams.v.upstream_host",
                "only used with pass_host",
            ),
            // Routes.
            (
                "[[routes]]\nuris = [\"/x\"]\nupstream = \"nope\"\n",
                13,
                "routes[1].upstream",
                "no upstream named \"nope\"; defined: \"u\"",
            ),
            ("[[routes]]\nuris = [\"/\", \"x\"]\nupstream = \"u\"\n", 12, "routes[1].uris[1]", "must start with \"/\""),
            ("[[routes]]\nuris = [\"/a*b\"]\nupstream = \"u\"\n", 12, "routes[1].uris[0]", "only allowed at the end"),
            ("[[routes]]\nuris = [\"/user/:id\"]\nupstream = \"u\"\n", 12, "routes[1].uris[0]", "path parameters"),
            ("[[routes]]\nuris = [\"/\"]\nhosts = [\"a.*.test\"]\nupstream = \"u\"\n", 13, "routes[1].hosts[0]", "leading \"*.\""),
            ("[[routes]]\nuris = [\"/\"]\nhosts = [\"*\"]\nupstream = \"u\"\n", 13, "routes[1].hosts[0]", "leading \"*.\""),
            ("[[routes]]\nuris = [\"/\"]\nmethods = [\"GET\", \"FETCH\"]\nupstream = \"u\"\n", 13, "routes[1].methods[1]", "unknown method \"FETCH\""),
            ("[[routes]]\nuris = [\"/\"]\nstatus = 2\nupstream = \"u\"\n", 13, "routes[1].status", "1 (enabled) or 0"),
            ("[[routes]]\nuris = [\"/\"]\npriority = \"high\"\nupstream = \"u\"\n", 13, "routes[1].priority", "invalid type"),
            ("[[routes]]\nid = \"file-1\"\nuris = [\"/\"]\nupstream = \"u\"\n", 12, "routes[1].id", "already used by route 1"),
            ("[[routes]]\nuris = [\"/\"]\nvars = [[\"nope\", \"==\", \"a\"]]\nupstream = \"u\"\n", 13, "routes[1].vars[0][0]", "unknown variable"),
            ("[[routes]]\nuris = [\"/\"]\nvars = [[\"arg_a\", \"=\", \"a\"]]\nupstream = \"u\"\n", 13, "routes[1].vars[0][1]", "unknown operator"),
            ("[[routes]]\nuris = [\"/\"]\nvars = [[\"arg_a\", \"IN\", \"a\"]]\nupstream = \"u\"\n", 13, "routes[1].vars[0][2]", "takes a list"),
            ("[[routes]]\nuris = [\"/\"]\nvars = [[\"arg_a\", \">\", \"many\"]]\nupstream = \"u\"\n", 13, "routes[1].vars[0][2]", "finite number"),
            ("[[routes]]\nuris = [\"/\"]\nvars = [[\"arg_a\", \"~~\", \"(\"]]\nupstream = \"u\"\n", 13, "routes[1].vars[0][2]", "invalid regex"),
            ("[[routes]]\nuris = [\"/\"]\nvars = [[\"arg_a\", \"==\", true]]\nupstream = \"u\"\n", 13, "routes[1].vars[0][2]", "a string, a number or a list"),
            ("[[routes]]\nuris = [\"/\"]\nvars = [[\"arg_a\", \"==\"]]\nupstream = \"u\"\n", 13, "routes[1].vars[0]", "found 2 elements"),
            ("[[routes]]\nuris = [\"/\"]\nvars = [[1, \"==\", \"a\"]]\nupstream = \"u\"\n", 13, "routes[1].vars[0][0]", "variable must be a string"),
            ("[[routes]]\nuris = [\"/a b\"]\nupstream = \"u\"\n", 12, "routes[1].uris[0]", "space"),
            ("[[routes]]\nuris = []\nupstream = \"u\"\n", 12, "routes[1].uris", "at least one uri"),
            ("[[routes]]\nupstream = \"u\"\n", 11, "routes[1]", "missing field `uris`"),
            (
                "[[routes]]\nuris = [\"/\"]\nhosts = [\"a.example:80\"]\nupstream = \"u\"\n",
                13,
                "routes[1].hosts[0]",
                "without the port",
            ),
        ];
        for (extra, line, key, message) in table {
            // Top-level keys must come before the first table header, so those extras go first
            // (line 1); tables go after MINIMAL, which is ten lines, so they start on line 11.
            let text = if extra.starts_with('[') {
                format!("{MINIMAL}{extra}")
            } else {
                format!("{extra}{MINIMAL}")
            };
            let e = err(&text);
            let ctx = format!("{extra:?} -> {e}");
            assert_eq!(e.file(), "t.toml", "{ctx}");
            assert_eq!(e.line(), Some(*line), "{ctx}");
            assert_eq!(e.key(), Some(*key), "{ctx}");
            assert!(e.message().contains(message), "{ctx}");
        }
    }

    #[test]
    fn error_display_reads_file_line_key_message() {
        let text = "[[listen]]\naddr = \"127.0.0.1:0\"\n[upstreams.backend]\nnodes = { \"127.0.0.1:1\" = 1 }\nkeepalive_pool = { size = \"x\" }\n";
        let e = Config::parse(text, "examples/bad.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "examples/bad.toml:5: upstreams.backend.keepalive_pool.size: \
             expected a non-negative integer, found \"x\""
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = err("[[listen]]\naddr = \"127.0.0.1:0\"\n[upstreams.u\n");
        assert_eq!(e.line(), Some(3));
        assert_eq!(e.key(), None);
        assert!(e.to_string().starts_with("t.toml:3: "), "{e}");
        // A key defined twice is a TOML error too.
        let e = err(&format!(
            "{MINIMAL}[client]\nmax_requests = 1\nmax_requests = 2\n"
        ));
        assert_eq!(e.line(), Some(13), "{e}");
    }

    #[test]
    fn missing_sections_are_named() {
        let listen = "[[listen]]\naddr = \"127.0.0.1:0\"\n";
        let upstream = "[upstreams.u]\nnodes = { \"127.0.0.1:1\" = 1 }\n";
        let route = "[[routes]]\nuris = [\"/*\"]\nupstream = \"u\"\n";
        for (text, key) in [
            (format!("{upstream}{route}"), "listen"),
            (format!("listen = []\n{upstream}{route}"), "listen"),
            (format!("{listen}{route}"), "upstreams"),
            (format!("upstreams = {{}}\n{listen}{route}"), "upstreams"),
            (format!("{listen}{upstream}"), "routes"),
        ] {
            let e = err(&text);
            assert_eq!((e.key(), e.line()), (Some(key), None), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("t.toml: {key}: at least one")),
                "{e}"
            );
        }
    }

    #[test]
    fn long_durations_warn() {
        let text = format!(
            "{MINIMAL}[client]\nidle_timeout = 60000\n\n[upstreams.u.keepalive_pool]\nmax_lifetime = \"48h\"\nidle_timeout = \"86401s\"\n"
        );
        let (config, warnings) = parse(&text).unwrap();
        assert_eq!(config.client.idle_timeout, Duration::from_secs(60000));
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "t.toml:12: client.idle_timeout: 60000 is 16h 40m; \
                 did you mean 60000 ms? write \"60000ms\"",
                "t.toml:16: upstreams.u.keepalive_pool.idle_timeout: \"86401s\" is 1d 0h 0m; \
                 did you mean 86401 ms? write \"86401ms\"",
                "t.toml:15: upstreams.u.keepalive_pool.max_lifetime: \"48h\" is 2d 0h 0m; \
                 is that intended?",
            ]
        );
        // Exactly a day written with a unit is fine, and so are modest bare seconds.
        for line in [
            "idle_timeout = \"24h\"",
            "idle_timeout = 9999",
            "idle_timeout = \"10000s\"",
        ] {
            let (_, warnings) = parse(&format!("{MINIMAL}[client]\n{line}\n")).unwrap();
            assert!(warnings.is_empty(), "{line}: {warnings:?}");
        }
    }

    #[test]
    fn unused_upstream_warns() {
        let text = format!("{MINIMAL}[upstreams.spare]\nnodes = {{ \"127.0.0.1:2\" = 1 }}\n");
        let (_, warnings) = parse(&text).unwrap();
        assert_eq!(
            warnings,
            [Warning(
                "t.toml: upstreams.spare: no route uses this upstream".into()
            )]
        );
    }

    #[test]
    fn load_names_the_file() {
        let e = Config::load(Path::new("/nonexistent/hearth.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/hearth.toml: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn example_file_parses() {
        let (config, warnings) = Config::parse(
            include_str!("../examples/hearth.toml"),
            "examples/hearth.toml",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.listen[0].addr, "127.0.0.1:8080".parse().unwrap());
        let demo = &config.upstreams[0];
        assert_eq!(demo.name, "demo");
        let nodes: Vec<_> = demo
            .nodes
            .iter()
            .map(|n| (n.host.as_str(), n.weight))
            .collect();
        assert_eq!(nodes, [("127.0.0.1:9001", 1), ("127.0.0.1:9002", 2)]);
        assert_eq!(config.routes[0].uris, [UriPattern::Prefix("/".into())]);
    }

    #[test]
    fn active_checks_read_apisix_keys() {
        let (c, _) = parse(MINIMAL).unwrap();
        assert_eq!(c.upstreams[0].checks, None, "off unless configured");
        let text = format!(
            "{MINIMAL}[upstreams.u.checks.active]\ntype = \"http\"\nhttp_path = \"/status\"\nhost = \"probe.example\"\ntimeout = \"250ms\"\ninterval = 3\n[upstreams.u.checks.active.healthy]\nsuccesses = 4\nhttp_statuses = [200, 204]\n[upstreams.u.checks.active.unhealthy]\ninterval = \"500ms\"\nfailures = 5\ntcp_failures = 1\nhttp_statuses = [500]\n"
        );
        let (c, warnings) = parse(&text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            c.upstreams[0].checks,
            Some(ActiveChecks {
                http_path: "/status".into(),
                host: Some("probe.example".into()),
                timeout: Duration::from_millis(250),
                healthy_interval: Duration::from_secs(3),
                healthy_successes: 4,
                healthy_statuses: vec![200, 204],
                unhealthy_interval: Duration::from_millis(500),
                unhealthy_failures: 5,
                unhealthy_statuses: vec![500],
                tcp_failures: 1,
                timeouts: 5,
            })
        );
        // An empty `active` table is every default; `checks` without `active` is no checks.
        let (c, _) = parse(&format!("{MINIMAL}[upstreams.u.checks.active]\n")).unwrap();
        assert_eq!(c.upstreams[0].checks, Some(ActiveChecks::default()));
        let (c, _) = parse(&format!("{MINIMAL}[upstreams.u.checks]\n")).unwrap();
        assert_eq!(c.upstreams[0].checks, None);
    }

    #[test]
    fn active_check_errors_name_line_and_key() {
        let a = "[upstreams.u.checks.active]\n";
        let table: &[(&str, usize, &str, &str)] = &[
            (
                "type = \"tcp\"\n",
                12,
                "upstreams.u.checks.active.type",
                "only \"http\"",
            ),
            (
                "http_path = \"health\"\n",
                12,
                "upstreams.u.checks.active.http_path",
                "\"/health\"",
            ),
            (
                "http_path = \"/a b\"\n",
                12,
                "upstreams.u.checks.active.http_path",
                "expected a path",
            ),
            (
                "host = \"a/b\"\n",
                12,
                "upstreams.u.checks.active.host",
                "expected a host",
            ),
            (
                "interval = 0\n",
                12,
                "upstreams.u.checks.active.interval",
                "longer than zero",
            ),
            (
                "timeout = \"0ms\"\n",
                12,
                "upstreams.u.checks.active.timeout",
                "longer than zero",
            ),
            (
                "healthy = { successes = 0 }\n",
                12,
                "upstreams.u.checks.active.healthy.successes",
                "between 1 and 254",
            ),
            (
                "unhealthy = { timeouts = 255 }\n",
                12,
                "upstreams.u.checks.active.unhealthy.timeouts",
                "between 1 and 254",
            ),
            (
                "unhealthy = { http_statuses = [500, 99] }\n",
                12,
                "upstreams.u.checks.active.unhealthy.http_statuses[1]",
                "between 200 and 599",
            ),
            (
                "healthy = { http_statuses = [] }\n",
                12,
                "upstreams.u.checks.active.healthy.http_statuses",
                "at least one status",
            ),
            (
                "concurrency = 10\n",
                12,
                "upstreams.u.checks.active.concurrency",
                "unknown field",
            ),
        ];
        for (line, at, key, message) in table {
            let e = err(&format!("{MINIMAL}{a}{line}"));
            let ctx = format!("{line:?} -> {e}");
            assert_eq!(e.line(), Some(*at), "{ctx}");
            assert_eq!(e.key(), Some(*key), "{ctx}");
            assert!(e.message().contains(message), "{ctx}");
        }
        // Passive checks are configured with max_fails / fail_timeout, not here.
        let e = err(&format!("{MINIMAL}[upstreams.u.checks.passive]\n"));
        assert!(e.message().contains("unknown field `passive`"), "{e}");
    }

    #[test]
    fn admin_key_is_required_off_loopback() {
        let with = |admin: &str| format!("{MINIMAL}[admin]\n{admin}\n");
        let (c, _) = parse(&with("addr = \"127.0.0.1:9180\"")).unwrap();
        assert_eq!(c.admin.map(|a| a.key), Some(None));
        let (c, _) = parse(&with("addr = \"0.0.0.0:9180\"\nkey = \"s3cret\"")).unwrap();
        assert_eq!(c.admin.and_then(|a| a.key).as_deref(), Some("s3cret"));
        for (admin, key, want) in [
            ("addr = \"0.0.0.0:9180\"", "admin.addr", "needs a key"),
            ("addr = \"[::]:9180\"", "admin.addr", "needs a key"),
            (
                "addr = \"127.0.0.1:9180\"\nkey = \"\"",
                "admin.key",
                "must not be empty",
            ),
            (
                "addr = \"127.0.0.1:9180\"\nkey = \"a b\"",
                "admin.key",
                "visible ASCII",
            ),
        ] {
            let e = err(&with(admin));
            assert_eq!(e.key(), Some(key), "{admin}: {e}");
            assert!(e.message().contains(want), "{admin}: {e}");
        }
    }

    #[test]
    fn key_paths_quote_keys_that_are_not_bare() {
        let mut path = String::new();
        push_key(&mut path, "backend_2-x");
        path.push('.');
        push_key(&mut path, "127.0.0.1:9001");
        path.push('.');
        push_key(&mut path, "");
        assert_eq!(path, "backend_2-x.\"127.0.0.1:9001\".\"\"");
    }

    #[test]
    fn config_center_section() {
        let with = |body: &str| format!("{MINIMAL}[config_center]\n{body}\n");
        let (c, _) = parse(MINIMAL).unwrap();
        assert_eq!(c.config_center, None);
        let (c, _) = parse(&with(
            "type = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]",
        ))
        .unwrap();
        let cc = c.config_center.unwrap();
        assert_eq!(
            cc.endpoints,
            [crate::etcd::Endpoint::parse("http://127.0.0.1:2379").unwrap()]
        );
        assert_eq!(cc.prefix, "/apisix");
        assert_eq!(cc.credentials, None);
        assert_eq!(cc.timeout, Duration::from_secs(5));
        assert_eq!(cc.cache, None);
        let (c, _) = parse(&with(
            "type = \"etcd\"\nendpoints = [\"http://a:1\", \"http://b:2\"]\nprefix = \"/fleet/\"\n\
             user = \"root\"\npassword = \"pw\"\ntimeout = \"500ms\"\ncache = \"/var/lib/hearth/etcd.json\"",
        ))
        .unwrap();
        let cc = c.config_center.unwrap();
        assert_eq!(cc.endpoints.len(), 2);
        assert_eq!(cc.prefix, "/fleet");
        assert_eq!(cc.credentials.map(|c| c.user), Some("root".to_owned()));
        assert_eq!(cc.timeout, Duration::from_millis(500));
        assert_eq!(cc.cache, Some("/var/lib/hearth/etcd.json".into()));

        let ep = "endpoints = [\"http://127.0.0.1:2379\"]";
        for (body, key, want) in [
            (ep.to_owned(), "config_center.type", "required"),
            (
                format!("type = \"consul\"\n{ep}"),
                "config_center.type",
                "only config center",
            ),
            (
                "type = \"etcd\"".to_owned(),
                "config_center.endpoints",
                "required",
            ),
            (
                "type = \"etcd\"\nendpoints = []".to_owned(),
                "config_center.endpoints",
                "at least one",
            ),
            (
                "type = \"etcd\"\nendpoints = [\"https://x:1\"]".to_owned(),
                "config_center.endpoints[0]",
                "https",
            ),
            (
                format!("type = \"etcd\"\n{ep}\nprefix = \"apisix\""),
                "config_center.prefix",
                "start with '/'",
            ),
            (
                format!("type = \"etcd\"\n{ep}\nprefix = \"/\""),
                "config_center.prefix",
                "start with '/'",
            ),
            (
                format!("type = \"etcd\"\n{ep}\nuser = \"root\""),
                "config_center",
                "go together",
            ),
            (
                format!("type = \"etcd\"\n{ep}\ntimeout = \"0s\""),
                "config_center.timeout",
                "more than 0",
            ),
            (
                format!("type = \"etcd\"\n{ep}\ncache = \"\""),
                "config_center.cache",
                "empty",
            ),
            (
                format!("type = \"etcd\"\n{ep}\nendpoint = 1"),
                "config_center.endpoint",
                "unknown field",
            ),
        ] {
            let e = err(&with(&body));
            assert_eq!(e.key(), Some(key), "{body}: {e}");
            assert!(e.message().contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn with_a_config_center_the_file_may_define_no_routes_or_upstreams() {
        let listen = "[[listen]]\naddr = \"127.0.0.1:0\"\n";
        let center = "[config_center]\ntype = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n";
        let up = "[upstreams.u]\nnodes = { \"127.0.0.1:9001\" = 1 }\n";
        let (c, _) = parse(&format!("{listen}{center}")).unwrap();
        assert!(c.routes.is_empty() && c.upstreams.is_empty());
        let (c, w) = parse(&format!("{listen}{center}{up}")).unwrap();
        assert_eq!((c.routes.len(), c.upstreams.len()), (0, 1));
        assert!(w.is_empty(), "{w:?}");
        // Without one, both stay required.
        assert_eq!(err(listen).key(), Some("upstreams"));
        assert_eq!(err(&format!("{listen}{up}")).key(), Some("routes"));
    }
}
