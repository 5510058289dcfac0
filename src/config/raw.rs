//! The serde mirror of the file: one struct per table, `deny_unknown_fields` everywhere, so a
//! misspelt key is an error at its line rather than a setting silently left at its default.
//!
//! Optional keys stay `Option`, so defaults live in one place (`types`); values the builder checks
//! after deserialising are `Spanned`, so its errors can point at them. Nothing here validates
//! beyond the shape and type of each value.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::value::{Count, RawDuration, RawSize};

// The serde layer mirrors the file one to one. Optional keys stay `Option` so that defaults live
// in one place (the `Default` impls above); values checked after deserialising keep their span.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) workers: Option<Spanned<Count<usize>>>,
    pub(super) pin_cores: Option<bool>,
    pub(super) max_client_connections: Option<Count<usize>>,
    pub(super) shutdown_grace: Option<Spanned<RawDuration>>,
    pub(super) upgrade_socket: Option<Spanned<String>>,
    pub(super) listen: Option<Spanned<Vec<RawListen>>>,
    pub(super) client: Option<RawClient>,
    pub(super) upstreams: Option<Spanned<BTreeMap<Spanned<String>, Spanned<RawUpstream>>>>,
    pub(super) routes: Option<Spanned<Vec<RawRoute>>>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) access_log: Option<Spanned<RawAccessLog>>,
    pub(super) config_center: Option<Spanned<RawConfigCenter>>,
    pub(super) resolver: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) resolve: Option<RawResolve>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolve {
    pub(super) min: Option<Spanned<RawDuration>>,
    pub(super) max: Option<Spanned<RawDuration>>,
    pub(super) interval: Option<Spanned<RawDuration>>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfigCenter {
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    pub(super) endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
    pub(super) cache: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawEtcdTls>>,
}

/// `[config_center] tls = { ca, cert, key, verify }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcdTls {
    pub(super) ca: Option<Spanned<String>>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) verify: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawAccessLog {
    Switch(bool),
    On(RawAccessLogTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLogTable {
    pub(super) path: String,
    pub(super) format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) addr: Spanned<String>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) state: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) addr: Spanned<String>,
    pub(super) tls: Option<Spanned<RawCertFiles>>,
    pub(super) certs: Option<Spanned<Vec<RawCertFiles>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertFiles {
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub(super) sni: Option<String>,
    pub(super) verify: Option<bool>,
    pub(super) ca: Option<String>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub(super) header_timeout: Option<Spanned<RawDuration>>,
    pub(super) idle_timeout: Option<Spanned<RawDuration>>,
    pub(super) body_timeout: Option<Spanned<RawDuration>>,
    pub(super) send_timeout: Option<Spanned<RawDuration>>,
    pub(super) max_requests: Option<Count<u64>>,
    pub(super) max_head_bytes: Option<Spanned<RawSize>>,
    pub(super) max_body_bytes: Option<RawSize>,
    pub(super) accept_bare_lf: Option<bool>,
    pub(super) ignore_abort: Option<bool>,
    pub(super) splice: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) nodes: Spanned<BTreeMap<Spanned<String>, Spanned<Count<u32>>>>,
    pub(super) scheme: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawUpstreamTls>>,
    pub(super) pass_host: Option<Spanned<String>>,
    pub(super) upstream_host: Option<Spanned<String>>,
    pub(super) timeout: Option<RawTimeouts>,
    pub(super) keepalive_pool: Option<RawPool>,
    pub(super) max_connections: Option<Count<u32>>,
    pub(super) max_connecting: Option<Count<u32>>,
    pub(super) queue: Option<RawQueue>,
    pub(super) checks: Option<RawChecks>,
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    pub(super) hash_on: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) retries: Option<Count<u32>>,
    pub(super) retry_timeout: Option<Spanned<RawDuration>>,
    pub(super) max_fails: Option<Count<u32>>,
    pub(super) fail_timeout: Option<Spanned<RawDuration>>,
    pub(super) upgrade: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<Spanned<RawDuration>>,
    pub(super) send: Option<Spanned<RawDuration>>,
    pub(super) read: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) size: Option<Count<usize>>,
    pub(super) requests: Option<Count<u64>>,
    pub(super) min_idle: Option<Count<usize>>,
    pub(super) idle_timeout: Option<Spanned<RawDuration>>,
    pub(super) max_lifetime: Option<Spanned<RawDuration>>,
    pub(super) preconnect: Option<Spanned<f64>>,
    pub(super) purge_interval: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub(super) size: Option<Count<usize>>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) id: Option<Spanned<String>>,
    pub(super) uris: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) methods: Vec<Spanned<String>>,
    pub(super) priority: Option<i64>,
    pub(super) status: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) vars: Vec<Spanned<Vec<Spanned<RawOperand>>>>,
    pub(super) upstream: Spanned<String>,
    pub(super) enable_websocket: Option<bool>,
    pub(super) queue_class: Option<Spanned<i64>>,
    pub(super) queue_offset: Option<Spanned<RawDuration>>,
    /// Read as JSON, as the admin API and etcd give it, so one reader serves all three.
    pub(super) plugins: Option<Spanned<serde_json::Value>>,
}

// `[upstreams.NAME.checks.active]`, with APISIX's key names. `interval` and `unhealthy.failures`
// are shorthands: the first sets both intervals, the second every failure count; the specific
// keys override them.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChecks {
    pub(super) active: Option<RawActive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActive {
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    pub(super) http_path: Option<Spanned<String>>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
    pub(super) interval: Option<Spanned<RawDuration>>,
    pub(super) healthy: Option<RawHealthy>,
    pub(super) unhealthy: Option<RawUnhealthy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthy {
    pub(super) interval: Option<Spanned<RawDuration>>,
    pub(super) successes: Option<Spanned<Count<u32>>>,
    pub(super) http_statuses: Option<Spanned<Vec<Spanned<Count<u16>>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnhealthy {
    pub(super) interval: Option<Spanned<RawDuration>>,
    pub(super) failures: Option<Spanned<Count<u32>>>,
    pub(super) http_failures: Option<Spanned<Count<u32>>>,
    pub(super) tcp_failures: Option<Spanned<Count<u32>>>,
    pub(super) timeouts: Option<Spanned<Count<u32>>>,
    pub(super) http_statuses: Option<Spanned<Vec<Spanned<Count<u16>>>>>,
}

/// One element of a `vars` condition. TOML arrays may mix types, so `["arg_n", ">", 5]` and
/// `["http_x", "IN", ["a", "b"]]` read as written in APISIX's JSON.
pub(super) struct RawOperand(pub(super) crate::route::Operand);

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
