//! The builder's `[upstreams.NAME]` tables: nodes (names looked up here, one node per address;
//! `resolve` follows them afterwards), scheme and TLS (files loaded and each node's SNI checked,
//! so a bad file fails before anything changes), Host passing, timeouts, the keep-alive pool,
//! queueing, balancing, passive health and the active checks.
//!
//! These are methods of `context::Builder`, using the helpers there (`duration`, `prefix`,
//! `path`); `build` calls [`Builder::upstream`] once per table. Invariants: a built upstream has
//! at least one node, every weight is at least 1, `tls` is set exactly for https, and check
//! counters stay within APISIX's bounds.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::context::Builder;
use crate::balance::Balance;
use crate::config::locate::{ConfigError, Warning};
use crate::config::raw::{RawChecks, RawUpstream, RawUpstreamTls};
use crate::config::types::{
    ActiveChecks, Node, PassHost, PassiveHealth, PoolSettings, QueueSettings, Scheme, Upstream,
    UpstreamTimeouts, UpstreamTls,
};
use crate::config::value::{Count, RawDuration};
use crate::http::rewrite::{default_upgrade, upgrade_protocol};

impl Builder<'_> {
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
        // The addresses of a name share its SNI: one check per node as written.
        for (i, n) in nodes.iter().enumerate() {
            if i > 0 && nodes[i - 1].host == n.host {
                continue;
            }
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

    pub(super) fn upstream(
        &mut self,
        name: String,
        raw: RawUpstream,
    ) -> Result<Upstream, ConfigError> {
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
            let w = weight.get_ref().0;
            if w == 0 {
                return Err(self.locator.error(
                    Some(weight.span()),
                    "weight must be at least 1 (remove the node to take it out)",
                ));
            }
            // A name stands for every address it has: one node each (see `config::Node`).
            for addr in self.resolve(&host)? {
                nodes.push(Node {
                    addr,
                    host: host.get_ref().clone(),
                    weight: w,
                });
            }
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
                preconnect_permille: match r.preconnect {
                    None => p.preconnect_permille,
                    Some(ratio) => {
                        let v = *ratio.get_ref();
                        // Envoy's bounds: below 1 would keep fewer connections than in use, and
                        // above 3 opens more than any load has been seen to need.
                        if !(1.0..=3.0).contains(&v) {
                            return Err(self.locator.error(
                                Some(ratio.span()),
                                format!("expected a ratio from 1.0 to 3.0, found {v}"),
                            ));
                        }
                        (v * 1000.0).round() as u32
                    }
                },
                purge_interval: match r.purge_interval {
                    Some(d) => {
                        let span = d.span();
                        let v = self.duration(Some(d), p.purge_interval)?;
                        if v.is_zero() {
                            return Err(self
                                .locator
                                .error(Some(span), "expected a positive duration".to_owned()));
                        }
                        v
                    }
                    None => p.purge_interval,
                },
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
                // Point at the key the message is about (a missing key: at the type needing it).
                let span = match e.field {
                    "hash_on" => raw.hash_on.as_ref().map(Spanned::span),
                    "key" => raw.key.as_ref().map(Spanned::span),
                    _ => None,
                };
                self.locator
                    .error(span.or_else(|| Some(kind.span())), e.message)
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

    /// Every address a node stands for now: the address written, or those its name has (looked
    /// up with `resolver` when configured); `resolve` follows names after that.
    fn resolve(&self, host: &Spanned<String>) -> Result<Vec<SocketAddr>, ConfigError> {
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
        crate::resolve::net::addresses(&self.resolve, text).map_err(fail)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{err, parse, MINIMAL};
    use crate::config::types::Config;

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
}
