//! The config center against a real etcd: initial load, changes as they happen, resume after a
//! restart, full reload after compaction, invalid values passed through, the cache file, auth,
//! TLS with client certificates, and the `etcdctl put` an APISIX user types. Driven through the library API with a sink that
//! records what it is told; each test runs its own etcd on ports picked at run time.

mod common;
#[path = "common/tls.rs"]
mod tls_kit;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::etcd::{Etcd, Relay, TlsFiles};
use common::wait_until;
use hearth::config::{Config, ConfigCenter};
use hearth::config_center::{Kind, Sink, Snapshot, Watcher, Writer};
use hearth::etcd::{Credentials, Endpoint, WatchMsg};
use tls_kit::Pki;

/// The bound under test for a change to reach the sink.
const WITHIN: Duration = Duration::from_secs(1);
/// Generous bound for what is not under test (reconnects after backoff, restarts).
const EVENTUALLY: Duration = Duration::from_secs(15);

/// What the sink has been told, applied the way a store would.
#[derive(Default)]
struct Record {
    routes: BTreeMap<String, Vec<u8>>,
    upstreams: BTreeMap<String, Vec<u8>>,
    replace_alls: usize,
    sets: Vec<(Kind, String, Option<Vec<u8>>)>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Record>>);

impl Sink for Recorder {
    fn replace_all(&mut self, routes: Vec<(String, Vec<u8>)>, upstreams: Vec<(String, Vec<u8>)>) {
        let mut r = self.0.lock().unwrap();
        r.routes = routes.into_iter().collect();
        r.upstreams = upstreams.into_iter().collect();
        r.replace_alls += 1;
    }

    fn set(&mut self, kind: Kind, id: &str, value: Option<&[u8]>) {
        let mut r = self.0.lock().unwrap();
        let map = match kind {
            Kind::Route => &mut r.routes,
            Kind::Upstream => &mut r.upstreams,
        };
        match value {
            Some(v) => map.insert(id.to_owned(), v.to_vec()),
            None => map.remove(id),
        };
        r.sets
            .push((kind, id.to_owned(), value.map(<[u8]>::to_vec)));
    }
}

impl Recorder {
    fn with<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&self.0.lock().unwrap())
    }

    fn route(&self, id: &str) -> Option<Vec<u8>> {
        self.with(|r| r.routes.get(id).cloned())
    }

    fn wait(&self, within: Duration, cond: impl Fn(&Record) -> bool) -> bool {
        wait_until(within, || self.with(&cond))
    }
}

fn settings(endpoints: Vec<Endpoint>) -> ConfigCenter {
    ConfigCenter {
        endpoints,
        prefix: "/apisix".to_owned(),
        credentials: None,
        timeout: Duration::from_secs(2),
        cache: None,
        tls: None,
    }
}

/// `[config_center]` as an operator writes it (`body` is its keys after `type`), read the way
/// hearth reads its file.
fn settings_from(body: &str) -> ConfigCenter {
    let text = format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n\n[config_center]\ntype = \"etcd\"\ntimeout = \"2s\"\n{body}\n"
    );
    match Config::parse(&text, "t.toml") {
        Ok((cfg, _)) => cfg.config_center.expect("a config center"),
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn start(settings: &ConfigCenter) -> (Watcher, Recorder) {
    let rec = Recorder::default();
    let w =
        Watcher::start(settings, Box::new(rec.clone())).unwrap_or_else(|e| panic!("start: {e}"));
    (w, rec)
}

/// An endpoint nothing listens on.
fn dead_endpoint() -> Endpoint {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap()
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hearth-etcd-test-{}-{name}", std::process::id()))
}

#[test]
fn initial_load_reads_routes_and_upstreams_past_a_dead_endpoint() {
    let Some(etcd) = Etcd::start() else { return };
    let mut c = etcd.client();
    for (key, value) in [
        ("/apisix/routes/1", r#"{"uris":["/a"]}"#),
        ("/apisix/routes/2", r#"{"uris":["/b"]}"#),
        ("/apisix/upstreams/u", r#"{"nodes":{"127.0.0.1:1":1}}"#),
        ("/apisix/ssls/1", "{}"),
        ("/apisix/routes/nested/3", "{}"),
        ("/other/routes/4", "{}"),
    ] {
        c.put(key.as_bytes(), value.as_bytes()).unwrap();
    }
    // The first endpoint refuses connections; the second answers.
    let (w, rec) = start(&settings(vec![dead_endpoint(), etcd.endpoint()]));
    rec.with(|r| {
        assert_eq!(r.replace_alls, 1);
        assert_eq!(r.routes.keys().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(r.routes["1"], br#"{"uris":["/a"]}"#);
        assert_eq!(r.upstreams.keys().collect::<Vec<_>>(), ["u"]);
        assert!(r.sets.is_empty());
    });
    assert!(w.connected().load(Ordering::Relaxed));
    w.stop();
}

#[test]
fn puts_and_deletes_reach_the_sink_within_a_second() {
    let Some(etcd) = Etcd::start() else { return };
    let (w, rec) = start(&settings(vec![etcd.endpoint()]));
    let mut writer = Writer::new(&settings(vec![etcd.endpoint()]));
    let mut c = etcd.client();

    c.put(b"/apisix/routes/7", br#"{"uris":["/x"]}"#).unwrap();
    assert!(
        rec.wait(WITHIN, |r| r.routes.contains_key("7")),
        "route put not seen within {WITHIN:?}"
    );
    writer
        .put(Kind::Upstream, "u", br#"{"nodes":{"127.0.0.1:1":1}}"#)
        .unwrap();
    assert!(
        rec.wait(WITHIN, |r| r.upstreams.contains_key("u")),
        "upstream put not seen within {WITHIN:?}"
    );
    c.put(b"/apisix/routes/7", br#"{"uris":["/y"]}"#).unwrap();
    assert!(rec.wait(WITHIN, |r| r
        .routes
        .get("7")
        .is_some_and(|v| v == br#"{"uris":["/y"]}"#)));
    c.put(b"/apisix/ssls/1", b"{}").unwrap(); // not hearth's: skipped
    assert!(writer.delete(Kind::Route, "7").unwrap());
    assert!(
        rec.wait(WITHIN, |r| !r.routes.contains_key("7")),
        "route delete not seen within {WITHIN:?}"
    );
    c.delete(b"/apisix/upstreams/u").unwrap();
    assert!(
        rec.wait(WITHIN, |r| r.upstreams.is_empty()),
        "upstream delete not seen within {WITHIN:?}"
    );

    rec.with(|r| {
        let seen: Vec<(Kind, &str, bool)> = r
            .sets
            .iter()
            .map(|(k, id, v)| (*k, id.as_str(), v.is_some()))
            .collect();
        assert_eq!(
            seen,
            [
                (Kind::Route, "7", true),
                (Kind::Upstream, "u", true),
                (Kind::Route, "7", true),
                (Kind::Route, "7", false),
                (Kind::Upstream, "u", false),
            ]
        );
        assert_eq!(r.replace_alls, 1);
    });
    w.stop();
}

#[test]
fn invalid_values_are_passed_through_as_bytes() {
    let Some(etcd) = Etcd::start() else { return };
    let (w, rec) = start(&settings(vec![etcd.endpoint()]));
    let mut c = etcd.client();
    c.put(b"/apisix/routes/bad", b"{not json").unwrap();
    c.put(b"/apisix/upstreams/bin", b"\xff\x00{").unwrap();
    assert!(rec.wait(WITHIN, |r| r.routes.contains_key("bad")
        && r.upstreams.contains_key("bin")));
    assert_eq!(rec.route("bad").unwrap(), b"{not json");
    assert_eq!(rec.with(|r| r.upstreams["bin"].clone()), b"\xff\x00{");
    w.stop();
}

// A watch broken by an etcd restart resumes from the revision after the last one it saw: a
// change made right after the restart, before the watcher can reconnect, still arrives, and
// without a full reload. The relay only holds the watcher off until that change is made (etcd's
// death is what breaks the watch), so the order is certain rather than a race with the backoff.
#[test]
fn watch_resumes_after_etcd_restarts() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let relay = Relay::start(etcd.addr());
    let (w, rec) = start(&settings(vec![relay.endpoint()]));
    let connected = w.connected();
    etcd.client().put(b"/apisix/routes/a", b"1").unwrap();
    assert!(rec.wait(WITHIN, |r| r.routes.contains_key("a")));

    etcd.stop();
    assert!(
        wait_until(EVENTUALLY, || !connected.load(Ordering::Relaxed)),
        "connected stayed 1 with etcd down"
    );
    relay.cut();
    etcd.start_again();
    etcd.client().put(b"/apisix/routes/b", b"2").unwrap();
    relay.restore();
    assert!(
        rec.wait(EVENTUALLY, |r| r.routes.contains_key("b")),
        "change after restart never arrived"
    );
    assert!(wait_until(EVENTUALLY, || connected.load(Ordering::Relaxed)));
    rec.with(|r| {
        assert_eq!(
            r.replace_alls, 1,
            "resumed by reloading everything rather than from the revision"
        );
        let ids: Vec<&str> = r.sets.iter().map(|(_, id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "a change was lost or applied twice");
    });
    w.stop();
}

// While the watcher is cut off, many changes are made and etcd compacts its history past the
// watcher's revision. On reconnect etcd refuses to resume from there, and the watcher reads
// everything again: one replace_all with the state as it is now.
#[test]
fn compaction_forces_a_full_reload() {
    let Some(etcd) = Etcd::start() else { return };
    let relay = Relay::start(etcd.addr());
    let (w, rec) = start(&settings(vec![relay.endpoint()]));
    let connected = w.connected();
    let mut c = etcd.client();
    c.put(b"/apisix/routes/gone", b"old").unwrap();
    assert!(rec.wait(WITHIN, |r| r.routes.contains_key("gone")));

    relay.cut();
    assert!(wait_until(EVENTUALLY, || !connected.load(Ordering::Relaxed)));
    c.delete(b"/apisix/routes/gone").unwrap();
    let mut revision = 0;
    for i in 0..50 {
        revision = c
            .put(b"/apisix/routes/kept", format!("v{i}").as_bytes())
            .unwrap();
    }
    c.put(b"/apisix/upstreams/u", b"{}").unwrap();
    c.compact(revision).unwrap();
    // The history the watcher would need is gone: etcd cancels a watch from there.
    let mut probe = c.watch(b"/apisix/", 2).unwrap();
    let msg = loop {
        match probe.poll().unwrap() {
            None | Some(WatchMsg::Created { .. }) => continue,
            Some(msg) => break msg,
        }
    };
    assert!(matches!(msg, WatchMsg::Compacted { .. }), "{msg:?}");
    relay.restore();

    assert!(
        rec.wait(EVENTUALLY, |r| r.replace_alls == 2),
        "no full reload after compaction"
    );
    rec.with(|r| {
        assert_eq!(r.routes.keys().collect::<Vec<_>>(), ["kept"]);
        assert_eq!(r.routes["kept"], b"v49");
        assert_eq!(r.upstreams.keys().collect::<Vec<_>>(), ["u"]);
        // Only the first put went by watch; the rest came with the reload.
        assert_eq!(r.sets.len(), 1, "{:?}", r.sets.len());
    });
    assert!(wait_until(EVENTUALLY, || connected.load(Ordering::Relaxed)));
    // And it follows changes again after the reload.
    c.put(b"/apisix/routes/after", b"x").unwrap();
    assert!(rec.wait(EVENTUALLY, |r| r.routes.contains_key("after")));
    w.stop();
}

#[test]
fn cache_file_is_written_and_serves_a_start_while_etcd_is_down() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let cache = temp_file("cache.json");
    let _ = std::fs::remove_file(&cache);
    let with_cache = ConfigCenter {
        cache: Some(cache.clone()),
        ..settings(vec![etcd.endpoint()])
    };
    let (w, rec) = start(&with_cache);
    etcd.client()
        .put(b"/apisix/routes/r", br#"{"uris":["/r"]}"#)
        .unwrap();
    etcd.client().put(b"/apisix/upstreams/u", b"{}").unwrap();
    assert!(rec.wait(WITHIN, |r| r.upstreams.contains_key("u")));
    // The cache is written after the sink is told; wait for it rather than assume.
    let cached = || Snapshot::load(&cache, "/apisix").ok();
    assert!(wait_until(EVENTUALLY, || cached()
        .is_some_and(|s| s.upstreams.contains_key("u"))));
    w.stop();

    etcd.stop();
    // Without a cache: a clear refusal.
    let Err(e) = Watcher::start(
        &settings(vec![etcd.endpoint()]),
        Box::new(Recorder::default()),
    ) else {
        panic!("started with etcd down and no cache");
    };
    let want = format!("etcd at {} unreachable: ", etcd.url());
    assert!(
        e.0.starts_with(&want) && e.0.ends_with("; no cache file configured"),
        "{e}"
    );

    // With it: the cached routes and upstreams, and connected 0.
    let (w, rec) = start(&with_cache);
    let connected = w.connected();
    assert!(!connected.load(Ordering::Relaxed));
    rec.with(|r| {
        assert_eq!(r.replace_alls, 1);
        assert_eq!(r.routes["r"], br#"{"uris":["/r"]}"#);
        assert!(r.upstreams.contains_key("u"));
    });

    // When etcd comes back the watcher reads it whole and follows it.
    etcd.start_again();
    etcd.client().put(b"/apisix/routes/new", b"{}").unwrap();
    assert!(rec.wait(EVENTUALLY, |r| r.routes.contains_key("new")));
    assert!(wait_until(EVENTUALLY, || connected.load(Ordering::Relaxed)));
    assert!(rec.with(|r| r.replace_alls) >= 2);
    w.stop();
    let _ = std::fs::remove_file(&cache);
}

#[test]
fn etcdctl_put_from_the_issue_is_seen_verbatim() {
    let Some(etcd) = Etcd::start() else { return };
    let (w, rec) = start(&settings(vec![etcd.endpoint()]));
    // Typed exactly as in the issue.
    let command = r#"put /apisix/routes/00000000000000000956 '{"upstream":{"timeout":{"connect":180,"read":180,"send":180},"keepalive_pool":{"idle_timeout":60,"requests":1000,"size":320},"nodes":{"127.0.0.1:20001":100},"pass_host":"node","type":"roundrobin","scheme":"http","hash_on":"vars"},"status":1,"priority":0,"vars":[["http_X-SW-Authorization-TenantCode","==","tenant"],["http_X-SW-Authorization-AppCode","IN",["","testapp"]]],"name":"tenant route","plugins":{},"uris":["/pki/*"],"id":"00000000000000000956"}'"#;
    let out = etcd.etcdctl(command);
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = "00000000000000000956";
    assert!(
        rec.wait(WITHIN, |r| r.routes.contains_key(id)),
        "the etcdctl put was not seen within {WITHIN:?}"
    );
    let value = rec.route(id).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&value).expect("the value is the JSON typed");
    assert_eq!(json["id"], id);
    assert_eq!(json["uris"][0], "/pki/*");
    assert_eq!(json["upstream"]["nodes"]["127.0.0.1:20001"], 100);
    w.stop();
}

#[test]
fn credentials_get_a_token_and_are_required_when_auth_is_on() {
    const TOKEN_TTL: Duration = Duration::from_secs(1);
    let Some(etcd) = Etcd::start_with(&["--auth-token-ttl", "1"]) else {
        return;
    };
    let relay = Relay::start(etcd.addr());
    for args in [
        "user add root:rootpw",
        "auth enable",
        "--user root:rootpw put /apisix/routes/1 {}",
    ] {
        let out = etcd.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let Err(e) = Watcher::start(
        &settings(vec![etcd.endpoint()]),
        Box::new(Recorder::default()),
    ) else {
        panic!("read etcd with auth on and no credentials");
    };
    assert!(e.0.contains("etcd refused"), "{e}");

    let with_auth = ConfigCenter {
        credentials: Some(Credentials {
            user: "root".into(),
            password: "rootpw".into(),
        }),
        ..settings(vec![relay.endpoint()])
    };
    let (w, rec) = start(&with_auth);
    let connected = w.connected();
    assert!(rec.route("1").is_some());
    let mut writer = Writer::new(&with_auth);
    writer.put(Kind::Route, "2", b"{}").unwrap();
    assert!(rec.wait(WITHIN, |r| r.routes.contains_key("2")));

    // Tokens live one second here. Once the watcher's has expired, a broken watch must come back
    // with a new token (etcd answers a watch opened with a dead one by cancelling it) rather than
    // retry the dead one forever; the writer's expired token must be renewed too.
    relay.cut();
    assert!(wait_until(EVENTUALLY, || !connected.load(Ordering::Relaxed)));
    std::thread::sleep(TOKEN_TTL * 2);
    relay.restore();
    writer.put(Kind::Route, "3", b"{}").unwrap();
    assert!(
        rec.wait(EVENTUALLY, |r| r.routes.contains_key("3")),
        "no change seen after the token expired"
    );
    assert!(wait_until(EVENTUALLY, || connected.load(Ordering::Relaxed)));
    w.stop();
}

#[test]
fn over_tls_with_client_certificates_the_watcher_loads_follows_and_writes() {
    let pki = Pki::new("etcd");
    let (cert, key) = pki.issue("etcd", &["127.0.0.1"]);
    let (client_cert, client_key) = pki.issue("hearth", &["hearth.test"]);
    let Some(etcd) = Etcd::start_tls(TlsFiles {
        ca: pki.ca_path(),
        cert,
        key,
        client_cert_auth: true,
        client: Some((client_cert.clone(), client_key.clone())),
    }) else {
        return;
    };
    assert!(etcd.url().starts_with("https://"));
    etcd.client()
        .put(b"/apisix/routes/1", br#"{"uri":"/a"}"#)
        .unwrap();
    let tls = format!(
        "endpoints = [\"{}\"]\ntls = {{ ca = {:?}, cert = {:?}, key = {:?}, verify = true }}",
        etcd.url(),
        pki.ca_path(),
        client_cert,
        client_key
    );
    let with_cert = settings_from(&tls);
    let (w, rec) = start(&with_cert);
    assert_eq!(rec.route("1").as_deref(), Some(&br#"{"uri":"/a"}"#[..]));
    // The watch runs over TLS too, and so do the admin API's writes.
    etcd.client()
        .put(b"/apisix/routes/2", br#"{"uri":"/b"}"#)
        .unwrap();
    assert!(rec.wait(WITHIN, |r| r.routes.contains_key("2")));
    let mut writer = Writer::new(&with_cert);
    writer.put(Kind::Route, "3", b"{}").unwrap();
    assert!(rec.wait(WITHIN, |r| r.routes.contains_key("3")));
    let out = etcd.etcdctl("get /apisix/routes/3 --print-value-only");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{}", "{out:?}");
    w.stop();

    // Without a client certificate etcd ends the handshake (BadCertificate), and the error
    // says it was TLS.
    let no_cert = settings_from(&format!(
        "endpoints = [\"{}\"]\ntls = {{ ca = {:?} }}",
        etcd.url(),
        pki.ca_path()
    ));
    let Err(e) = Watcher::start(&no_cert, Box::new(Recorder::default())) else {
        panic!("read etcd's --client-cert-auth without a certificate");
    };
    // Under TLS 1.3 etcd's alert may be lost to the reset that follows it; either way the
    // error says that it was TLS.
    assert!(
        e.0.contains("TLS: received fatal alert")
            || e.0
                .contains("TLS: the server closed the connection after the handshake"),
        "{e}"
    );
    assert!(Writer::new(&no_cert).put(Kind::Route, "4", b"{}").is_err());

    // A CA that did not sign etcd's certificate: hearth refuses etcd (UnknownIssuer).
    let other = Pki::new("other");
    let wrong_ca = settings_from(&tls.replace(
        &format!("{:?}", pki.ca_path()),
        &format!("{:?}", other.ca_path()),
    ));
    let Err(e) = Watcher::start(&wrong_ca, Box::new(Recorder::default())) else {
        panic!("trusted an etcd signed by another CA");
    };
    assert!(e.0.contains("TLS: invalid peer certificate"), "{e}");

    // verify = false takes etcd's certificate unchecked (logged as a warning at load).
    let unchecked = settings_from(&format!(
        "endpoints = [\"{}\"]\ntls = {{ cert = {:?}, key = {:?}, verify = false }}",
        etcd.url(),
        client_cert,
        client_key
    ));
    let (w, rec) = start(&unchecked);
    assert!(rec.route("3").is_some());
    w.stop();
}
