//! The dynamic configuration: routes and upstreams added at run time (admin API now, etcd later)
//! on top of the configuration file, and how a change to either reaches the cores.
//!
//! A [`Dynamic`] holds the file's path and last good [`Config`], and two stores keyed by id: the
//! route objects and the upstream objects, each kept as the JSON it was given (plus APISIX's
//! `create_time`/`update_time`) next to its translation by [`crate::apisix`]. Every change builds
//! a complete new `Config` from scratch: the file's upstreams and routes, then the stored
//! upstreams (named `upstreams/ID`), then for each stored route its inline upstream (named
//! `routes/ID`) and the route itself, pointing at its upstream by index. The whole is validated,
//! and only then sent to every core with one generation ([`crate::runtime::server::Handle::reload`]),
//! which keeps the pools of every node that stays; so editing a route never closes an upstream
//! connection.
//!
//! Invariants:
//! - What the cores run is always the last build that validated in full; a change that fails
//!   changes neither the stores nor the cores.
//! - Every stored value translated on its own when it was stored. What can still keep one out of
//!   a build is its relation to others: an `upstream_id` naming no upstream, or an id or name the
//!   file already uses. Such an entry is *skipped* (logged once, naming its key) rather than
//!   failing the whole build, because an etcd watcher cannot refuse a value. The admin API is
//!   stricter: a change of its that would skip an entry not skipped before is refused, so an
//!   admin user never loses a route silently (deleting an upstream a route uses is refused).
//! - Builds and applies happen under one lock, so generations reach the cores in the order the
//!   changes were made. The lock is held by the admin thread, the SIGHUP handler or a watcher,
//!   never by a core, and never across network I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use serde_json::Value;

use crate::apisix::{check_id, parse_route, parse_upstream, RouteSpec, RouteUpstream};
use crate::config::{Config, Upstream, MAX_DURATION};
use crate::runtime::server::Handle;

/// Which store an operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Route,
    Upstream,
}

impl Kind {
    /// The collection's name in admin paths and etcd keys: `routes`, `upstreams`.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Route => "routes",
            Kind::Upstream => "upstreams",
        }
    }

    fn key(self, id: &str) -> String {
        format!("{}/{id}", self.collection())
    }
}

/// Why a change was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    /// The value or the configuration it would make is invalid (HTTP 400).
    Invalid(String),
    /// No object has this id (HTTP 404).
    NotFound(String),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeError::Invalid(m) | ChangeError::NotFound(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ChangeError {}

/// Hands a validated configuration to the cores; `Handle::reload` in the binary, a recorder in
/// tests.
pub type Apply = Box<dyn Fn(Config) + Send + Sync>;

/// The file configuration plus the stores of dynamic routes and upstreams. Shared through an
/// `Arc` by the admin thread, the signal handler and (later) a config-center watcher.
pub struct Dynamic {
    state: Mutex<State>,
    apply: Apply,
}

#[derive(Clone)]
struct Entry<T> {
    /// As given, with `id` and the timestamps filled in; what GET answers.
    value: Value,
    parsed: T,
}

struct State {
    path: PathBuf,
    file: Config,
    routes: BTreeMap<String, Entry<RouteSpec>>,
    upstreams: BTreeMap<String, Entry<Upstream>>,
    /// Keys (`routes/ID`) left out of the applied configuration, with why.
    skipped: BTreeMap<String, String>,
    /// The last id made up for a POST, so two in the same microsecond still differ.
    last_made_id: u64,
}

/// A value translated by [`crate::apisix`], before it is stored.
enum Parsed {
    Route(RouteSpec),
    Upstream(Box<Upstream>),
}

/// A build: the configuration and the keys it had to leave out.
struct Built {
    cfg: Config,
    skipped: BTreeMap<String, String>,
}

impl Dynamic {
    /// Starts with empty stores on top of `file`, the configuration loaded from `path` that the
    /// cores already run.
    pub fn new(path: PathBuf, file: Config, apply: Apply) -> Dynamic {
        Dynamic {
            state: Mutex::new(State {
                path,
                file,
                routes: BTreeMap::new(),
                upstreams: BTreeMap::new(),
                skipped: BTreeMap::new(),
                last_made_id: 0,
            }),
            apply,
        }
    }

    /// As [`Dynamic::new`], applying changes to the running cores.
    pub fn with_handle(path: PathBuf, file: Config, handle: Handle) -> Dynamic {
        Dynamic::new(path, file, Box::new(move |cfg| handle.reload(cfg)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the stores half-changed in a way that
        // matters more than stopping the admin API would, so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The admin key of the file's `[admin]`, read per request so SIGHUP can change it.
    pub fn admin_key(&self) -> Option<String> {
        self.lock().file.admin.as_ref().and_then(|a| a.key.clone())
    }

    /// The configuration file's path.
    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    /// The stored object, as GET shows it.
    pub fn get(&self, kind: Kind, id: &str) -> Option<Value> {
        let st = self.lock();
        match kind {
            Kind::Route => st.routes.get(id).map(|e| e.value.clone()),
            Kind::Upstream => st.upstreams.get(id).map(|e| e.value.clone()),
        }
    }

    /// Every stored object of `kind`, by id.
    pub fn list(&self, kind: Kind) -> Vec<(String, Value)> {
        let st = self.lock();
        match kind {
            Kind::Route => st
                .routes
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect(),
            Kind::Upstream => st
                .upstreams
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect(),
        }
    }

    /// Creates or replaces object `id` (admin PUT) and applies the result. Returns the stored
    /// value and whether it was created.
    pub fn put(
        &self,
        kind: Kind,
        id: &str,
        mut value: Value,
    ) -> Result<(Value, bool), ChangeError> {
        check_id(id).map_err(|e| ChangeError::Invalid(format!("id: {e}")))?;
        // Translated before the id and timestamps are filled in, so an `id` in the body that
        // differs from the path is caught rather than overwritten. Resolving node names happens
        // here too, outside the lock.
        let parsed = match kind {
            Kind::Route => Parsed::Route(parse_route(id, &value).map_err(|e| invalid(&e))?),
            Kind::Upstream => Parsed::Upstream(Box::new(
                parse_upstream(&kind.key(id), &value, "").map_err(|e| invalid(&e))?,
            )),
        };
        let mut st = self.lock();
        let previous_created = match kind {
            Kind::Route => st.routes.get(id).map(|e| &e.value),
            Kind::Upstream => st.upstreams.get(id).map(|e| &e.value),
        }
        .and_then(|v| v.get("create_time").cloned());
        let now = unix_now();
        if let Value::Object(m) = &mut value {
            m.insert("id".into(), Value::String(id.to_owned()));
            // As APISIX does: timestamps given are kept; a missing create_time carries over
            // from the object replaced, a missing update_time is now.
            if !m.contains_key("create_time") {
                m.insert(
                    "create_time".into(),
                    previous_created.unwrap_or_else(|| Value::from(now)),
                );
            }
            m.entry("update_time").or_insert_with(|| Value::from(now));
        }
        let stored = value.clone();
        let created = match parsed {
            Parsed::Route(parsed) => {
                let old = st.routes.insert(
                    id.to_owned(),
                    Entry {
                        value: stored,
                        parsed,
                    },
                );
                let created = old.is_none();
                if let Err(e) = self.apply_strict(&mut st) {
                    restore(&mut st.routes, id, old);
                    return Err(e);
                }
                created
            }
            Parsed::Upstream(parsed) => {
                let old = st.upstreams.insert(
                    id.to_owned(),
                    Entry {
                        value: stored,
                        parsed: *parsed,
                    },
                );
                let created = old.is_none();
                if let Err(e) = self.apply_strict(&mut st) {
                    restore(&mut st.upstreams, id, old);
                    return Err(e);
                }
                created
            }
        };
        info!(
            "admin: {} {}",
            if created { "created" } else { "updated" },
            kind.key(id)
        );
        Ok((value, created))
    }

    /// Stores `value` under a new id (admin POST on the collection); returns the id and value.
    pub fn create(&self, kind: Kind, value: Value) -> Result<(String, Value), ChangeError> {
        if value.get("id").is_some() {
            return Err(ChangeError::Invalid(
                "id: POST makes up the id; to choose it, PUT to /apisix/admin/{collection}/ID"
                    .replace("{collection}", kind.collection()),
            ));
        }
        let id = {
            let mut st = self.lock();
            // 20 digits like APISIX's ids; the time keeps them rising across restarts.
            let mut n = (unix_now() * 1_000_000).max(st.last_made_id + 1);
            while st.routes.contains_key(&format!("{n:020}"))
                || st.upstreams.contains_key(&format!("{n:020}"))
            {
                n += 1;
            }
            st.last_made_id = n;
            format!("{n:020}")
        };
        let (value, _) = self.put(kind, &id, value)?;
        Ok((id, value))
    }

    /// Deletes object `id` (admin DELETE) and applies the result. An upstream that a route still
    /// uses is not deleted.
    pub fn delete(&self, kind: Kind, id: &str) -> Result<(), ChangeError> {
        let mut st = self.lock();
        let not_found = || ChangeError::NotFound(format!("{} not found", kind.key(id)));
        match kind {
            Kind::Route => {
                let old = st.routes.remove(id).ok_or_else(not_found)?;
                if let Err(e) = self.apply_strict(&mut st) {
                    st.routes.insert(id.to_owned(), old);
                    return Err(e);
                }
            }
            Kind::Upstream => {
                if !st.upstreams.contains_key(id) {
                    return Err(not_found());
                }
                let users: Vec<&str> = st
                    .routes
                    .iter()
                    .filter(|(_, e)| matches!(&e.parsed.upstream, RouteUpstream::Id(u) if u == id))
                    .map(|(r, _)| r.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(ChangeError::Invalid(format!(
                        "can not delete upstreams/{id}: route {} still uses it; change or \
                         delete the route first",
                        users.join(", route ")
                    )));
                }
                let old = st.upstreams.remove(id).ok_or_else(not_found)?;
                if let Err(e) = self.apply_strict(&mut st) {
                    st.upstreams.insert(id.to_owned(), old);
                    return Err(e);
                }
            }
        }
        info!("admin: deleted {}", kind.key(id));
        Ok(())
    }

    /// Re-reads the configuration file and applies it with the dynamic objects on top (SIGHUP,
    /// `POST /reload`). A file that is invalid, or that would push a dynamic object out (an id
    /// or upstream name it now uses too), changes nothing.
    pub fn reload_file(&self) -> Result<(), String> {
        let mut st = self.lock();
        let result = match Config::load(&st.path) {
            Err(e) => Err(e.to_string()),
            Ok((cfg, warnings)) => {
                for w in &warnings {
                    warn!("{w}");
                }
                if cfg.admin.as_ref().map(|a| a.addr) != st.file.admin.as_ref().map(|a| a.addr) {
                    warn!("reload: [admin] addr changes take effect only after a restart");
                }
                let old = std::mem::replace(&mut st.file, cfg);
                match self.apply_strict(&mut st) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        st.file = old;
                        Err(e.to_string())
                    }
                }
            }
        };
        if let Err(e) = &result {
            error!("reload refused, the running configuration stays: {e}");
        }
        result
    }

    /// Sets or (None) deletes one route as a config center reports it. An invalid value is
    /// logged with its key and skipped; the previous value, if any, stays.
    pub fn set_route(&self, id: &str, value: Option<Value>) {
        self.set(Kind::Route, id, value);
    }

    /// As [`Dynamic::set_route`], for an upstream. Routes using a deleted upstream are skipped
    /// (and logged) until it comes back.
    pub fn set_upstream(&self, id: &str, value: Option<Value>) {
        self.set(Kind::Upstream, id, value);
    }

    fn set(&self, kind: Kind, id: &str, value: Option<Value>) {
        let mut st = self.lock();
        match value {
            None => {
                let removed = match kind {
                    Kind::Route => st.routes.remove(id).is_some(),
                    Kind::Upstream => st.upstreams.remove(id).is_some(),
                };
                if !removed {
                    return;
                }
            }
            Some(v) => match kind {
                Kind::Route => match parse_stored_route(id, &v) {
                    Ok(parsed) => {
                        st.routes.insert(id.to_owned(), Entry { value: v, parsed });
                    }
                    Err(e) => return skip_invalid(kind, id, &e),
                },
                Kind::Upstream => match parse_stored_upstream(id, &v) {
                    Ok(parsed) => {
                        st.upstreams
                            .insert(id.to_owned(), Entry { value: v, parsed });
                    }
                    Err(e) => return skip_invalid(kind, id, &e),
                },
            },
        }
        self.apply_lenient(&mut st);
    }

    /// Replaces both stores at once (a config center's initial load, or a reload after its
    /// history was compacted). Invalid values are logged and skipped; for an id whose new value
    /// is invalid the value held so far stays, so a bad write never takes a route down.
    pub fn replace_all(&self, routes: Vec<(String, Value)>, upstreams: Vec<(String, Value)>) {
        let mut st = self.lock();
        let mut new_routes = BTreeMap::new();
        for (id, v) in routes {
            match parse_stored_route(&id, &v) {
                Ok(parsed) => {
                    new_routes.insert(id, Entry { value: v, parsed });
                }
                Err(e) => {
                    skip_invalid(Kind::Route, &id, &e);
                    if let Some(old) = st.routes.get(&id) {
                        new_routes.insert(id, old.clone());
                    }
                }
            }
        }
        let mut new_upstreams = BTreeMap::new();
        for (id, v) in upstreams {
            match parse_stored_upstream(&id, &v) {
                Ok(parsed) => {
                    new_upstreams.insert(id, Entry { value: v, parsed });
                }
                Err(e) => {
                    skip_invalid(Kind::Upstream, &id, &e);
                    if let Some(old) = st.upstreams.get(&id) {
                        new_upstreams.insert(id, old.clone());
                    }
                }
            }
        }
        st.routes = new_routes;
        st.upstreams = new_upstreams;
        self.apply_lenient(&mut st);
    }

    /// Builds, and applies unless the build leaves out an entry the running one did not.
    fn apply_strict(&self, st: &mut State) -> Result<(), ChangeError> {
        let built = build(st);
        let newly: Vec<String> = built
            .skipped
            .iter()
            .filter(|(k, _)| !st.skipped.contains_key(*k))
            .map(|(k, why)| format!("{k}: {why}"))
            .collect();
        if !newly.is_empty() {
            return Err(ChangeError::Invalid(newly.join("; ")));
        }
        check(&built.cfg).map_err(ChangeError::Invalid)?;
        (self.apply)(built.cfg);
        st.skipped = built.skipped;
        Ok(())
    }

    /// Builds and applies whatever validates, logging entries left out for the first time.
    fn apply_lenient(&self, st: &mut State) {
        let built = build(st);
        for (k, why) in &built.skipped {
            if !st.skipped.contains_key(k) {
                warn!("{k}: skipped: {why}");
            }
        }
        if let Err(e) = check(&built.cfg) {
            // Every entry was checked on its own and placed by `build`; reaching this is a bug,
            // and the cores keep what they run.
            error!("dynamic configuration not applied: {e}");
            return;
        }
        (self.apply)(built.cfg);
        st.skipped = built.skipped;
    }
}

fn invalid(e: &crate::apisix::ApisixError) -> ChangeError {
    ChangeError::Invalid(e.to_string())
}

fn restore<T>(map: &mut BTreeMap<String, Entry<T>>, id: &str, old: Option<Entry<T>>) {
    match old {
        Some(e) => {
            map.insert(id.to_owned(), e);
        }
        None => {
            map.remove(id);
        }
    }
}

fn parse_stored_route(id: &str, v: &Value) -> Result<RouteSpec, String> {
    check_id(id)?;
    parse_route(id, v).map_err(|e| e.to_string())
}

fn parse_stored_upstream(id: &str, v: &Value) -> Result<Upstream, String> {
    check_id(id)?;
    parse_upstream(&Kind::Upstream.key(id), v, "").map_err(|e| e.to_string())
}

fn skip_invalid(kind: Kind, id: &str, why: &str) {
    warn!("{}: skipped, invalid: {why}", kind.key(id));
}

/// The file's configuration with every placeable stored object on top. Stored upstreams come
/// first so routes can refer to them by index; routes follow in id order, after the file's.
fn build(st: &State) -> Built {
    let mut cfg = st.file.clone();
    let mut skipped = BTreeMap::new();
    let file_routes: HashSet<String> = cfg.routes.iter().map(|r| r.id.clone()).collect();
    let file_upstreams: HashSet<String> = cfg.upstreams.iter().map(|u| u.name.clone()).collect();
    let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(st.upstreams.len());
    cfg.upstreams.reserve(st.upstreams.len() + st.routes.len());
    for (id, e) in &st.upstreams {
        let key = Kind::Upstream.key(id);
        if file_upstreams.contains(&key) {
            skipped.insert(
                key.clone(),
                format!("the file defines an upstream named {key:?}"),
            );
            continue;
        }
        by_id.insert(id, cfg.upstreams.len());
        cfg.upstreams.push(e.parsed.clone());
    }
    cfg.routes.reserve(st.routes.len());
    for (id, e) in &st.routes {
        let key = Kind::Route.key(id);
        if file_routes.contains(id) {
            skipped.insert(
                key,
                format!("a route of the configuration file has the id {id:?}; choose another"),
            );
            continue;
        }
        let upstream = match &e.parsed.upstream {
            RouteUpstream::Inline(u) => {
                if file_upstreams.contains(&u.name) {
                    skipped.insert(
                        key,
                        format!("the file defines an upstream named {:?}", u.name),
                    );
                    continue;
                }
                cfg.upstreams.push((**u).clone());
                cfg.upstreams.len() - 1
            }
            RouteUpstream::Id(uid) => match by_id.get(uid.as_str()) {
                Some(&i) => i,
                None => {
                    let why = if st.upstreams.contains_key(uid) {
                        format!("its upstream upstreams/{uid} is skipped")
                    } else {
                        format!("upstream_id {uid:?} names no upstream")
                    };
                    skipped.insert(key, why);
                    continue;
                }
            },
        };
        let mut route = e.parsed.route.clone();
        route.upstream = upstream;
        cfg.routes.push(route);
    }
    Built { cfg, skipped }
}

/// Checks the invariants the runtime relies on, over the whole merged configuration: the file
/// loader and `apisix` each keep them for their part, and this makes sure the parts fit.
fn check(cfg: &Config) -> Result<(), String> {
    if cfg.routes.is_empty() || cfg.upstreams.is_empty() {
        return Err("at least one route and one upstream are required".into());
    }
    let mut names = HashSet::with_capacity(cfg.upstreams.len());
    for u in &cfg.upstreams {
        if !names.insert(u.name.as_str()) {
            return Err(format!("two upstreams are named {:?}", u.name));
        }
        if u.nodes.is_empty() || u.nodes.iter().any(|n| n.weight == 0) {
            return Err(format!("upstream {:?} has no usable node", u.name));
        }
        let t = &u.timeout;
        if [
            t.connect,
            t.send,
            t.read,
            u.retry_timeout,
            u.keepalive_pool.idle_timeout,
        ]
        .iter()
        .any(|d| *d > MAX_DURATION)
        {
            return Err(format!("upstream {:?} has a duration over a year", u.name));
        }
    }
    let mut ids = HashSet::with_capacity(cfg.routes.len());
    for r in &cfg.routes {
        if !ids.insert(r.id.as_str()) {
            return Err(format!("two routes have the id {:?}", r.id));
        }
        if r.uris.is_empty() {
            return Err(format!("route {:?} has no uri", r.id));
        }
        if r.upstream >= cfg.upstreams.len() {
            return Err(format!("route {:?} points at no upstream", r.id));
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Loads the file at `path` for [`Dynamic::new`]; warnings are logged.
pub fn load_file(path: &Path) -> Result<Config, String> {
    let (cfg, warnings) = Config::load(path).map_err(|e| e.to_string())?;
    for w in &warnings {
        warn!("{w}");
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    const FILE: &str = r#"
[[listen]]
addr = "127.0.0.1:0"
[upstreams.file]
nodes = { "127.0.0.1:9001" = 1 }
[[routes]]
uris = ["/*"]
upstream = "file"
"#;

    /// A file in the temp dir, removed on drop.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new() -> TempPath {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "hearth-dynamic-{}-{}.toml",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            TempPath(std::env::temp_dir().join(name))
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A `Dynamic` whose applied configurations are recorded instead of sent to cores.
    fn dynamic(file: &str) -> (Dynamic, Arc<Mutex<Vec<Config>>>, TempPath) {
        let tmp = TempPath::new();
        std::fs::write(tmp.path(), file).unwrap();
        let cfg = Config::load(tmp.path()).unwrap().0;
        let applied = Arc::new(Mutex::new(Vec::new()));
        let rec = applied.clone();
        let d = Dynamic::new(
            tmp.path().to_owned(),
            cfg,
            Box::new(move |c| rec.lock().unwrap().push(c)),
        );
        (d, applied, tmp)
    }

    fn last(applied: &Mutex<Vec<Config>>) -> Config {
        applied
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("something was applied")
    }

    fn up(port: u16) -> Value {
        json!({ "nodes": { format!("127.0.0.1:{port}"): 1 } })
    }

    fn route_to(upstream_id: &str) -> Value {
        json!({ "uris": ["/r/*"], "upstream_id": upstream_id })
    }

    #[test]
    fn a_put_route_lands_after_the_file_routes_with_its_inline_upstream() {
        let (d, applied, _tmp) = dynamic(FILE);
        let (v, created) = d
            .put(
                Kind::Route,
                "r1",
                json!({"uri": "/a", "upstream": up(9002)}),
            )
            .unwrap();
        assert!(created);
        assert_eq!(v["id"], "r1");
        assert!(v["create_time"].is_u64() && v["update_time"].is_u64());
        let c = last(&applied);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].id, "r1");
        assert_eq!(c.upstreams[c.routes[1].upstream].name, "routes/r1");
        assert_eq!(d.get(Kind::Route, "r1"), Some(v));
        // Replacing keeps create_time and reports an update.
        let (v2, created) = d
            .put(
                Kind::Route,
                "r1",
                json!({"uri": "/b", "upstream": up(9002)}),
            )
            .unwrap();
        assert!(!created);
        assert_eq!(v2["create_time"], d.list(Kind::Route)[0].1["create_time"]);
        assert_eq!(applied.lock().unwrap().len(), 2);
    }

    #[test]
    fn upstream_ids_refer_by_index_and_in_use_upstreams_stay() {
        let (d, applied, _tmp) = dynamic(FILE);
        let e = d.put(Kind::Route, "r1", route_to("u1")).unwrap_err();
        assert_eq!(
            e,
            ChangeError::Invalid("routes/r1: upstream_id \"u1\" names no upstream".into())
        );
        assert!(
            applied.lock().unwrap().is_empty(),
            "a refused change applies nothing"
        );
        assert_eq!(d.get(Kind::Route, "r1"), None, "and stores nothing");
        d.put(Kind::Upstream, "u1", up(9003)).unwrap();
        d.put(Kind::Route, "r1", route_to("u1")).unwrap();
        let c = last(&applied);
        assert_eq!(c.upstreams[c.routes[1].upstream].name, "upstreams/u1");
        let e = d.delete(Kind::Upstream, "u1").unwrap_err();
        assert!(e.to_string().contains("route r1 still uses it"), "{e}");
        assert!(d.get(Kind::Upstream, "u1").is_some());
        d.delete(Kind::Route, "r1").unwrap();
        d.delete(Kind::Upstream, "u1").unwrap();
        assert_eq!(last(&applied).upstreams.len(), 1);
        assert!(matches!(
            d.delete(Kind::Route, "r1"),
            Err(ChangeError::NotFound(_))
        ));
    }

    #[test]
    fn invalid_values_and_clashes_change_nothing() {
        let (d, applied, _tmp) = dynamic(FILE);
        let e = d
            .put(
                Kind::Route,
                "r1",
                json!({"uri": "/a", "upstream": up(9002), "plugins": {"x": {}}}),
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "plugins.x: plugins are not supported");
        // The file's route is "1".
        let e = d
            .put(Kind::Route, "1", json!({"uri": "/a", "upstream": up(9002)}))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("configuration file has the id \"1\""),
            "{e}"
        );
        let e = d
            .put(
                Kind::Route,
                "r2",
                json!({"id": "r3", "uri": "/a", "upstream": up(9002)}),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "id: \"r3\" does not match the id in the key, \"r2\""
        );
        let e = d.put(Kind::Route, "a/b", route_to("x")).unwrap_err();
        assert!(e.to_string().starts_with("id: "), "{e}");
        assert!(applied.lock().unwrap().is_empty());
        assert!(d.list(Kind::Route).is_empty());
    }

    #[test]
    fn post_makes_up_distinct_ids() {
        let (d, _applied, _tmp) = dynamic(FILE);
        let (a, _) = d.create(Kind::Upstream, up(9002)).unwrap();
        let (b, v) = d.create(Kind::Upstream, up(9003)).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert_eq!(v["id"], b.as_str());
        assert!(d
            .create(
                Kind::Upstream,
                json!({"id": "x", "nodes": {"127.0.0.1:1": 1}})
            )
            .is_err());
    }

    #[test]
    fn file_reload_keeps_dynamic_objects() {
        let (d, applied, tmp) = dynamic(FILE);
        d.put(
            Kind::Route,
            "r1",
            json!({"uri": "/a", "upstream": up(9002)}),
        )
        .unwrap();
        std::fs::write(tmp.path(), FILE.replace("9001", "9009")).unwrap();
        d.reload_file().unwrap();
        let c = last(&applied);
        assert_eq!(c.upstreams[0].nodes[0].addr.port(), 9009);
        assert_eq!(c.routes[1].id, "r1");
        // A broken file changes nothing.
        std::fs::write(tmp.path(), "workers = \"x\"").unwrap();
        let n = applied.lock().unwrap().len();
        assert!(d.reload_file().is_err());
        assert_eq!(applied.lock().unwrap().len(), n);
        // Neither does a file that would push a dynamic route out.
        let two = format!("{FILE}[[routes]]\nuris = [\"/b\"]\nupstream = \"file\"\n");
        std::fs::write(tmp.path(), &two).unwrap();
        d.put(Kind::Route, "2", json!({"uri": "/c", "upstream": up(9002)}))
            .unwrap();
        let e = d.reload_file().unwrap_err();
        assert!(e.contains("routes/2"), "{e}");
        assert_eq!(last(&applied).upstreams[0].nodes[0].addr.port(), 9009);
    }

    #[test]
    fn a_watcher_skips_what_does_not_fit_and_keeps_the_rest() {
        let (d, applied, _tmp) = dynamic(FILE);
        // A route may arrive before its upstream: skipped until the upstream is there.
        d.set_route("r1", Some(route_to("u1")));
        assert_eq!(last(&applied).routes.len(), 1);
        d.set_upstream("u1", Some(up(9002)));
        assert_eq!(last(&applied).routes.len(), 2);
        // An invalid value is skipped and the last good one stays.
        let n = applied.lock().unwrap().len();
        d.set_route(
            "r1",
            Some(json!({"uri": "/x", "upstream_id": "u1", "bogus": 1})),
        );
        assert_eq!(applied.lock().unwrap().len(), n);
        assert_eq!(d.get(Kind::Route, "r1"), Some(route_to("u1")));
        // Deleting the upstream takes the route out (a watcher cannot refuse).
        d.set_upstream("u1", None);
        assert_eq!(last(&applied).routes.len(), 1);
        d.replace_all(
            vec![
                ("r2".into(), json!({"uri": "/y", "upstream": up(9003)})),
                ("r3".into(), json!({"uri": 5})),
            ],
            vec![],
        );
        let c = last(&applied);
        let ids: Vec<_> = c.routes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["1", "r2"]);
        assert!(d.get(Kind::Route, "r1").is_none());
    }
}
