//! The dynamic configuration: routes and upstreams added at run time (admin API, etcd) on top
//! of the configuration file, and how a change to either reaches the cores.
//!
//! A [`Dynamic`] holds the file's path and last good [`Config`], and two stores keyed by id: the
//! route objects and the upstream objects, each kept as the JSON it was given (plus APISIX's
//! `create_time`/`update_time`) next to its translation by [`crate::apisix`]. Every change builds
//! a complete new `Config` from scratch: the file's upstreams and routes, then the stored
//! upstreams (named `upstreams/ID`), then for each stored route its inline upstream (named
//! `routes/ID`) and the route itself, pointing at its upstream by index: a route's `upstream_id`
//! names a stored upstream or, when none has that id, one of the file's `[upstreams.NAME]` (which
//! the API can use but not delete: they change with the file). The whole is validated,
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
//!
//! With a config center, etcd is the source of truth: [`CenterSink`] feeds the store what the
//! watcher reads (JSON is read there; an unreadable or invalid value is logged with its etcd key
//! and skipped, and the last good value for that id stays), and the admin API only *checks* a
//! change against the store (`check_put`, `check_create`, `check_delete`: same rules, nothing
//! changes) before writing it to etcd, whose watch then applies it here like any other change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{error, info, warn};
use serde_json::Value;

use crate::admin_state::{Saved, StateFile};
use crate::apisix::{check_id, parse_route, parse_upstream, RouteSpec, RouteUpstream};
use crate::config::{Config, ConfigError, Resolve, Upstream, MAX_DURATION};
use crate::config_center::Sink;
use crate::runtime::server::Handle;

/// Which store an operation is about; the same two kinds the config center follows, and
/// `Kind::segment` names the collection in admin paths and etcd keys.
pub use crate::config_center::Kind;

/// `routes/ID` or `upstreams/ID`: how messages name an entry, and the name of a stored
/// upstream in the built configuration.
fn key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.segment())
}

/// Why a change was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    /// The value or the configuration it would make is invalid (HTTP 400).
    Invalid(String),
    /// No object has this id (HTTP 404).
    NotFound(String),
    /// The change is valid but could not be kept: the admin state file could not be written
    /// (HTTP 503). It was not applied either.
    Unavailable(String),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeError::Invalid(m) | ChangeError::NotFound(m) | ChangeError::Unavailable(m) => {
                f.write_str(m)
            }
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
    /// Put before `routes/ID` in log lines: empty, or a config center's `{prefix}/`.
    key_prefix: String,
    /// Where every change of the admin API is written before it is applied (`[admin] state`).
    state_file: Option<StateFile>,
}

/// Whether a change is applied, or only checked (the admin API in etcd mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Check,
}

/// Whether a commit writes the stores to the state file: yes when they changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Save {
    Yes,
    No,
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
                key_prefix: String::new(),
                state_file: None,
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
    pub fn put(&self, kind: Kind, id: &str, value: Value) -> Result<(Value, bool), ChangeError> {
        self.put_as(kind, id, value, Mode::Apply)
    }

    /// As [`Dynamic::put`], but only checks: neither the stores nor the cores change. For the
    /// admin API in etcd mode, which writes the returned value to etcd and lets the watcher
    /// apply it.
    pub fn check_put(
        &self,
        kind: Kind,
        id: &str,
        value: Value,
    ) -> Result<(Value, bool), ChangeError> {
        self.put_as(kind, id, value, Mode::Check)
    }

    fn put_as(
        &self,
        kind: Kind,
        id: &str,
        mut value: Value,
        mode: Mode,
    ) -> Result<(Value, bool), ChangeError> {
        check_id(id).map_err(|e| ChangeError::Invalid(format!("id: {e}")))?;
        // Translated before the id and timestamps are filled in, so an `id` in the body that
        // differs from the path is caught rather than overwritten. Resolving node names happens
        // here too, outside the lock, with the file's `resolver`.
        let resolve = self.lock().file.resolve.clone();
        let parsed = match kind {
            Kind::Route => {
                Parsed::Route(parse_route(id, &value, &resolve).map_err(|e| invalid(&e))?)
            }
            Kind::Upstream => Parsed::Upstream(Box::new(
                parse_upstream(&key(kind, id), &value, "", &resolve).map_err(|e| invalid(&e))?,
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
        let existed = match parsed {
            Parsed::Route(parsed) => {
                let entry = Entry {
                    value: stored,
                    parsed,
                };
                self.change(&mut st, |s| &mut s.routes, id, Some(entry), mode)?
            }
            Parsed::Upstream(parsed) => {
                let entry = Entry {
                    value: stored,
                    parsed: *parsed,
                };
                self.change(&mut st, |s| &mut s.upstreams, id, Some(entry), mode)?
            }
        };
        let created = !existed;
        if mode == Mode::Apply {
            info!(
                "admin: {} {}",
                if created { "created" } else { "updated" },
                key(kind, id)
            );
        }
        Ok((value, created))
    }

    /// Stores `value` under a new id (admin POST on the collection); returns the id and value.
    pub fn create(&self, kind: Kind, value: Value) -> Result<(String, Value), ChangeError> {
        self.create_as(kind, value, Mode::Apply)
    }

    /// As [`Dynamic::create`], but only checks (see [`Dynamic::check_put`]); the id is made up
    /// all the same.
    pub fn check_create(&self, kind: Kind, value: Value) -> Result<(String, Value), ChangeError> {
        self.create_as(kind, value, Mode::Check)
    }

    fn create_as(
        &self,
        kind: Kind,
        value: Value,
        mode: Mode,
    ) -> Result<(String, Value), ChangeError> {
        if value.get("id").is_some() {
            return Err(ChangeError::Invalid(
                "id: POST makes up the id; to choose it, PUT to /apisix/admin/{collection}/ID"
                    .replace("{collection}", kind.segment()),
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
        let (value, _) = self.put_as(kind, &id, value, mode)?;
        Ok((id, value))
    }

    /// Deletes object `id` (admin DELETE) and applies the result. An upstream that a route still
    /// uses is not deleted.
    pub fn delete(&self, kind: Kind, id: &str) -> Result<(), ChangeError> {
        self.delete_as(kind, id, Mode::Apply)
    }

    /// As [`Dynamic::delete`], but only checks (see [`Dynamic::check_put`]).
    pub fn check_delete(&self, kind: Kind, id: &str) -> Result<(), ChangeError> {
        self.delete_as(kind, id, Mode::Check)
    }

    fn delete_as(&self, kind: Kind, id: &str, mode: Mode) -> Result<(), ChangeError> {
        let mut st = self.lock();
        let not_found = || ChangeError::NotFound(format!("{} not found", key(kind, id)));
        match kind {
            Kind::Route => {
                if !st.routes.contains_key(id) {
                    return Err(not_found());
                }
                self.change(&mut st, |s| &mut s.routes, id, None, mode)?;
            }
            Kind::Upstream => {
                if !st.upstreams.contains_key(id) {
                    if st.file.upstreams.iter().any(|u| u.name == id) {
                        return Err(ChangeError::Invalid(format!(
                            "can not delete upstreams/{id}: {id:?} is an upstream of the \
                             configuration file {}; change or remove it there",
                            st.path.display()
                        )));
                    }
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
                self.change(&mut st, |s| &mut s.upstreams, id, None, mode)?;
            }
        }
        if mode == Mode::Apply {
            info!("admin: deleted {}", key(kind, id));
        }
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
                if cfg.admin.as_ref().map(|a| &a.state) != st.file.admin.as_ref().map(|a| &a.state)
                {
                    warn!("reload: [admin] state changes take effect only after a restart");
                }
                if cfg.config_center != st.file.config_center {
                    warn!("reload: [config_center] changes take effect only after a restart");
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

    /// Loads what the admin API stored in `file` on earlier runs, applies it (before the cores
    /// start, it becomes their first configuration), and writes every later change there. The
    /// load is as strict as the admin API: an object that does not translate, or that the
    /// configuration has no place for (an `upstream_id` naming no upstream, an id the file's
    /// routes use), stops it, named by the file, its line and its key (`routes/ID.field`).
    ///
    /// Called once, before any other change; a refusal leaves the stores empty.
    pub fn load_state(&self, file: StateFile) -> Result<(), ConfigError> {
        let saved = file.load()?;
        let mut st = self.lock();
        let loaded = self.take_saved(&mut st, &file, saved);
        match loaded {
            Ok(()) => st.state_file = Some(file),
            Err(_) => {
                st.routes.clear();
                st.upstreams.clear();
            }
        }
        loaded
    }

    fn take_saved(
        &self,
        st: &mut State,
        file: &StateFile,
        saved: Vec<Saved>,
    ) -> Result<(), ConfigError> {
        let mut lines = HashMap::with_capacity(saved.len());
        let resolve = st.file.resolve.clone();
        for s in saved {
            let at = key(s.kind, &s.id);
            let refuse = |path: &str, message: String| {
                let k = if path.is_empty() {
                    at.clone()
                } else {
                    format!("{at}.{path}")
                };
                file.error(Some(s.line), Some(k), message)
            };
            check_id(&s.id).map_err(|e| refuse("", e))?;
            match s.kind {
                Kind::Route => {
                    let parsed = parse_route(&s.id, &s.value, &resolve)
                        .map_err(|e| refuse(&e.path, e.message))?;
                    let entry = Entry {
                        value: s.value,
                        parsed,
                    };
                    st.routes.insert(s.id, entry);
                }
                Kind::Upstream => {
                    let parsed = parse_upstream(&at, &s.value, "", &resolve)
                        .map_err(|e| refuse(&e.path, e.message))?;
                    let entry = Entry {
                        value: s.value,
                        parsed,
                    };
                    st.upstreams.insert(s.id, entry);
                }
            }
            lines.insert(at, s.line);
        }
        let built = build(st);
        if let Some((k, why)) = built.skipped.iter().next() {
            return Err(file.error(
                lines.get(k).copied(),
                Some(k.clone()),
                format!("{why}; fix or remove it here, or change the configuration file"),
            ));
        }
        check(&built.cfg).map_err(|e| file.error(None, None, e))?;
        let (routes, upstreams) = (st.routes.len(), st.upstreams.len());
        if routes + upstreams > 0 {
            info!(
                "admin: {routes} route(s) and {upstreams} upstream(s) loaded from {}",
                file.path().display()
            );
        }
        (self.apply)(built.cfg);
        st.skipped = built.skipped;
        Ok(())
    }

    /// Names entries in log lines as the config center's keys, `{prefix}/routes/ID`, so an
    /// operator can find the value that was skipped.
    pub fn name_keys_under(&self, prefix: &str) {
        self.lock().key_prefix = format!("{prefix}/");
    }

    /// Sets or (None) deletes one route as a config center reports it. An invalid value is
    /// logged with its key and skipped; the previous value, if any, stays.
    pub fn set_route(&self, id: &str, value: Option<Value>) {
        self.set(Kind::Route, id, value.map(Ok));
    }

    /// As [`Dynamic::set_route`], for an upstream. Routes using a deleted upstream are skipped
    /// (and logged) until it comes back.
    pub fn set_upstream(&self, id: &str, value: Option<Value>) {
        self.set(Kind::Upstream, id, value.map(Ok));
    }

    /// One change as a config center reports it: `Some(Ok(value))` puts, `Some(Err(why))` is a
    /// value that could not even be read (bad JSON), `None` deletes. Returns false when the
    /// value was invalid and skipped (logged with its key; the previous value stays).
    pub fn set(&self, kind: Kind, id: &str, value: Option<Result<Value, String>>) -> bool {
        let mut st = self.lock();
        match value {
            None => {
                let removed = match kind {
                    Kind::Route => st.routes.remove(id).is_some(),
                    Kind::Upstream => st.upstreams.remove(id).is_some(),
                };
                if !removed {
                    return true;
                }
            }
            Some(v) => {
                if let Err(e) = st.store(kind, id, v) {
                    st.skip_invalid(kind, id, &e);
                    return false;
                }
            }
        }
        self.apply_lenient(&mut st);
        true
    }

    /// Replaces both stores at once (a config center's initial load, or a reload after its
    /// history was compacted); values as in [`Dynamic::set`]. Invalid values are logged and
    /// skipped; for an id whose new value is invalid the value held so far stays, so a bad
    /// write never takes a route down. Returns how many values were skipped as invalid.
    pub fn replace_all(
        &self,
        routes: Vec<(String, Result<Value, String>)>,
        upstreams: Vec<(String, Result<Value, String>)>,
    ) -> usize {
        let mut st = self.lock();
        let old_routes = std::mem::take(&mut st.routes);
        let old_upstreams = std::mem::take(&mut st.upstreams);
        let mut skipped = 0;
        for (kind, list) in [(Kind::Route, routes), (Kind::Upstream, upstreams)] {
            for (id, v) in list {
                if let Err(e) = st.store(kind, &id, v) {
                    st.skip_invalid(kind, &id, &e);
                    skipped += 1;
                    match kind {
                        Kind::Route => {
                            if let Some(old) = old_routes.get(&id) {
                                st.routes.insert(id, old.clone());
                            }
                        }
                        Kind::Upstream => {
                            if let Some(old) = old_upstreams.get(&id) {
                                st.upstreams.insert(id, old.clone());
                            }
                        }
                    }
                }
            }
        }
        self.apply_lenient(&mut st);
        skipped
    }

    /// Applies (or, in `Mode::Check`, only checks) the stores as they are now.
    /// Sets `id` in the map `pick` chooses to `new` (None removes it) and commits; on failure, or
    /// when only checking, the map gets its old entry back. Ok(whether `id` was there before).
    fn change<T>(
        &self,
        st: &mut State,
        pick: fn(&mut State) -> &mut BTreeMap<String, Entry<T>>,
        id: &str,
        new: Option<Entry<T>>,
        mode: Mode,
    ) -> Result<bool, ChangeError> {
        let old = match new {
            Some(e) => pick(st).insert(id.to_owned(), e),
            None => pick(st).remove(id),
        };
        let existed = old.is_some();
        let result = self.commit(st, mode, Save::Yes);
        if result.is_err() || mode == Mode::Check {
            restore(pick(st), id, old);
        }
        result.map(|()| existed)
    }

    /// Builds strictly and, in `Mode::Apply`, writes the stores to the state file (with
    /// `Save::Yes`, when there is one) and applies the build. Nothing is applied unless it was
    /// written, so what runs is always what a restart would load.
    fn commit(&self, st: &mut State, mode: Mode, save: Save) -> Result<(), ChangeError> {
        let built = build_strict(st)?;
        if mode == Mode::Apply {
            if save == Save::Yes {
                st.save()?;
            }
            (self.apply)(built.cfg);
            st.skipped = built.skipped;
        }
        Ok(())
    }

    /// Builds, and applies unless the build leaves out an entry the running one did not.
    fn apply_strict(&self, st: &mut State) -> Result<(), ChangeError> {
        self.commit(st, Mode::Apply, Save::No)
    }

    /// Builds and applies whatever validates, logging entries left out for the first time.
    fn apply_lenient(&self, st: &mut State) {
        let built = build(st);
        for (k, why) in &built.skipped {
            if !st.skipped.contains_key(k) {
                warn!("{}{k}: {why}; skipped", st.key_prefix);
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

impl State {
    /// Writes both stores to the state file, if there is one. A failure is logged here and
    /// becomes the caller's answer.
    fn save(&self) -> Result<(), ChangeError> {
        let Some(file) = &self.state_file else {
            return Ok(());
        };
        let upstreams = self
            .upstreams
            .iter()
            .map(|(id, e)| (Kind::Upstream, id.as_str(), &e.value));
        let routes = self
            .routes
            .iter()
            .map(|(id, e)| (Kind::Route, id.as_str(), &e.value));
        file.save(upstreams.chain(routes)).map_err(|e| {
            error!("admin: change not applied, the admin state could not be kept: {e}");
            ChangeError::Unavailable(format!(
                "not applied: the change could not be written to the admin state file: {e}"
            ))
        })
    }

    /// Translates and stores one value a config center reported; Err (nothing stored) when it
    /// is invalid.
    fn store(&mut self, kind: Kind, id: &str, value: Result<Value, String>) -> Result<(), String> {
        let v = value?;
        match kind {
            Kind::Route => {
                let parsed = parse_stored_route(id, &v, &self.file.resolve)?;
                self.routes
                    .insert(id.to_owned(), Entry { value: v, parsed });
            }
            Kind::Upstream => {
                let parsed = parse_stored_upstream(id, &v, &self.file.resolve)?;
                self.upstreams
                    .insert(id.to_owned(), Entry { value: v, parsed });
            }
        }
        Ok(())
    }

    fn skip_invalid(&self, kind: Kind, id: &str, why: &str) {
        warn!("{}{}: {why}; skipped", self.key_prefix, key(kind, id));
    }
}

/// Builds, refusing a build that leaves out an entry the running one did not (the admin API's
/// rule: a change never drops another entry silently).
fn build_strict(st: &State) -> Result<Built, ChangeError> {
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
    Ok(built)
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

fn parse_stored_route(id: &str, v: &Value, resolve: &Resolve) -> Result<RouteSpec, String> {
    check_id(id)?;
    parse_route(id, v, resolve).map_err(|e| e.to_string())
}

fn parse_stored_upstream(id: &str, v: &Value, resolve: &Resolve) -> Result<Upstream, String> {
    check_id(id)?;
    parse_upstream(&key(Kind::Upstream, id), v, "", resolve).map_err(|e| e.to_string())
}

/// The file's configuration with every placeable stored object on top. Stored upstreams come
/// first so routes can refer to them by index; routes follow in id order, after the file's.
fn build(st: &State) -> Built {
    let mut cfg = st.file.clone();
    let mut skipped = BTreeMap::new();
    let file_routes: HashSet<String> = cfg.routes.iter().map(|r| r.id.clone()).collect();
    // By name, the index each of the file's upstreams keeps in the build.
    let file_upstreams: HashMap<String, usize> = cfg
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.clone(), i))
        .collect();
    let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(st.upstreams.len());
    cfg.upstreams.reserve(st.upstreams.len() + st.routes.len());
    for (id, e) in &st.upstreams {
        let key = key(Kind::Upstream, id);
        if file_upstreams.contains_key(&key) {
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
        let key = key(Kind::Route, id);
        if file_routes.contains(id) {
            skipped.insert(
                key,
                format!("a route of the configuration file has the id {id:?}; choose another"),
            );
            continue;
        }
        let upstream = match &e.parsed.upstream {
            RouteUpstream::Inline(u) => {
                if file_upstreams.contains_key(&u.name) {
                    skipped.insert(
                        key,
                        format!("the file defines an upstream named {:?}", u.name),
                    );
                    continue;
                }
                cfg.upstreams.push((**u).clone());
                cfg.upstreams.len() - 1
            }
            // A stored upstream first, as APISIX reads `upstream_id`; else one of the file's.
            RouteUpstream::Id(uid) => match by_id
                .get(uid.as_str())
                .or_else(|| file_upstreams.get(uid.as_str()))
            {
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
///
/// No route at all is fine: with a config center the file may define none and etcd may hold
/// none yet (every request then gets 404); without one the file loader requires a route.
fn check(cfg: &Config) -> Result<(), String> {
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
    crate::clock::Clock.unix_secs()
}

/// `invalid JSON at line L, column C: what`, from serde_json's error (whose own text ends in
/// the position); how the admin API and the config center describe unreadable JSON.
pub fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(what, _)| what);
    format!(
        "invalid JSON at line {}, column {}: {what}",
        e.line(),
        e.column()
    )
}

/// What a config center has handed the store so far, for `/metrics`.
#[derive(Debug, Default)]
pub struct CenterCounts {
    /// Puts and deletes taken into the store (a value of the initial load counts as a put).
    pub applied: AtomicU64,
    /// Values skipped as invalid: unreadable JSON or an object hearth refuses.
    pub skipped: AtomicU64,
}

/// Feeds what a [`crate::config_center::Watcher`] reads into a [`Dynamic`]: each value is read
/// as JSON here and validated whole by the store; anything invalid is logged with its full key
/// (`/apisix/routes/42: ...; skipped`) and changes nothing.
pub struct CenterSink {
    dynamic: Arc<Dynamic>,
    prefix: String,
    counts: Arc<CenterCounts>,
}

impl CenterSink {
    /// Also makes `dynamic` name entries by their etcd keys under `prefix` in its logs.
    pub fn new(dynamic: Arc<Dynamic>, prefix: &str, counts: Arc<CenterCounts>) -> CenterSink {
        dynamic.name_keys_under(prefix);
        CenterSink {
            dynamic,
            prefix: prefix.to_owned(),
            counts,
        }
    }
}

fn read_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

impl Sink for CenterSink {
    fn replace_all(&mut self, routes: Vec<(String, Vec<u8>)>, upstreams: Vec<(String, Vec<u8>)>) {
        let read = |list: Vec<(String, Vec<u8>)>| -> Vec<(String, Result<Value, String>)> {
            list.into_iter()
                .map(|(id, v)| {
                    let v = read_json(&v);
                    (id, v)
                })
                .collect()
        };
        let total = routes.len() + upstreams.len();
        let skipped = self.dynamic.replace_all(read(routes), read(upstreams));
        let add = |c: &AtomicU64, n: usize| c.fetch_add(n as u64, Ordering::Relaxed);
        add(&self.counts.applied, total - skipped);
        add(&self.counts.skipped, skipped);
    }

    fn set(&mut self, kind: Kind, id: &str, value: Option<&[u8]>) {
        let taken = self.dynamic.set(kind, id, value.map(read_json));
        if taken {
            self.counts.applied.fetch_add(1, Ordering::Relaxed);
            info!(
                "config center: {} {}/{}",
                if value.is_some() { "put" } else { "deleted" },
                self.prefix,
                key(kind, id)
            );
        } else {
            self.counts.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
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
    fn routes_may_use_the_file_upstreams_which_stay_out_of_reach() {
        let (d, applied, tmp) = dynamic(FILE);
        d.put(Kind::Route, "r1", route_to("file")).unwrap();
        let c = last(&applied);
        assert_eq!(c.upstreams[c.routes[1].upstream].name, "file");
        assert_eq!(c.upstreams.len(), 1, "the file's upstream, not a copy");
        // Deleting it through the API is refused, whether a route uses it or not.
        for _ in 0..2 {
            let e = d.delete(Kind::Upstream, "file").unwrap_err();
            assert!(
                matches!(&e, ChangeError::Invalid(m) if m.contains("\"file\" is an upstream of the configuration file")),
                "{e:?}"
            );
            assert!(d.check_delete(Kind::Upstream, "file").is_err());
            d.delete(Kind::Route, "r1").ok();
        }
        // A stored upstream with the same id comes first, as APISIX reads upstream_id.
        d.put(Kind::Upstream, "file", up(9005)).unwrap();
        d.put(Kind::Route, "r1", route_to("file")).unwrap();
        let c = last(&applied);
        assert_eq!(c.upstreams[c.routes[1].upstream].name, "upstreams/file");
        d.delete(Kind::Route, "r1").unwrap();
        d.delete(Kind::Upstream, "file").unwrap();
        // A file that drops an upstream an API route uses is refused on reload.
        d.put(Kind::Route, "r1", route_to("file")).unwrap();
        let other = FILE
            .replace("upstreams.file", "upstreams.other")
            .replace("upstream = \"file\"", "upstream = \"other\"");
        std::fs::write(tmp.path(), other).unwrap();
        let e = d.reload_file().unwrap_err();
        assert!(
            e.contains("routes/r1: upstream_id \"file\" names no upstream"),
            "{e}"
        );
        assert_eq!(last(&applied).upstreams[0].name, "file");
    }

    /// A state file in a fresh temp dir (both removed on drop), and that dir.
    struct TempState(PathBuf);

    impl TempState {
        fn new() -> TempState {
            let dir = TempPath::new().0.with_extension("d");
            std::fs::create_dir_all(&dir).unwrap();
            TempState(dir)
        }

        fn file(&self) -> StateFile {
            StateFile::new(self.0.join("state.jsonl"))
        }
    }

    impl Drop for TempState {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_admin_state_is_written_on_each_change_and_loaded_again() {
        let dir = TempState::new();
        let (d, applied, tmp) = dynamic(FILE);
        d.load_state(dir.file()).unwrap();
        assert_eq!(
            applied.lock().unwrap().len(),
            1,
            "an empty state applies the file"
        );
        d.put(Kind::Upstream, "u1", up(9002)).unwrap();
        d.put(Kind::Route, "r1", route_to("u1")).unwrap();
        d.put(Kind::Route, "r2", route_to("file")).unwrap();
        d.delete(Kind::Route, "r2").unwrap();
        // A refused change writes nothing.
        assert!(d.put(Kind::Route, "r3", route_to("nope")).is_err());

        // What a restart loads: the same file configuration, then the state.
        let text = std::fs::read_to_string(tmp.path()).unwrap();
        let (again, applied, _tmp) = dynamic(&text);
        again.load_state(dir.file()).unwrap();
        let c = last(&applied);
        let ids: Vec<_> = c.routes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["file-1", "r1"]);
        assert_eq!(c.upstreams[c.routes[1].upstream].name, "upstreams/u1");
        assert_eq!(again.get(Kind::Route, "r1"), d.get(Kind::Route, "r1"));
        assert_eq!(again.list(Kind::Upstream), d.list(Kind::Upstream));
        // And it keeps writing there.
        again.delete(Kind::Route, "r1").unwrap();
        let (third, _, _tmp) = dynamic(&text);
        third.load_state(dir.file()).unwrap();
        assert!(third.list(Kind::Route).is_empty());
        assert_eq!(third.list(Kind::Upstream).len(), 1);
    }

    #[test]
    fn a_state_that_does_not_fit_stops_the_load_naming_line_and_key() {
        let dir = TempState::new();
        let head = "{\"hearth_admin_state\":1}\n";
        let up = "{\"key\":\"upstreams/u1\",\"value\":{\"nodes\":{\"127.0.0.1:9002\":1}}}\n";
        let cases = [
            (
                format!("{head}{up}{{\"key\":\"routes/r1\",\"value\":{{\"uri\":\"/a\",\"upstream_id\":\"u1\",\"plugins\":{{\"x\":{{}}}}}}}}\n"),
                ":3: routes/r1.plugins.x: plugins are not supported",
            ),
            (
                format!("{head}{{\"key\":\"upstreams/u1\",\"value\":{{\"nodes\":{{}}}}}}\n"),
                ":2: upstreams/u1.nodes: ",
            ),
            (
                format!("{head}\n{{\"key\":\"routes/r1\",\"value\":{{\"uri\":\"/a\",\"upstream_id\":\"gone\"}}}}\n"),
                ":3: routes/r1: upstream_id \"gone\" names no upstream; fix or remove it here",
            ),
            (
                format!("{head}{{\"key\":\"routes/a b\",\"value\":{{}}}}\n"),
                ":2: routes/a b: an id may hold",
            ),
        ];
        for (text, want) in cases {
            let file = dir.file();
            std::fs::write(file.path(), &text).unwrap();
            let (d, applied, _tmp) = dynamic(FILE);
            let e = d.load_state(file).unwrap_err().to_string();
            let want = format!("{}{want}", dir.file().path().display());
            assert!(e.starts_with(&want), "want {want:?}, got {e:?}");
            assert!(applied.lock().unwrap().is_empty(), "nothing applied");
            assert!(d.list(Kind::Route).is_empty() && d.list(Kind::Upstream).is_empty());
        }
    }

    #[test]
    fn a_change_that_cannot_be_written_is_not_applied() {
        let dir = TempState::new();
        let (d, applied, _tmp) = dynamic(FILE);
        d.load_state(dir.file()).unwrap();
        d.put(Kind::Upstream, "u1", up(9002)).unwrap();
        let n = applied.lock().unwrap().len();
        // The temporary file's place is taken by a directory: the write fails, even for root.
        std::fs::create_dir(dir.0.join("state.jsonl.tmp")).unwrap();
        let e = d.put(Kind::Route, "r1", route_to("u1")).unwrap_err();
        assert!(
            matches!(&e, ChangeError::Unavailable(m) if m.contains("state.jsonl.tmp")),
            "{e:?}"
        );
        assert!(d.delete(Kind::Upstream, "u1").is_err());
        assert_eq!(applied.lock().unwrap().len(), n, "nothing applied");
        assert_eq!(d.get(Kind::Route, "r1"), None, "nor stored");
        assert!(d.get(Kind::Upstream, "u1").is_some(), "and nothing removed");
        std::fs::remove_dir(dir.0.join("state.jsonl.tmp")).unwrap();
        d.put(Kind::Route, "r1", route_to("u1")).unwrap();
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
        assert_eq!(
            e.to_string(),
            "plugins.x: plugins are not supported, except proxy-rewrite"
        );
        // The file's route is "file-1".
        let e = d
            .put(
                Kind::Route,
                "file-1",
                json!({"uri": "/a", "upstream": up(9002)}),
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("configuration file has the id \"file-1\""),
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
        d.put(
            Kind::Route,
            "file-2",
            json!({"uri": "/c", "upstream": up(9002)}),
        )
        .unwrap();
        let e = d.reload_file().unwrap_err();
        assert!(e.contains("routes/file-2"), "{e}");
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
                ("r2".into(), Ok(json!({"uri": "/y", "upstream": up(9003)}))),
                ("r3".into(), Ok(json!({"uri": 5}))),
            ],
            vec![],
        );
        let c = last(&applied);
        let ids: Vec<_> = c.routes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["file-1", "r2"]);
        assert!(d.get(Kind::Route, "r1").is_none());
    }

    #[test]
    fn checks_change_neither_the_stores_nor_the_cores() {
        let (d, applied, _tmp) = dynamic(FILE);
        d.put(Kind::Upstream, "u1", up(9002)).unwrap();
        d.put(Kind::Route, "r1", route_to("u1")).unwrap();
        let n = applied.lock().unwrap().len();
        let before = (d.list(Kind::Route), d.list(Kind::Upstream));

        let (v, created) = d.check_put(Kind::Route, "r2", route_to("u1")).unwrap();
        assert!(created);
        assert_eq!(v["id"], "r2");
        assert!(v["create_time"].is_u64(), "filled in as a put would: {v}");
        let (_, created) = d.check_put(Kind::Route, "r1", route_to("u1")).unwrap();
        assert!(!created);
        let (id, v) = d.check_create(Kind::Upstream, up(9004)).unwrap();
        assert_eq!(v["id"], id.as_str());
        d.check_delete(Kind::Route, "r1").unwrap();
        // The same refusals as the real thing.
        assert!(d.check_put(Kind::Route, "r3", route_to("nope")).is_err());
        assert!(d.check_delete(Kind::Upstream, "u1").is_err(), "r1 uses it");
        assert!(matches!(
            d.check_delete(Kind::Route, "zz"),
            Err(ChangeError::NotFound(_))
        ));

        assert_eq!(applied.lock().unwrap().len(), n, "nothing applied");
        assert_eq!((d.list(Kind::Route), d.list(Kind::Upstream)), before);
    }

    /// A store fed by a sink, as the binary wires them, with what it applied and counted.
    struct Center {
        d: Arc<Dynamic>,
        sink: CenterSink,
        counts: Arc<CenterCounts>,
        applied: Arc<Mutex<Vec<Config>>>,
        _tmp: TempPath,
    }

    fn center(file: &str) -> Center {
        let (d, applied, tmp) = dynamic(file);
        let d = Arc::new(d);
        let counts = Arc::new(CenterCounts::default());
        let sink = CenterSink::new(d.clone(), "/apisix", counts.clone());
        Center {
            d,
            sink,
            counts,
            applied,
            _tmp: tmp,
        }
    }

    fn counted(c: &CenterCounts) -> (u64, u64) {
        (
            c.applied.load(Ordering::Relaxed),
            c.skipped.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn the_center_sink_reads_json_and_skips_what_is_invalid() {
        let Center {
            d,
            mut sink,
            counts,
            applied,
            _tmp,
        } = center(FILE);
        let route = br#"{"uri": "/a", "upstream": {"nodes": {"127.0.0.1:9002": 1}}}"#;
        sink.replace_all(
            vec![
                ("r1".into(), route.to_vec()),
                ("bad".into(), b"{not json".to_vec()),
            ],
            vec![("u1".into(), b"\xff".to_vec())],
        );
        assert_eq!(counted(&counts), (1, 2));
        assert_eq!(last(&applied).routes.len(), 2);
        assert!(d.get(Kind::Route, "bad").is_none());

        // A bad value for an id keeps the last good one, and applies nothing.
        let n = applied.lock().unwrap().len();
        sink.set(Kind::Route, "r1", Some(b"[1,"));
        sink.set(
            Kind::Route,
            "r1",
            Some(br#"{"uri": "/a", "plugins": {"p": {}}}"#),
        );
        assert_eq!(counted(&counts), (1, 4));
        assert_eq!(applied.lock().unwrap().len(), n);
        assert_eq!(d.get(Kind::Route, "r1").unwrap()["uri"], "/a");
        // A compaction reload with the bad value still there keeps it too.
        sink.replace_all(vec![("r1".into(), b"[1,".to_vec())], vec![]);
        assert_eq!(d.get(Kind::Route, "r1").unwrap()["uri"], "/a");

        sink.set(Kind::Route, "r1", None);
        assert_eq!(counted(&counts), (2, 5));
        assert_eq!(last(&applied).routes.len(), 1, "only the file's route");
    }

    #[test]
    fn with_a_config_center_no_route_at_all_is_a_configuration() {
        let file = "[[listen]]\naddr = \"127.0.0.1:0\"\n[config_center]\ntype = \"etcd\"\n\
                    endpoints = [\"http://127.0.0.1:2379\"]\n";
        let Center {
            mut sink,
            counts,
            applied,
            ..
        } = center(file);
        sink.replace_all(vec![], vec![]);
        let c = last(&applied);
        assert!(c.routes.is_empty() && c.upstreams.is_empty());
        sink.set(
            Kind::Upstream,
            "u",
            Some(br#"{"nodes": {"127.0.0.1:9002": 1}}"#),
        );
        sink.set(
            Kind::Route,
            "r",
            Some(br#"{"uri": "/", "upstream_id": "u"}"#),
        );
        assert_eq!(last(&applied).routes.len(), 1);
        sink.set(Kind::Route, "r", None);
        sink.set(Kind::Upstream, "u", None);
        assert!(last(&applied).upstreams.is_empty());
        assert_eq!(counted(&counts), (4, 0));
    }

    #[test]
    fn json_errors_give_line_and_column() {
        let e = serde_json::from_str::<Value>("{\"a\": 1,\n \"b\": }").unwrap_err();
        assert_eq!(
            json_error(&e),
            "invalid JSON at line 2, column 7: expected value"
        );
    }
}
