//! The builder: checks the raw tree against everything serde cannot (ranges, cross-references,
//! files that must load, addresses that must resolve) and turns it into a [`Config`], collecting
//! warnings for what is valid but probably a mistake. [`Config::load`] and [`Config::parse`] are
//! its entry points. The sections of the file are methods of `context::Builder`: the top-level
//! tables, `[[listen]]`, `[client]`, `[admin]`, `[config_center]` and `[[routes]]` here, each
//! `[upstreams.NAME]` in `upstream`; both build on `context`, which holds what they share.
//!
//! Invariants: every error is located (`Locator::error` with the value's span, or
//! `Locator::missing` with the key of what is absent), the builder never panics on what the file
//! says, and a refusal leaves nothing behind, so `--check`, start and reload all refuse alike.

mod context;
mod upstream;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;
use toml::Spanned;

use self::context::Builder;
use super::locate::{duplicate_key_path, key_path, line_of, ConfigError, Locator, Warning};
use super::raw::{
    RawAccessLog, RawAdmin, RawCertFiles, RawClient, RawConfig, RawConfigCenter, RawEtcdTls,
    RawListen, RawOperand, RawResolve, RawRoute,
};
use super::types::{
    AccessLogSettings, Admin, CertFiles, ClientSettings, Config, ConfigCenter, EtcdTls, Listen,
    ListenTls, PassHost, Resolve, Upstream, MAX_HEAD_BYTES, MAX_WORKERS, MIN_HEAD_BYTES,
};
use crate::proxy_rewrite::{Step, NAME};
use crate::route::{route_host, uri_pattern, QueueRank, Route};

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
                let duplicate = e.message() == "duplicate key";
                let key = match e.span() {
                    Some(span) if duplicate => duplicate_key_path(text, span),
                    _ => None,
                };
                let message = if duplicate {
                    "duplicate key: it is set twice; keep one".to_owned()
                } else {
                    e.message().to_owned()
                };
                return Err(ConfigError {
                    file: file.to_owned(),
                    line: e.span().map(|s| line_of(text, s.start)),
                    key,
                    message,
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
            resolve: Resolve::default(),
        };
        let config = builder.config(raw)?;
        Ok((config, builder.warnings))
    }
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
        // Before the upstreams: their node names are looked up with these settings.
        self.resolve = self.resolve_settings(raw.resolver, raw.resolve)?;
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
                    state: self.admin_state(&a, from_center)?,
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
        let upgrade_socket = match raw.upgrade_socket {
            None => None,
            Some(p) if p.get_ref().is_empty() => {
                return Err(self.locator.error(
                    Some(p.span()),
                    "must not be empty (omit it for the default, derived from the first listen address)".to_owned(),
                ))
            }
            Some(p) => Some(p.into_inner().into()),
        };
        Ok(Config {
            workers,
            pin_cores: raw.pin_cores.unwrap_or(false),
            max_client_connections: raw.max_client_connections.map_or(0, |c| c.0),
            shutdown_grace: self.duration(raw.shutdown_grace, Duration::from_secs(10))?,
            upgrade_socket,
            listen,
            client,
            upstreams,
            routes,
            admin,
            access_log,
            config_center,
            resolve: self.resolve.clone(),
        })
    }

    /// `resolver = [...]` and `[resolve]`.
    fn resolve_settings(
        &mut self,
        servers: Option<Spanned<Vec<Spanned<String>>>>,
        raw: Option<RawResolve>,
    ) -> Result<Resolve, ConfigError> {
        let d = Resolve::default();
        let mut out = Resolve {
            servers: Vec::new(),
            ..d.clone()
        };
        if let Some(list) = servers {
            if list.get_ref().is_empty() {
                return Err(self.locator.error(
                    Some(list.span()),
                    "at least one server is required; leave resolver out to use the system resolver",
                ));
            }
            for s in list.into_inner() {
                let text = s.get_ref();
                // An address only: hearth cannot look up its resolver.
                let addr = text
                    .parse::<SocketAddr>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        self.locator.error(
                            Some(s.span()),
                            format!("expected an IP address with an optional port such as \"10.0.0.2:53\", found {text:?}"),
                        )
                    })?;
                if addr.port() == 0 || out.servers.contains(&addr) {
                    let why = if addr.port() == 0 {
                        "port 0 is no server's".to_owned()
                    } else {
                        format!("{addr} is listed twice")
                    };
                    return Err(self.locator.error(Some(s.span()), why));
                }
                out.servers.push(addr);
            }
        }
        let Some(r) = raw else { return Ok(out) };
        let max_span = r.max.as_ref().map(Spanned::span);
        for (key, value, default, slot) in [
            ("min", r.min, d.min, &mut out.min),
            ("max", r.max, d.max, &mut out.max),
            ("interval", r.interval, d.interval, &mut out.interval),
            ("timeout", r.timeout, d.timeout, &mut out.timeout),
        ] {
            let span = value.as_ref().map(Spanned::span);
            *slot = self.duration(value, default)?;
            if slot.is_zero() {
                return Err(match span {
                    Some(s) => self
                        .locator
                        .error(Some(s), "must be longer than zero, e.g. \"1s\""),
                    None => self
                        .locator
                        .missing(&format!("resolve.{key}"), "must be longer than zero"),
                });
            }
        }
        if out.max < out.min {
            let message = format!(
                "max ({:?}) must not be shorter than min ({:?})",
                out.max, out.min
            );
            return Err(match max_span {
                Some(s) => self.locator.error(Some(s), message),
                None => self.locator.missing("resolve.max", &message),
            });
        }
        Ok(out)
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
        let tls = self.etcd_tls(raw.tls, &endpoints)?;
        Ok(ConfigCenter {
            endpoints,
            prefix,
            credentials,
            timeout,
            cache,
            tls,
        })
    }

    /// `[config_center] tls`, with its files read and the client configuration made, so each
    /// bad file is refused here naming its key. https endpoints without it trust the webpki
    /// roots; it without an https endpoint is a mistake.
    fn etcd_tls(
        &mut self,
        raw: Option<Spanned<RawEtcdTls>>,
        endpoints: &[crate::etcd::Endpoint],
    ) -> Result<Option<EtcdTls>, ConfigError> {
        let https = endpoints.iter().any(|e| e.tls);
        let Some(raw) = raw else {
            if !https {
                return Ok(None);
            }
            let client = crate::tls::etcd_client_config(None, None, true)
                .map_err(|e| self.locator.missing("config_center.endpoints", e))?;
            return Ok(Some(EtcdTls {
                ca: None,
                cert: None,
                key: None,
                verify: true,
                client,
            }));
        };
        let span = raw.span();
        let raw = raw.into_inner();
        if !https {
            return Err(self.locator.error(
                Some(span),
                "no endpoint is https://, so nothing would use these TLS settings; write the \
                 endpoints as https://host:port",
            ));
        }
        let verify = raw.verify.unwrap_or(true);
        let file = |f: &Option<Spanned<String>>| -> Result<_, ConfigError> {
            match f {
                None => Ok(None),
                Some(p) if p.get_ref().is_empty() => {
                    Err(self.locator.error(Some(p.span()), "path must not be empty"))
                }
                Some(p) => Ok(Some((self.path(p.get_ref()), p.span()))),
            }
        };
        let (ca, cert, key) = (file(&raw.ca)?, file(&raw.cert)?, file(&raw.key)?);
        let at =
            |span: &std::ops::Range<usize>, e: String| self.locator.error(Some(span.clone()), e);
        let ca_certs = match &ca {
            Some((path, span)) => Some(crate::tls::load_certs(path).map_err(|e| at(span, e))?),
            None => None,
        };
        let client = match (&cert, &key) {
            (None, None) => None,
            (Some((c, cs)), Some((k, ks))) => Some((
                crate::tls::load_certs(c).map_err(|e| at(cs, e))?,
                crate::tls::load_key(k).map_err(|e| at(ks, e))?,
                cs.clone(),
            )),
            (Some((_, s)), None) | (None, Some((_, s))) => {
                return Err(at(
                    s,
                    "cert and key go together: give both for a client certificate, or neither"
                        .to_owned(),
                ))
            }
        };
        let cert_span = client.as_ref().map(|(_, _, s)| s.clone());
        let config = crate::tls::etcd_client_config(
            ca_certs,
            client.map(|(chain, key, _)| (chain, key)),
            verify,
        )
        .map_err(|e| self.locator.error(cert_span.or(Some(span.clone())), e))?;
        if !verify {
            let at = self.prefix(Some(span), "config_center.tls.verify");
            self.warnings.push(Warning(format!(
                "{at}: false: etcd's certificate is not checked, so anyone who can take its \
                 address can feed hearth routes"
            )));
        }
        Ok(Some(EtcdTls {
            ca: ca.map(|(p, _)| p),
            cert: cert.map(|(p, _)| p),
            key: key.map(|(p, _)| p),
            verify,
            client: config,
        }))
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
            splice: raw.splice.unwrap_or(d.splice),
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

    /// `[admin] state`: a file in a directory that exists, and no config center (whose etcd
    /// already keeps every change of the admin API).
    fn admin_state(
        &self,
        raw: &RawAdmin,
        from_center: bool,
    ) -> Result<Option<std::path::PathBuf>, ConfigError> {
        let Some(state) = &raw.state else {
            return Ok(None);
        };
        let err = |message: String| Err(self.locator.error(Some(state.span()), message));
        if from_center {
            return err(
                "not used with [config_center]: etcd keeps the admin API's changes (and \
                 config_center.cache the last copy read from it); remove one of the two"
                    .to_owned(),
            );
        }
        if state.get_ref().is_empty() {
            return err("path must not be empty; omit state to keep changes in memory only".into());
        }
        let path = self.path(state.get_ref());
        if path.is_dir() {
            return err(format!(
                "{} is a directory; name a file in it",
                path.display()
            ));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        if !dir.is_dir() {
            return err(format!(
                "directory {} does not exist; create it, hearth makes only the file",
                dir.display()
            ));
        }
        Ok(Some(path))
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
            let queue = self.queue_rank(&r)?;
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
            let rewrite = match &r.plugins {
                None => None,
                Some(p) => crate::proxy_rewrite::from_plugins(p.get_ref())
                    .map_err(|e| {
                        let span = self.plugin_span(routes.len(), &e.path).unwrap_or(p.span());
                        self.locator.error(Some(span), e.message)
                    })?
                    .map(Box::new),
            };
            let name = r.upstream.get_ref();
            let Some(upstream) = upstreams.iter().position(|u| &u.name == name) else {
                let known: Vec<_> = upstreams.iter().map(|u| format!("{:?}", u.name)).collect();
                return Err(self.locator.error(
                    Some(r.upstream.span()),
                    format!("no upstream named {name:?}; defined: {}", known.join(", ")),
                ));
            };
            used[upstream] = true;
            if rewrite.as_ref().is_some_and(|p| p.host.is_some()) {
                self.host_meets_pass_host(routes.len(), &upstreams[upstream]);
            }
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
                rewrite,
                queue,
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

    /// A route's `queue_class` (-1000..=1000, lower first) and `queue_offset` (at most a minute:
    /// a longer handicap would outlast any sensible queue timeout).
    fn queue_rank(&self, r: &RawRoute) -> Result<QueueRank, ConfigError> {
        let mut rank = QueueRank::default();
        if let Some(c) = &r.queue_class {
            rank.class = match i16::try_from(*c.get_ref()) {
                Ok(n) if (-1000..=1000).contains(&n) => n,
                _ => {
                    return Err(self.locator.error(
                        Some(c.span()),
                        format!(
                            "must be between -1000 and 1000 (lower is served first), found {}",
                            c.get_ref()
                        ),
                    ))
                }
            };
        }
        if let Some(o) = &r.queue_offset {
            let d = o.get_ref();
            if d.auto || d.value > Duration::from_secs(60) {
                return Err(self.locator.error(
                    Some(o.span()),
                    format!("must be a duration of at most 60s, found {}", d.as_read),
                ));
            }
            rank.offset_ms = u32::try_from(d.value.as_millis()).unwrap_or(u32::MAX);
        }
        Ok(rank)
    }

    /// Where in the file `path` leads under the `plugins` of route `index` (0-based): the span
    /// of that value, or of the deepest part of the path the file has.
    fn plugin_span(&self, index: usize, path: &[Step]) -> Option<Range<usize>> {
        let mut at = self
            .locator
            .tree
            .get("routes")?
            .get_ref()
            .get(index)?
            .get_ref()
            .get("plugins")?;
        for step in path {
            let next = match step {
                Step::Key(k) => at.get_ref().get(k.as_str()),
                Step::Index(i) => at.get_ref().get(*i),
            };
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        Some(at.span())
    }

    /// Warns when route `index`'s proxy-rewrite `host` will not be sent: the upstream's
    /// pass_host `node` or `rewrite` chooses the Host after the plugin, as in APISIX.
    fn host_meets_pass_host(&mut self, index: usize, upstream: &Upstream) {
        let mode = match upstream.pass_host {
            PassHost::Pass => return,
            PassHost::Node => "node",
            PassHost::Rewrite(_) => "rewrite",
        };
        let span = self.plugin_span(index, &[Step::Key(NAME.into()), Step::Key("host".into())]);
        let key = span
            .as_ref()
            .and_then(|s| key_path(self.locator.tree, s.start))
            .unwrap_or_default();
        let at = self.prefix(span, &key);
        self.warnings.push(Warning(format!(
            "{at}: upstream {:?} has pass_host = \"{mode}\", which chooses the Host instead, as \
             in APISIX; this host is sent only under pass_host = \"pass\"",
            upstream.name
        )));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{err, parse, MINIMAL};
    use crate::config::types::Resolve;
    use crate::config::types::{
        Node, PassHost, PoolSettings, QueueSettings, Scheme, UpstreamTimeouts,
    };
    use crate::route::{HostPattern, UriPattern};

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
        assert_eq!(u.keepalive_pool.size, 1024);
        assert_eq!(u.keepalive_pool.requests, 0);
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
                rewrite: None,
                queue: QueueRank::default(),
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
    fn upgrade_socket_is_optional_and_never_empty() {
        let base = "[[listen]]\naddr = \"127.0.0.1:0\"\n[upstreams.u]\nnodes = { \"127.0.0.1:1\" = 1 }\n[[routes]]\nuris = [\"/*\"]\nupstream = \"u\"\n";
        assert_eq!(
            Config::parse(base, "t.toml")
                .expect("default")
                .0
                .upgrade_socket,
            None
        );
        let empty = format!("workers = 1\nupgrade_socket = \"\"\n{base}");
        let e = Config::parse(&empty, "t.toml").expect_err("empty path");
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("upgrade_socket"), "{e}");
        assert!(e.to_string().contains("must not be empty"), "{e}");
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
workers = 3
pin_cores = true
max_client_connections = 9
shutdown_grace = "3s"
upgrade_socket = "/run/hearth/upgrade.sock"
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
keepalive_pool = { size = 10, requests = 11, idle_timeout = "12s", max_lifetime = "13m", min_idle = 2, preconnect = 1.5, purge_interval = "2s" }
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
                splice: true,
            }
        );
        assert_eq!(c.max_client_connections, 9);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        assert_eq!(
            c.upgrade_socket.as_deref(),
            Some(std::path::Path::new("/run/hearth/upgrade.sock"))
        );
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
                preconnect_permille: 1_500,
                purge_interval: Duration::from_secs(2),
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
                websocket: None,
                rewrite: None,
                queue: QueueRank::default(),
            }
        );
        assert_eq!(c.routes[1].upstream, 0);
    }

    #[test]
    fn route_queue_ranks() {
        let text = format!(
            "{MINIMAL}[[routes]]\nuris = [\"/report\"]\nupstream = \"u\"\n\
             queue_class = 2\nqueue_offset = \"250ms\"\n"
        );
        let (c, _) = parse(&text).unwrap();
        assert_eq!(c.routes[0].queue, QueueRank::default(), "FIFO unless asked");
        assert_eq!(
            c.routes[1].queue,
            QueueRank {
                class: 2,
                offset_ms: 250
            }
        );
        for (line, message) in [
            ("queue_class = 1001", "between -1000 and 1000"),
            ("queue_class = -40000", "between -1000 and 1000"),
            ("queue_offset = \"2m\"", "at most 60s"),
            ("queue_offset = \"auto\"", "at most 60s"),
            ("queue_offset = \"-5ms\"", ""),
        ] {
            let e = err(&format!(
                "{MINIMAL}[[routes]]\nuris = [\"/r\"]\nupstream = \"u\"\n{line}\n"
            ));
            let key = line.split(' ').next().unwrap();
            assert_eq!(e.line(), Some(MINIMAL.lines().count() + 4), "{line}: {e}");
            assert_eq!(
                e.key(),
                Some(format!("routes[1].{key}").as_str()),
                "{line}: {e}"
            );
            assert!(e.message().contains(message), "{line}: {e}");
        }
    }

    #[test]
    fn route_plugins() {
        let text = format!(
            "{MINIMAL}{}",
            r#"
[upstreams.by_node]
nodes = { "127.0.0.1:9002" = 1 }
pass_host = "node"

[[routes]]
uris = ["/api/*"]
upstream = "u"
plugins = { proxy-rewrite = { regex_uri = ["^/api/(.*)", "/$1"], host = "b.test" } }

[[routes]]
uris = ["/n/*"]
upstream = "by_node"

[routes.plugins.proxy-rewrite]
uri = "/fixed"
host = "ignored.test"
method = "POST"
headers = { set = { X-Api-Version = "v1" }, remove = ["Cookie"] }
"#
        );
        let (c, warnings) = parse(&text).unwrap();
        assert!(c.routes[0].rewrite.is_none());
        let r = c.routes[1].rewrite.as_deref().expect("proxy-rewrite");
        assert_eq!(r.regex_uri[0].pattern, "^/api/(.*)");
        assert_eq!(r.host.as_deref(), Some("b.test"));
        let r = c.routes[2].rewrite.as_deref().expect("proxy-rewrite");
        assert_eq!(r.method.as_ref().map(|m| m.name.as_str()), Some("POST"));
        assert_eq!(r.headers.drop, ["x-api-version", "cookie"]);
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "t.toml:27: routes[2].plugins.proxy-rewrite.host: upstream \"by_node\" has \
              pass_host = \"node\", which chooses the Host instead, as in APISIX; this host is \
              sent only under pass_host = \"pass\""
            ]
        );
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
            // Plugins.
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\nplugins = { limit-count = { count = 1 } }\n", 14, "routes[1].plugins.limit-count", "plugins are not supported, except proxy-rewrite"),
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\nplugins = []\n", 14, "routes[1].plugins", "expected an object"),
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\n[routes.plugins.proxy-rewrite]\n", 14, "routes[1].plugins.proxy-rewrite", "at least one of uri"),
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\n[routes.plugins.proxy-rewrite]\nuri = \"/a\"\nheaders = { set = { Host = \"x\" } }\n", 16, "routes[1].plugins.proxy-rewrite.headers.set.Host", "set with `host`"),
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\n[routes.plugins.proxy-rewrite]\nheaders.remove = [\"X-A\", \"Transfer-Encoding\"]\n", 15, "routes[1].plugins.proxy-rewrite.headers.remove[1]", "frames the body"),
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\n[routes.plugins.proxy-rewrite]\nregex_uri = [\"(\", \"/\"]\n", 15, "routes[1].plugins.proxy-rewrite.regex_uri[0]", "invalid regex"),
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\n[routes.plugins.proxy-rewrite]\n\nmethod = \"HEAD\"\n", 16, "routes[1].plugins.proxy-rewrite.method", "HEAD is refused"),
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\n[routes.plugins.proxy-rewrite]\nscheme = \"https\"\n", 15, "routes[1].plugins.proxy-rewrite.scheme", "upstream's scheme"),
            ("[[routes]]\nuris = [\"/\"]\nupstream = \"u\"\n[routes.plugins.proxy-rewrite]\nuri = \"/$nope\"\n", 15, "routes[1].plugins.proxy-rewrite.uri", "unknown variable"),
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
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hearth.toml")),
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
    fn admin_state_is_a_file_in_a_directory_that_exists() {
        let dir = std::env::temp_dir();
        let file = dir.join("hearth.toml");
        let parse = |admin: &str| {
            let text = format!("{MINIMAL}[admin]\naddr = \"127.0.0.1:9180\"\n{admin}\n");
            Config::parse(&text, &file.display().to_string())
        };
        let state = |admin: &str| parse(admin).unwrap().0.admin.unwrap().state;
        assert_eq!(state(""), None);
        assert_eq!(
            state("state = \"admin.jsonl\""),
            Some(dir.join("admin.jsonl"))
        );
        let abs = dir.join("abs.jsonl").display().to_string();
        assert_eq!(
            state(&format!("state = {abs:?}")),
            Some(dir.join("abs.jsonl"))
        );
        let center = "[config_center]\ntype = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]";
        for (admin, want) in [
            ("state = \"\"", "must not be empty"),
            ("state = \"no-such-dir/admin.jsonl\"", "does not exist"),
            ("state = \".\"", "is a directory"),
            (
                &format!("state = \"a.jsonl\"\n{center}"),
                "not used with [config_center]",
            ),
        ] {
            let e = parse(admin).unwrap_err();
            assert_eq!(e.key(), Some("admin.state"), "{admin}: {e}");
            assert_eq!(e.line(), Some(MINIMAL.lines().count() + 3), "{admin}: {e}");
            assert!(e.message().contains(want), "{admin}: {e}");
        }
    }

    #[test]
    fn config_center_tls_reads_its_files_and_names_the_bad_one() {
        let dir = std::env::temp_dir().join(format!("hearth-etcd-tls-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["x.test".to_owned()]).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let ca = write("ca.pem", &c.cert.pem());
        let key = write("key.pem", &c.signing_key.serialize_pem());
        let other_key = write("other.key", &other.signing_key.serialize_pem());
        let junk = write(
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        );
        let missing = dir.join("missing.pem").display().to_string();
        let with = |endpoint: &str, tls: &str| {
            format!(
                "{MINIMAL}[config_center]\ntype = \"etcd\"\nendpoints = [\"{endpoint}\"]\n{tls}\n"
            )
        };
        let https = "https://127.0.0.1:2379";

        let (cfg, warnings) = parse(&with(https, "")).unwrap();
        let tls = cfg.config_center.unwrap().tls.expect("https needs TLS");
        assert!(tls.verify && tls.ca.is_none(), "{tls:?}: the webpki roots");
        assert!(warnings.is_empty());
        let (cfg, _) = parse(&with(
            https,
            &format!("tls = {{ ca = {ca:?}, cert = {ca:?}, key = {key:?} }}"),
        ))
        .unwrap();
        let tls = cfg.config_center.unwrap().tls.unwrap();
        assert_eq!(tls.cert.as_deref(), Some(std::path::Path::new(&ca)));
        let (_, warnings) = parse(&with(https, "tls = { verify = false }")).unwrap();
        assert!(
            warnings[0].0.contains("config_center.tls.verify: false"),
            "{warnings:?}"
        );
        assert_eq!(
            parse(&with("http://127.0.0.1:2379", ""))
                .unwrap()
                .0
                .config_center
                .unwrap()
                .tls,
            None
        );

        let line = MINIMAL.lines().count() + 4;
        for (endpoint, tls, key_path, want) in [
            (
                https,
                format!("tls = {{ ca = {missing:?} }}"),
                "config_center.tls.ca",
                "cannot read certificates from",
            ),
            (
                https,
                format!("tls = {{ ca = {junk:?} }}"),
                "config_center.tls.ca",
                "cannot parse certificates in",
            ),
            (
                https,
                format!("tls = {{ ca = {key:?} }}"),
                "config_center.tls.ca",
                "holds no PEM certificate",
            ),
            (
                https,
                format!("tls = {{ cert = {ca:?} }}"),
                "config_center.tls.cert",
                "cert and key go together",
            ),
            (
                https,
                format!("tls = {{ cert = {ca:?}, key = {missing:?} }}"),
                "config_center.tls.key",
                "cannot read a private key",
            ),
            (
                https,
                format!("tls = {{ cert = {ca:?}, key = {other_key:?} }}"),
                "config_center.tls.cert",
                "do not go together",
            ),
            (
                https,
                "tls = { ca = \"\" }".to_owned(),
                "config_center.tls.ca",
                "must not be empty",
            ),
            (
                "http://127.0.0.1:2379",
                format!("tls = {{ ca = {ca:?} }}"),
                "config_center.tls",
                "no endpoint is https://",
            ),
            (
                https,
                "tls = { verify = true, sni = \"x\" }".to_owned(),
                "config_center.tls.sni",
                "unknown field",
            ),
        ] {
            let e = err(&with(endpoint, &tls));
            assert_eq!(e.key(), Some(key_path), "{tls}: {e}");
            assert_eq!(e.line(), Some(line), "{tls}: {e}");
            assert!(e.message().contains(want), "{tls}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
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
                "type = \"etcd\"\nendpoints = [\"ftp://x:1\"]".to_owned(),
                "config_center.endpoints[0]",
                "expected a URL",
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
    fn resolver_and_resolve_settings() {
        let (c, _) = parse(MINIMAL).unwrap();
        assert_eq!(c.resolve, Resolve::default());
        assert!(
            c.resolve.servers.is_empty(),
            "the system resolver by default"
        );
        let text = format!(
            "resolver = [\"10.0.0.2\", \"10.0.0.3:5353\", \"[fd00::53]:53\"]\n{MINIMAL}\
             [resolve]\nmin = \"100ms\"\nmax = \"10s\"\ninterval = 5\ntimeout = \"300ms\"\n"
        );
        let (c, warnings) = parse(&text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let servers: Vec<String> = c.resolve.servers.iter().map(ToString::to_string).collect();
        assert_eq!(servers, ["10.0.0.2:53", "10.0.0.3:5353", "[fd00::53]:53"]);
        assert_eq!(
            (
                c.resolve.min,
                c.resolve.max,
                c.resolve.interval,
                c.resolve.timeout
            ),
            (
                Duration::from_millis(100),
                Duration::from_secs(10),
                Duration::from_secs(5),
                Duration::from_millis(300)
            )
        );
        for (top, table, key, want) in [
            ("resolver = []", "", "resolver", "at least one server"),
            (
                "resolver = [\"dns.example:53\"]",
                "",
                "resolver[0]",
                "IP address",
            ),
            ("resolver = [\"10.0.0.2:0\"]", "", "resolver[0]", "port 0"),
            (
                "resolver = [\"10.0.0.2\", \"10.0.0.2:53\"]",
                "",
                "resolver[1]",
                "listed twice",
            ),
            ("", "min = 0", "resolve.min", "longer than zero"),
            (
                "",
                "timeout = \"0ms\"",
                "resolve.timeout",
                "longer than zero",
            ),
            (
                "",
                "min = \"5s\"\nmax = \"2s\"",
                "resolve.max",
                "must not be shorter than min",
            ),
            (
                "",
                "min = \"400s\"",
                "resolve.max",
                "must not be shorter than min",
            ),
            ("", "ttl = 5", "resolve.ttl", "unknown field"),
        ] {
            let e = err(&format!("{top}\n{MINIMAL}[resolve]\n{table}\n"));
            assert_eq!(e.key(), Some(key), "{top} {table}: {e}");
            assert!(e.message().contains(want), "{top} {table}: {e}");
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
