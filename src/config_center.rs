//! The config center: one thread that follows routes and upstreams kept in etcd and hands every
//! change to a [`Sink`] (the dynamic store, which validates and applies it).
//!
//! The thread owns a [`Snapshot`]: a copy of every `{prefix}/routes/{id}` and
//! `{prefix}/upstreams/{id}` value and the etcd revision it was read at. It starts with a full
//! read (two ranges at one revision, handed over as one `replace_all`), then watches `{prefix}/`
//! from the next revision and hands over each change as a `set`. When the watch breaks it resumes
//! from the last revision it saw plus one, after a backoff (100 ms doubling to 5 s), so nothing is
//! missed and nothing is applied twice; when etcd says that revision was compacted it reads
//! everything again and hands it over as one `replace_all`. Values are passed through as bytes,
//! never parsed here: validation is the sink's job, so an invalid value reaches the sink (which
//! logs and skips it) exactly like a valid one.
//!
//! etcd being down never stops traffic: the sink keeps what it last applied, the thread retries,
//! and [`Watcher::connected`] reads false (the `config_center_connected` gauge);
//! [`Watcher::revision`] says how far the sink has been brought. With
//! `cache = "path"` every snapshot is written there (to a temporary file, then renamed, so a
//! crash leaves the old or the new copy, never half of one), and a start while etcd is down
//! serves from it. A start with etcd down and no usable cache is an error.
//!
//! The thread serves nothing and takes no lock the cores know about; it runs only when etcd
//! speaks or a backoff ends. Its client and the admin API's [`Writer`] are made alike from the
//! settings ([`ConfigCenter`]: endpoints, credentials, timeout, and the TLS client configuration
//! loaded with the file for `https://` endpoints).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};

use crate::config::ConfigCenter;
use crate::etcd::{self, Client, EventKind, WatchMsg};

/// First wait after etcd fails; doubles on each failure in a row.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts while etcd stays down.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Attempts at reading routes and upstreams at one revision before giving up for this round: a
/// compaction between the two ranges forces a new pair.
const LOAD_ATTEMPTS: usize = 3;
/// Format version written into cache files; a file with another version is not trusted.
const CACHE_VERSION: u32 = 1;

/// The two kinds of object the config center follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Route,
    Upstream,
}

impl Kind {
    /// The key segment under the prefix, as APISIX lays out its keys.
    pub fn segment(self) -> &'static str {
        match self {
            Kind::Route => "routes",
            Kind::Upstream => "upstreams",
        }
    }
}

/// Where the config center delivers what it reads. Values are the raw bytes of the etcd value
/// (APISIX's JSON, or whatever someone put there); ids are the last key segment.
pub trait Sink: Send {
    /// Everything there is, replacing what came before (start, cache, reload after compaction).
    fn replace_all(&mut self, routes: Vec<(String, Vec<u8>)>, upstreams: Vec<(String, Vec<u8>)>);
    /// One change: `Some` puts, `None` deletes (possibly an id the sink does not hold).
    fn set(&mut self, kind: Kind, id: &str, value: Option<&[u8]>);
}

/// A copy of the routes and upstreams in etcd at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: i64,
    pub routes: BTreeMap<String, Vec<u8>>,
    pub upstreams: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    fn map(&mut self, kind: Kind) -> &mut BTreeMap<String, Vec<u8>> {
        match kind {
            Kind::Route => &mut self.routes,
            Kind::Upstream => &mut self.upstreams,
        }
    }

    fn hand_over(&self, sink: &mut dyn Sink) {
        let list =
            |m: &BTreeMap<String, Vec<u8>>| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        sink.replace_all(list(&self.routes), list(&self.upstreams));
    }

    /// Writes the snapshot to `path` through a temporary file in the same directory and a
    /// rename, so readers see the old file or the new one, whole.
    pub fn save(&self, path: &Path, prefix: &str) -> std::io::Result<()> {
        let entries = |m: &BTreeMap<String, Vec<u8>>| {
            m.iter()
                .map(|(id, v)| match std::str::from_utf8(v) {
                    Ok(text) => CachedEntry {
                        id: id.clone(),
                        value: Some(text.to_owned()),
                        value_base64: None,
                    },
                    Err(_) => CachedEntry {
                        id: id.clone(),
                        value: None,
                        value_base64: Some(etcd::base64_encode(v)),
                    },
                })
                .collect()
        };
        let file = CacheFile {
            hearth_config_center_cache: CACHE_VERSION,
            prefix: prefix.to_owned(),
            revision: self.revision,
            routes: entries(&self.routes),
            upstreams: entries(&self.upstreams),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a snapshot written by [`Snapshot::save`] for the same `prefix`.
    pub fn load(path: &Path, prefix: &str) -> Result<Snapshot, String> {
        let text = std::fs::read(path).map_err(|e| e.to_string())?;
        let file: CacheFile =
            serde_json::from_slice(&text).map_err(|e| format!("not a hearth cache file: {e}"))?;
        if file.hearth_config_center_cache != CACHE_VERSION {
            return Err(format!(
                "written in format {}, this hearth reads format {CACHE_VERSION}",
                file.hearth_config_center_cache
            ));
        }
        if file.prefix != prefix {
            return Err(format!(
                "written for prefix {:?}, configured prefix is {prefix:?}",
                file.prefix
            ));
        }
        let entries = |list: Vec<CachedEntry>| -> Result<BTreeMap<String, Vec<u8>>, String> {
            list.into_iter()
                .map(|e| match (e.value, e.value_base64) {
                    (Some(text), None) => Ok((e.id, text.into_bytes())),
                    (None, Some(b64)) => Ok((e.id, etcd::base64_decode(&b64)?)),
                    _ => Err(format!(
                        "entry {:?} needs exactly one of value and value_base64",
                        e.id
                    )),
                })
                .collect()
        };
        Ok(Snapshot {
            revision: file.revision,
            routes: entries(file.routes)?,
            upstreams: entries(file.upstreams)?,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    hearth_config_center_cache: u32,
    prefix: String,
    revision: i64,
    routes: Vec<CachedEntry>,
    upstreams: Vec<CachedEntry>,
}

/// One value; kept as readable text when it is UTF-8, which APISIX's JSON always is.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedEntry {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// What a key under the prefix names: `{prefix}/routes/{id}` or `{prefix}/upstreams/{id}`, with
/// a non-empty id of one segment. Anything else (other APISIX objects, nested keys, non-UTF-8
/// keys) is not for hearth.
pub fn classify<'k>(prefix: &str, key: &'k [u8]) -> Option<(Kind, &'k str)> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    for kind in [Kind::Route, Kind::Upstream] {
        if let Some(id) = rest
            .strip_prefix(kind.segment())
            .and_then(|r| r.strip_prefix('/'))
        {
            return (!id.is_empty() && !id.contains('/')).then_some((kind, id));
        }
    }
    None
}

/// Why the config center could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// The running config-center thread. Dropping it stops the thread and waits for it.
pub struct Watcher {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    connected: Arc<AtomicBool>,
    revision: Arc<AtomicI64>,
}

/// An etcd client as `[config_center]` describes it, TLS included.
fn client(settings: &ConfigCenter) -> Client {
    Client::new(
        settings.endpoints.clone(),
        settings.credentials.clone(),
        settings.timeout,
    )
    .with_tls(settings.tls.as_ref().map(|t| t.client.clone()))
}

impl Watcher {
    /// Reads everything from etcd (or, if etcd cannot be read, from the cache file) and hands it
    /// to `sink` before returning, then follows changes on a thread of its own.
    pub fn start(settings: &ConfigCenter, mut sink: Box<dyn Sink>) -> Result<Watcher, StartError> {
        let mut client = client(settings);
        let prefix = settings.prefix.clone();
        let (snapshot, live) = match load(&mut client, &prefix) {
            Ok(snapshot) => (snapshot, true),
            Err(e) => {
                let Some(path) = &settings.cache else {
                    return Err(StartError(format!("{e}; no cache file configured")));
                };
                match Snapshot::load(path, &prefix) {
                    Ok(snapshot) => {
                        warn!(
                            "{e}; serving the cached routes and upstreams from {} (etcd revision {}) until etcd answers",
                            path.display(),
                            snapshot.revision
                        );
                        (snapshot, false)
                    }
                    Err(ce) => {
                        return Err(StartError(format!(
                            "{e}; and the cache file {} cannot be used: {ce}",
                            path.display()
                        )))
                    }
                }
            }
        };
        if live {
            info!(
                "config center: {} routes and {} upstreams from etcd at {} (revision {})",
                snapshot.routes.len(),
                snapshot.upstreams.len(),
                client.endpoint_names(),
                snapshot.revision
            );
        }
        snapshot.hand_over(sink.as_mut());
        let connected = Arc::new(AtomicBool::new(live));
        let revision = Arc::new(AtomicI64::new(snapshot.revision));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let follower = Follower {
            client,
            watch_key: format!("{prefix}/"),
            prefix,
            sink,
            snapshot,
            cache: settings.cache.clone(),
            connected: Arc::clone(&connected),
            revision: Arc::clone(&revision),
            stop: stop_rx,
            backoff: BACKOFF_MIN,
        };
        if live {
            follower.save_cache();
        }
        let thread = std::thread::Builder::new()
            .name("config-center".to_owned())
            .spawn(move || follower.run(!live))
            .map_err(|e| StartError(format!("cannot start the config-center thread: {e}")))?;
        Ok(Watcher {
            stop: Some(stop_tx),
            thread: Some(thread),
            connected,
            revision,
        })
    }

    /// True while the thread follows etcd; false while etcd is down and the last good
    /// configuration is being served. For the `config_center_connected` gauge.
    pub fn connected(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.connected)
    }

    /// The etcd revision of everything handed to the sink so far: a change written at revision
    /// R has been applied here once this reads R or more (the admin API waits on it).
    pub fn revision(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.revision)
    }

    /// Stops the thread and waits for it (at most one etcd timeout).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        // Dropping the sender wakes the thread wherever it waits on the channel.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                warn!("the config-center thread panicked");
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Reads routes and upstreams at one revision.
fn load(client: &mut Client, prefix: &str) -> Result<Snapshot, etcd::Error> {
    let mut last = None;
    for _ in 0..LOAD_ATTEMPTS {
        let routes_key = format!("{prefix}/{}/", Kind::Route.segment());
        let upstreams_key = format!("{prefix}/{}/", Kind::Upstream.segment());
        let routes = client.range_prefix(routes_key.as_bytes())?;
        let upstreams = match client.range_prefix_at(upstreams_key.as_bytes(), routes.revision) {
            Err(e @ etcd::Error::Compacted { .. }) => {
                last = Some(e);
                continue;
            }
            other => other?,
        };
        let mut snapshot = Snapshot {
            revision: routes.revision,
            ..Snapshot::default()
        };
        for kv in routes.kvs.into_iter().chain(upstreams.kvs) {
            match classify(prefix, &kv.key) {
                Some((kind, id)) => {
                    let id = id.to_owned();
                    snapshot.map(kind).insert(id, kv.value);
                }
                None => warn!(
                    "config center: ignoring etcd key {}: not a route or upstream id",
                    String::from_utf8_lossy(&kv.key)
                ),
            }
        }
        return Ok(snapshot);
    }
    Err(last.unwrap_or(etcd::Error::Compacted {
        compact_revision: 0,
    }))
}

/// The thread's state.
struct Follower {
    client: Client,
    prefix: String,
    /// `{prefix}/`: the watch covers every APISIX object; what is not ours is skipped.
    watch_key: String,
    sink: Box<dyn Sink>,
    snapshot: Snapshot,
    cache: Option<PathBuf>,
    connected: Arc<AtomicBool>,
    /// The snapshot's revision, published after the sink has it.
    revision: Arc<AtomicI64>,
    stop: Receiver<()>,
    backoff: Duration,
}

/// How one watch ended.
enum End {
    Stopped,
    Compacted,
    Failed(etcd::Error),
}

impl Follower {
    fn run(mut self, mut need_load: bool) {
        loop {
            if need_load {
                match load(&mut self.client, &self.prefix) {
                    Ok(snapshot) => {
                        info!(
                            "config center: read {} routes and {} upstreams at etcd revision {}",
                            snapshot.routes.len(),
                            snapshot.upstreams.len(),
                            snapshot.revision
                        );
                        self.snapshot = snapshot;
                        self.snapshot.hand_over(self.sink.as_mut());
                        self.revision
                            .store(self.snapshot.revision, Ordering::Release);
                        self.save_cache();
                        need_load = false;
                    }
                    Err(e) => {
                        self.failed(&e);
                        if self.pause() {
                            return;
                        }
                        continue;
                    }
                }
            }
            match self.follow() {
                End::Stopped => return,
                End::Compacted => {
                    info!(
                        "config center: etcd compacted past revision {}; reading everything again",
                        self.snapshot.revision + 1
                    );
                    need_load = true;
                }
                End::Failed(e) => {
                    self.failed(&e);
                    if self.pause() {
                        return;
                    }
                }
            }
        }
    }

    /// Watches from the revision after the snapshot's until the watch ends.
    fn follow(&mut self) -> End {
        let from = self.snapshot.revision + 1;
        let mut watch = match self.client.watch(self.watch_key.as_bytes(), from) {
            Ok(w) => w,
            Err(etcd::Error::Compacted { .. }) => return End::Compacted,
            Err(e) => {
                if e.is_bad_token() {
                    self.client.forget_token();
                }
                return End::Failed(e);
            }
        };
        loop {
            if !matches!(self.stop.try_recv(), Err(TryRecvError::Empty)) {
                return End::Stopped;
            }
            match watch.poll() {
                Ok(None) | Ok(Some(WatchMsg::Progress { .. })) => {}
                Ok(Some(WatchMsg::Created { revision })) => {
                    if !self.connected.swap(true, Ordering::Relaxed) {
                        info!("config center: following etcd again from revision {from} (etcd is at {revision})");
                    }
                    self.backoff = BACKOFF_MIN;
                }
                Ok(Some(WatchMsg::Events { events })) => {
                    for e in events {
                        self.apply(e);
                    }
                    self.revision
                        .store(self.snapshot.revision, Ordering::Release);
                    self.save_cache();
                }
                Ok(Some(WatchMsg::Compacted { .. })) => return End::Compacted,
                Ok(Some(WatchMsg::Canceled { reason })) => {
                    return End::Failed(etcd::Error::Broken(reason))
                }
                Err(e) => {
                    if e.is_bad_token() {
                        self.client.forget_token();
                    }
                    return End::Failed(e);
                }
            }
        }
    }

    fn apply(&mut self, event: etcd::Event) {
        self.snapshot.revision = self.snapshot.revision.max(event.kv.mod_revision);
        let Some((kind, id)) = classify(&self.prefix, &event.kv.key) else {
            debug!(
                "config center: skipping etcd key {}",
                String::from_utf8_lossy(&event.kv.key)
            );
            return;
        };
        let id = id.to_owned();
        match event.kind {
            EventKind::Put => {
                self.sink.set(kind, &id, Some(&event.kv.value));
                self.snapshot.map(kind).insert(id, event.kv.value);
            }
            EventKind::Delete => {
                self.sink.set(kind, &id, None);
                self.snapshot.map(kind).remove(&id);
            }
        }
    }

    fn failed(&mut self, e: &etcd::Error) {
        if self.connected.swap(false, Ordering::Relaxed) {
            warn!("config center: {e}; serving the last good configuration and retrying");
        } else {
            debug!("config center: {e}; retrying in {:?}", self.backoff);
        }
    }

    /// Waits out the backoff and doubles it; true when asked to stop meanwhile.
    fn pause(&mut self) -> bool {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        !matches!(self.stop.recv_timeout(wait), Err(RecvTimeoutError::Timeout))
    }

    fn save_cache(&self) {
        if let Some(path) = &self.cache {
            if let Err(e) = self.snapshot.save(path, &self.prefix) {
                warn!(
                    "config center: cannot write the cache file {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// Writes routes and upstreams to etcd, for the admin API in etcd mode: a write lands in etcd,
/// and every instance (this one included) applies it when its watch sees it.
pub struct Writer {
    client: Client,
    prefix: String,
}

impl Writer {
    pub fn new(settings: &ConfigCenter) -> Writer {
        Writer {
            client: client(settings),
            prefix: settings.prefix.clone(),
        }
    }

    fn key(&self, kind: Kind, id: &str) -> Result<String, etcd::Error> {
        if id.is_empty() || id.contains('/') {
            return Err(etcd::Error::Etcd {
                status: 400,
                code: 3,
                message: format!(
                    "{id:?} is not a valid id: it must be non-empty and contain no '/'"
                ),
            });
        }
        Ok(format!("{}/{}/{id}", self.prefix, kind.segment()))
    }

    /// Stores `value` as `{prefix}/{routes|upstreams}/{id}`; returns etcd's new revision.
    pub fn put(&mut self, kind: Kind, id: &str, value: &[u8]) -> Result<i64, etcd::Error> {
        let key = self.key(kind, id)?;
        self.client.put(key.as_bytes(), value)
    }

    /// Removes the key; returns whether it existed.
    pub fn delete(&mut self, kind: Kind, id: &str) -> Result<bool, etcd::Error> {
        self.delete_at(kind, id).map(|(_, existed)| existed)
    }

    /// As [`Writer::delete`], with etcd's revision after the delete.
    pub fn delete_at(&mut self, kind: Kind, id: &str) -> Result<(i64, bool), etcd::Error> {
        let key = self.key(kind, id)?;
        self.client.delete(key.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_classify_by_kind_and_id() {
        type Classified = (Kind, &'static str);
        let table: [(&[u8], Option<Classified>); 11] = [
            (b"/apisix/routes/1", Some((Kind::Route, "1"))),
            (
                b"/apisix/routes/00000000000000000956",
                Some((Kind::Route, "00000000000000000956")),
            ),
            (
                b"/apisix/upstreams/backend",
                Some((Kind::Upstream, "backend")),
            ),
            (b"/apisix/routes/", None),
            (b"/apisix/routes", None),
            (b"/apisix/routes/a/b", None),
            (b"/apisix/ssls/1", None),
            (b"/apisixroutes/1", None),
            (b"/apisix/routesx/1", None),
            (b"/other/routes/1", None),
            (b"/apisix/routes/\xff", None),
        ];
        for (key, want) in table {
            assert_eq!(
                classify("/apisix", key),
                want,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("hearth-cc-{}-{name}", std::process::id()))
    }

    #[test]
    fn snapshots_round_trip_through_the_cache_file() {
        let path = temp_path("roundtrip.json");
        let mut s = Snapshot {
            revision: 42,
            ..Snapshot::default()
        };
        s.routes.insert("1".into(), br#"{"uris":["/x"]}"#.to_vec());
        s.routes.insert("bin".into(), vec![0xff, 0x00, b'{']);
        s.upstreams.insert("u".into(), b"{not json".to_vec());
        s.save(&path, "/apisix").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#"{\"uris\":[\"/x\"]}"#), "readable: {text}");
        assert_eq!(Snapshot::load(&path, "/apisix").unwrap(), s);
        let e = Snapshot::load(&path, "/other").unwrap_err();
        assert!(e.contains("prefix"), "{e}");
        std::fs::write(&path, "{}").unwrap();
        assert!(Snapshot::load(&path, "/apisix")
            .unwrap_err()
            .contains("not a hearth cache file"));
        std::fs::remove_file(&path).unwrap();
        assert!(Snapshot::load(&path, "/apisix").is_err());
    }

    #[test]
    fn start_without_etcd_or_cache_says_so() {
        // A port nothing listens on: bind one, note it, free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = ConfigCenter {
            endpoints: vec![etcd::Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap()],
            prefix: "/apisix".into(),
            credentials: None,
            timeout: Duration::from_secs(1),
            cache: None,
            tls: None,
        };
        struct Nothing;
        impl Sink for Nothing {
            fn replace_all(&mut self, _: Vec<(String, Vec<u8>)>, _: Vec<(String, Vec<u8>)>) {}
            fn set(&mut self, _: Kind, _: &str, _: Option<&[u8]>) {}
        }
        let Err(e) = Watcher::start(&settings, Box::new(Nothing)) else {
            panic!("started without etcd")
        };
        let want = format!("etcd at http://127.0.0.1:{port} unreachable: ");
        assert!(e.0.starts_with(&want), "{e}");
        assert!(e.0.ends_with("; no cache file configured"), "{e}");

        let settings = ConfigCenter {
            cache: Some(temp_path("missing.json")),
            ..settings
        };
        let Err(e) = Watcher::start(&settings, Box::new(Nothing)) else {
            panic!("started without etcd")
        };
        assert!(
            e.0.contains("the cache file") && e.0.contains("missing.json"),
            "{e}"
        );
    }

    #[test]
    fn writer_refuses_ids_that_are_not_one_key_segment() {
        let settings = ConfigCenter {
            endpoints: vec![etcd::Endpoint::parse("http://127.0.0.1:1").unwrap()],
            prefix: "/apisix".into(),
            credentials: None,
            timeout: Duration::from_secs(1),
            cache: None,
            tls: None,
        };
        let w = Writer::new(&settings);
        assert_eq!(w.key(Kind::Route, "1").unwrap(), "/apisix/routes/1");
        assert_eq!(w.key(Kind::Upstream, "u").unwrap(), "/apisix/upstreams/u");
        assert!(w.key(Kind::Route, "").is_err());
        assert!(w.key(Kind::Route, "../x").is_err());
    }
}
