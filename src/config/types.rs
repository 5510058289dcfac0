//! What a loaded configuration is: [`Config`] and the settings it holds, each with the defaults
//! a file may leave out (`Default` impls here are the only place defaults live).
//!
//! Invariants are the builder's to establish and this module's to document: a value of these
//! types came out of `build` (or the admin API's translation in `apisix`, which keeps the same
//! rules), so the runtime reads it without re-checking. The types are plain data; nothing here
//! reads a file or validates, so modules below the builder (`tls` reads the TLS settings) can
//! depend on them without depending on loading.

use std::net::SocketAddr;
use std::time::Duration;

use crate::balance::Balance;
use crate::route::Route;

/// Smallest accepted `client.max_head_bytes`: below this even an ordinary browser request head
/// with a few cookies would be refused.
pub const MIN_HEAD_BYTES: usize = 1024;
/// Largest accepted `client.max_head_bytes`: a head must fit in one buffer, and buffers this
/// large per connection would make the buffer pool the memory bottleneck.
pub const MAX_HEAD_BYTES: usize = 1024 * 1024;
/// Largest accepted `workers`; more threads than this is a typo, not a deployment.
pub const MAX_WORKERS: usize = 1024;

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
    /// Move large Content-Length (and close-delimited) bodies between plain sockets with
    /// splice(2), through a pipe per core, instead of copying them through user space.
    pub splice: bool,
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
            splice: true,
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
    /// without versions; `websocket` by default. `h2c` is never allowed (see
    /// [`upgrade_protocol`](crate::http::rewrite::upgrade_protocol)).
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
