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
    /// The unix socket a new hearth connects to for a binary upgrade (`upgrade_socket`); None:
    /// derived from the first listen address (`upgrade::socket::path_for`). Never empty.
    pub upgrade_socket: Option<std::path::PathBuf>,
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
    /// How DNS names among the nodes are looked up and followed (`resolver`, `[resolve]`).
    pub resolve: Resolve,
}

/// `resolver = [...]` and `[resolve]`: how node names are looked up, at load and again in the
/// background (see `resolve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// `resolver`: DNS servers hearth asks itself, in order; empty: the system resolver.
    pub servers: Vec<SocketAddr>,
    /// Shortest time an answer is kept (a smaller TTL counts as this), and the wait before
    /// asking again after a failure.
    pub min: Duration,
    /// Longest time an answer is kept, whatever its TTL.
    pub max: Duration,
    /// Without `resolver`: how often the system resolver is asked again (it gives no TTL).
    pub interval: Duration,
    /// How long one server's answer is awaited before the next server is asked.
    pub timeout: Duration,
}

impl Default for Resolve {
    fn default() -> Self {
        Resolve {
            servers: Vec::new(),
            min: Duration::from_secs(1),
            max: Duration::from_secs(300),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
        }
    }
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
    /// How to speak TLS to the `https://` endpoints; Some exactly when there is one.
    pub tls: Option<EtcdTls>,
}

/// `[config_center] tls`: the files as configured, and the rustls client configuration made
/// from them when the configuration was loaded (so a bad file fails `--check`, not the start).
#[derive(Clone)]
pub struct EtcdTls {
    /// Trusted CA certificates (PEM); None: the webpki roots.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate chain and key (PEM), for etcd's `--client-cert-auth`.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// Check etcd's certificate chain and name; off logs a warning.
    pub verify: bool,
    pub client: std::sync::Arc<rustls::ClientConfig>,
}

/// Two settings are the same when they name the same files the same way (what a reload
/// compares); the client configuration follows from them.
impl PartialEq for EtcdTls {
    fn eq(&self, o: &EtcdTls) -> bool {
        (&self.ca, &self.cert, &self.key, self.verify) == (&o.ca, &o.cert, &o.key, o.verify)
    }
}

impl Eq for EtcdTls {}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
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
    /// Where the routes and upstreams created through the admin API are kept across restarts
    /// (`dynamic`, `admin_state`); relative to the configuration file's directory, which must
    /// exist. None: they live in memory only. Never set with a config center, where etcd keeps
    /// them.
    pub state: Option<std::path::PathBuf>,
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

/// One address of an upstream. A node written with an IP address is one `Node`; one written
/// with a DNS name is one `Node` per address the name has, consecutive in the list, each with the
/// name as written and the written weight (see [`Node::is_named`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Where connections go: the address written, or one of the addresses the name has.
    pub addr: SocketAddr,
    /// The node as written, `host:port`; sent as Host with `pass_host = "node"`, and the SNI
    /// name's source.
    pub host: String,
    /// Share in smooth weighted round robin; at least 1.
    pub weight: u32,
}

impl Node {
    /// `host` is a DNS name rather than an IP address, so its addresses are followed.
    pub fn is_named(&self) -> bool {
        self.host.parse::<SocketAddr>().is_err()
    }

    /// The host part of `host`, without its port: the name looked up.
    pub fn hostname(&self) -> &str {
        self.host.rsplit_once(':').map_or(&self.host, |(h, _)| h)
    }

    /// How metrics, logs and the consistent-hash ring tell nodes apart: `host` as written, and
    /// for an address of a name, the name followed by the address, `api.internal:8080
    /// (10.0.0.5)`. Nodes written with an address keep the label they always had.
    pub fn label(&self) -> std::borrow::Cow<'_, str> {
        if self.is_named() {
            std::borrow::Cow::Owned(format!("{} ({})", self.host, self.addr.ip()))
        } else {
            std::borrow::Cow::Borrowed(&self.host)
        }
    }
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
    /// Requests sent on one upstream connection before it is retired; 0 is no limit.
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
    /// `preconnect`, in thousandths: each core keeps at least `ceil(ratio x in use)`
    /// connections open to a node (idle plus in use), opening them in the background; 0 is
    /// off. Envoy's per-upstream preconnect ratio.
    pub preconnect_permille: u32,
    /// Every this long a core closes idle connections beyond the most it used at once during
    /// the interval (never below `min_idle`); `size` bounds what is kept across intervals.
    pub purge_interval: Duration,
}

impl PoolSettings {
    /// The connections a core keeps open to a node with `in_use` of them serving requests, by
    /// `preconnect` (0 when it is off).
    pub fn preconnect_target(&self, in_use: usize) -> usize {
        if self.preconnect_permille == 0 {
            return 0;
        }
        (in_use * self.preconnect_permille as usize).div_ceil(1000)
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            size: 1024,
            requests: 0,
            idle_timeout: Duration::from_secs(60),
            idle_auto: false,
            max_lifetime: Duration::from_secs(3600),
            min_idle: 0,
            preconnect_permille: 0,
            purge_interval: Duration::from_secs(5),
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
