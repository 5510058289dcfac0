//! A fleet of hearth processes configured from one etcd, as issue 8 asks: the real binary, a real
//! etcd on run-time ports (tests/common/etcd.rs) and mock upstreams that count connections.
//!
//! Each test runs its own etcd and its own hearths, whose file defines no route at all: every
//! route and upstream comes from etcd. A change is "seen" by an instance when a request through
//! it (or its admin API's local read) shows it; each wait is bounded, and the delays under test
//! (put or delete to applied on every instance, within 1 s) are measured and printed.

mod common;
#[path = "common/tls.rs"]
mod tls_kit;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::etcd::{Etcd, TlsFiles};
use common::load::Load;
use common::{
    dead_addr, metric, request, run_hearth, wait_until, Client, ConfigFile, Hearth, MockUpstream,
    Reply, Response,
};

/// The bound under test: a change reaches every instance within this.
const WITHIN: Duration = Duration::from_secs(1);
/// Generous bound for what is not under test (reconnects after backoff, restarts).
const EVENTUALLY: Duration = Duration::from_secs(15);

/// A hearth whose routes and upstreams all come from etcd at `endpoint`, with an open admin
/// listener on loopback; `extra` goes into `[config_center]`.
fn fleet_toml(endpoint: &str, extra: &str) -> String {
    format!(
        "workers = 1\n\n[[listen]]\naddr = \"127.0.0.1:0\"\n\n[client]\nmax_requests = 1000000\n\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\n[config_center]\ntype = \"etcd\"\n\
         endpoints = [\"{endpoint}\"]\ntimeout = \"2s\"\n{extra}"
    )
}

fn start_hearth(etcd: &Etcd) -> Hearth {
    Hearth::start(&fleet_toml(&etcd.url(), ""))
}

/// A mock answering `NAME TARGET`, so a test can tell which upstream served a request.
fn named(name: &'static str) -> MockUpstream {
    MockUpstream::start(move |req, _| Reply::ok(format!("{name} {}", req.target)))
}

fn put(etcd: &Etcd, key: &str, value: &str) {
    etcd.client()
        .put(key.as_bytes(), value.as_bytes())
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

fn delete(etcd: &Etcd, key: &str) {
    let (_, existed) = etcd
        .client()
        .delete(key.as_bytes())
        .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    assert!(existed, "{key} was not there to delete");
}

/// One GET on a fresh connection.
fn get(h: &Hearth, path: &str) -> Response {
    h.client().get(path)
}

/// Status and body text of one GET on a fresh connection.
fn fetch(h: &Hearth, path: &str) -> (u16, String) {
    let r = get(h, path);
    (r.status, r.text())
}

/// One admin request; the status and the JSON body (Null when not JSON).
fn admin(h: &Hearth, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut c = Client::connect(h.admin_addr());
    c.send(&request(
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    ));
    let r = c.read_response();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn connected(h: &Hearth) -> f64 {
    metric(&h.metrics(), "config_center_connected")
}

/// Polls every instance until `seen` holds on it; the delay from `since` to each, or a panic
/// naming the instance that did not see it within `EVENTUALLY`. The caller asserts the bound,
/// so a failure shows the real delay.
fn delays(
    what: &str,
    fleet: &[&Hearth],
    since: Instant,
    seen: impl Fn(&Hearth) -> bool,
) -> Vec<Duration> {
    fleet
        .iter()
        .enumerate()
        .map(|(i, h)| {
            assert!(
                wait_until(EVENTUALLY, || seen(h)),
                "{what}: instance {i} never saw it"
            );
            since.elapsed()
        })
        .collect()
}

fn assert_within(what: &str, delays: &[Duration]) {
    eprintln!("{what}: applied on each instance after {delays:?}");
    for (i, d) in delays.iter().enumerate() {
        assert!(
            *d <= WITHIN,
            "{what}: instance {i} took {d:?}, more than {WITHIN:?}"
        );
    }
}

#[test]
fn initial_load_then_puts_and_deletes_reach_both_instances_within_a_second() {
    let Some(etcd) = Etcd::start() else { return };
    let (a, b) = (named("a"), named("b"));
    let upstream = |m: &MockUpstream| json!({ "nodes": { m.addr().to_string(): 1 } }).to_string();
    put(&etcd, "/apisix/upstreams/u1", &upstream(&a));
    put(
        &etcd,
        "/apisix/routes/r1",
        r#"{"uris":["/one/*"],"upstream_id":"u1"}"#,
    );
    let (h1, h2) = (start_hearth(&etcd), start_hearth(&etcd));
    let fleet = [&h1, &h2];

    // Initial load: live from the first connection, since the cores start with it.
    for h in fleet {
        assert_eq!(fetch(h, "/one/x"), (200, "a /one/x".to_owned()));
        assert_eq!(fetch(h, "/two/x").0, 404);
    }

    // A new route.
    let t = Instant::now();
    put(
        &etcd,
        "/apisix/routes/r2",
        r#"{"uris":["/two/*"],"upstream_id":"u1"}"#,
    );
    let route_put = delays("route put", &fleet, t, |h| fetch(h, "/two/x").0 == 200);

    // An upstream edited: the routes using it move to the new node.
    let t = Instant::now();
    put(&etcd, "/apisix/upstreams/u1", &upstream(&b));
    let upstream_put = delays("upstream put", &fleet, t, |h| {
        fetch(h, "/one/x").1 == "b /one/x"
    });

    // A route deleted.
    let t = Instant::now();
    delete(&etcd, "/apisix/routes/r2");
    let route_delete = delays("route delete", &fleet, t, |h| fetch(h, "/two/x").0 == 404);

    // An upstream no route uses yet, then deleted: seen through each instance's local store.
    let t = Instant::now();
    put(&etcd, "/apisix/upstreams/u2", &upstream(&a));
    let upstream_new = delays("new upstream", &fleet, t, |h| {
        admin(h, "GET", "/apisix/admin/upstreams/u2", "").0 == 200
    });
    let t = Instant::now();
    delete(&etcd, "/apisix/upstreams/u2");
    let upstream_delete = delays("upstream delete", &fleet, t, |h| {
        admin(h, "GET", "/apisix/admin/upstreams/u2", "").0 == 404
    });

    assert_within("route put", &route_put);
    assert_within("upstream put", &upstream_put);
    assert_within("route delete", &route_delete);
    assert_within("upstream put (unused)", &upstream_new);
    assert_within("upstream delete", &upstream_delete);
    for h in fleet {
        let m = h.metrics();
        assert_eq!(metric(&m, "config_center_connected"), 1.0);
        assert!(metric(&m, "config_center_revision") >= 7.0, "{m}");
        assert_eq!(
            metric(&m, "config_center_changes_total{result=\"skipped\"}"),
            0.0
        );
        // 2 at the initial load, then 5 by watch.
        assert_eq!(
            metric(&m, "config_center_changes_total{result=\"applied\"}"),
            7.0
        );
    }
}

/// The issue's command, typed verbatim but for the node's port, which points at a mock.
fn the_issue_command(node: std::net::SocketAddr) -> String {
    r#"put /apisix/routes/00000000000000000956 '{"upstream":{"timeout":{"connect":180,"read":180,"send":180},"keepalive_pool":{"idle_timeout":60,"requests":1000,"size":320},"nodes":{"127.0.0.1:20001":100},"pass_host":"node","type":"roundrobin","scheme":"http","hash_on":"vars"},"status":1,"priority":0,"vars":[["http_X-SW-Authorization-TenantCode","==","tenant"],["http_X-SW-Authorization-AppCode","IN",["","testapp"]]],"name":"tenant route","plugins":{},"uris":["/pki/*"],"id":"00000000000000000956"}'"#
        .replace("127.0.0.1:20001", &node.to_string())
}

fn pki(h: &Hearth, app_code: &str) -> Response {
    let mut c = h.client();
    c.send(&request(
        "GET",
        "/pki/x",
        &[
            ("X-SW-Authorization-TenantCode", "tenant"),
            ("X-SW-Authorization-AppCode", app_code),
        ],
        b"",
    ));
    c.read_response()
}

#[test]
fn the_issue_etcdctl_put_goes_live_on_both_instances() {
    let Some(etcd) = Etcd::start() else { return };
    let node = MockUpstream::echo_target();
    let (h1, h2) = (start_hearth(&etcd), start_hearth(&etcd));
    let t = Instant::now();
    let out = etcd.etcdctl(&the_issue_command(node.addr()));
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = delays("the issue's route", &[&h1, &h2], t, |h| {
        pki(h, "testapp").status == 200
    });
    assert_within("the issue's route", &seen);
    for h in [&h1, &h2] {
        let r = pki(h, "testapp");
        assert_eq!((r.status, r.text()), (200, "/pki/x".to_owned()));
    }
    let got = node.requests();
    assert!(got.len() >= 2);
    for req in &got {
        // pass_host = "node": the node's address as Host.
        assert_eq!(req.header("host"), Some(node.addr().to_string().as_str()));
        assert_eq!(req.header("x-sw-authorization-tenantcode"), Some("tenant"));
    }
}

#[test]
fn over_tls_with_a_client_certificate_routes_from_etcd_are_served_and_written() {
    let pki = tls_kit::Pki::new("fleet-etcd");
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
    let node = named("tls");
    put(
        &etcd,
        "/apisix/routes/1",
        &json!({"uri": "/from-etcd", "upstream": {"nodes": {node.addr().to_string(): 1}}})
            .to_string(),
    );
    let tls = format!(
        "tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n",
        pki.ca_path(),
        client_cert,
        client_key
    );
    let h = Hearth::start(&fleet_toml(&etcd.url(), &tls));
    assert_eq!(fetch(&h, "/from-etcd"), (200, "tls /from-etcd".to_owned()));
    assert_eq!(connected(&h), 1.0);
    // The admin API writes to etcd over the same TLS, and the watch brings it back.
    let route = json!({"uri": "/written", "upstream": {"nodes": {node.addr().to_string(): 1}}});
    let (status, answer) = admin(&h, "PUT", "/apisix/admin/routes/2", &route.to_string());
    assert_eq!(status, 201, "{answer}");
    assert!(wait_until(WITHIN, || get(&h, "/written").status == 200));
    let out = etcd.etcdctl("get /apisix/routes/2 --print-value-only");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/written"),
        "{out:?}"
    );
}

// The route's `vars` must refuse another app code. Matching on `vars` is being written in the
// router (route.rs) at the same time as this test: until that merge, hearth routes by uri alone
// and this test fails here; it passes once the router reads `vars`.
#[test]
fn the_issue_route_refuses_another_app_code() {
    let Some(etcd) = Etcd::start() else { return };
    let node = MockUpstream::echo_target();
    let h = start_hearth(&etcd);
    let out = etcd.etcdctl(&the_issue_command(node.addr()));
    assert!(out.status.success());
    assert!(wait_until(EVENTUALLY, || pki(&h, "testapp").status == 200));
    let before = node.request_count();
    assert_eq!(
        pki(&h, "other").status,
        404,
        "AppCode=other was routed (depends on the vars router merge)"
    );
    assert_eq!(node.request_count(), before);
}

#[test]
fn invalid_values_are_logged_with_their_key_and_skipped_while_others_apply() {
    let Some(etcd) = Etcd::start() else { return };
    let node = MockUpstream::echo_target();
    let route = |uri: &str| {
        json!({ "uris": [uri], "upstream": { "nodes": { node.addr().to_string(): 1 } } })
            .to_string()
    };
    // Bad at the initial load, beside a good one.
    put(&etcd, "/apisix/routes/41", r#"{"uris": ["/x"]"#);
    put(&etcd, "/apisix/routes/ok", &route("/ok"));
    let h = start_hearth(&etcd);
    assert_eq!(fetch(&h, "/ok").0, 200);
    assert!(h.wait_log(
        &[
            "/apisix/routes/41: invalid JSON at line 1, column 15",
            "; skipped"
        ],
        EVENTUALLY
    ));

    // Bad by watch: JSON that does not parse, and an object hearth refuses, around a good one.
    put(&etcd, "/apisix/routes/42", "not json");
    put(
        &etcd,
        "/apisix/routes/44",
        r#"{"uris":["/p"],"plugins":{"limit-count":{}},"upstream_id":"x"}"#,
    );
    put(&etcd, "/apisix/routes/43", &route("/fine"));
    assert!(wait_until(EVENTUALLY, || fetch(&h, "/fine").0 == 200));
    assert!(h.wait_log(
        &[
            "/apisix/routes/42: invalid JSON at line 1, column 2",
            "; skipped"
        ],
        EVENTUALLY
    ));
    assert!(h.wait_log(
        &["/apisix/routes/44: plugins.limit-count", "; skipped"],
        EVENTUALLY
    ));
    assert_eq!(fetch(&h, "/p").0, 404);

    // A bad value over a good one is not applied half-way: the good one keeps serving.
    put(
        &etcd,
        "/apisix/routes/43",
        r#"{"uris":["/changed"],"upstream":7}"#,
    );
    assert!(h.wait_log(&["/apisix/routes/43: ", "; skipped"], EVENTUALLY));
    assert_eq!(fetch(&h, "/fine").0, 200);
    assert_eq!(fetch(&h, "/changed").0, 404);
    let m = h.metrics();
    assert_eq!(
        metric(&m, "config_center_changes_total{result=\"skipped\"}"),
        4.0,
        "41, 42, 44 and the bad 43"
    );
    assert_eq!(
        metric(&m, "config_center_changes_total{result=\"applied\"}"),
        2.0,
        "ok and the good 43"
    );
}

#[test]
fn traffic_is_served_throughout_an_etcd_outage() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let node = MockUpstream::echo_target();
    let route = |uri: &str| {
        json!({ "uris": [uri], "upstream": { "nodes": { node.addr().to_string(): 1 } } })
            .to_string()
    };
    put(&etcd, "/apisix/routes/r", &route("/r/*"));
    let h = start_hearth(&etcd);
    assert_eq!(connected(&h), 1.0);

    etcd.stop();
    let down = Instant::now();
    assert!(
        wait_until(EVENTUALLY, || connected(&h) == 0.0),
        "connected stayed 1 with etcd down"
    );
    eprintln!(
        "etcd killed: config_center_connected 0 after {:?}",
        down.elapsed()
    );
    // Every request is served from the last good configuration: on one kept-alive connection
    // and on fresh ones.
    const N: usize = 200;
    let mut kept = h.client();
    for i in 0..N {
        let path = format!("/r/{i}");
        let r = if i % 2 == 0 {
            kept.get(&path)
        } else {
            get(&h, &path)
        };
        assert_eq!(
            (r.status, r.text()),
            (200, path),
            "request {i} during the outage"
        );
    }
    // An admin write cannot reach etcd: refused, and nothing changes here.
    let (status, body) = admin(&h, "PUT", "/apisix/admin/routes/x", &route("/x"));
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("etcd did not take the change")),
        "{body}"
    );
    assert_eq!(fetch(&h, "/x").0, 404);

    etcd.start_again();
    let back = Instant::now();
    put(&etcd, "/apisix/routes/after", &route("/after"));
    assert!(
        wait_until(EVENTUALLY, || fetch(&h, "/after").0 == 200),
        "a put after etcd came back never arrived"
    );
    assert!(wait_until(EVENTUALLY, || connected(&h) == 1.0));
    eprintln!(
        "{N} requests during the outage, none failed; etcd back: a new put applied and \
         connected 1 after {:?}",
        back.elapsed()
    );
    assert!(h.wait_log(
        &["config center: ", "serving the last good configuration"],
        WITHIN
    ));
}

#[test]
fn a_route_edit_through_etcd_under_keep_alive_load_opens_no_upstream_connection() {
    let Some(etcd) = Etcd::start() else { return };
    let node = MockUpstream::echo_target();
    let route = |priority: i64, uris: &[String]| {
        json!({
            "uris": uris, "priority": priority,
            "upstream": {"nodes": {node.addr().to_string(): 1},
                         "keepalive_pool": {"requests": 1000000, "idle_timeout": 60}}
        })
        .to_string()
    };
    put(
        &etcd,
        "/apisix/routes/load",
        &route(0, &["/load/*".to_owned()]),
    );
    let h = start_hearth(&etcd);
    let load = Load::start(h.addr(), 2, Duration::from_secs(30), "edits");
    assert!(load.advances(0, 200, EVENTUALLY), "load did not start");
    let before = node.connections();
    for i in 1..=3i64 {
        let mut uris = vec!["/load/*".to_owned()];
        uris.extend((0..i).map(|n| format!("/extra{n}/*")));
        put(&etcd, "/apisix/routes/load", &route(i, &uris));
        // Seen through the local store, so no probe request competes with the load for a
        // pooled connection.
        assert!(wait_until(EVENTUALLY, || admin(
            &h,
            "GET",
            "/apisix/admin/routes/load",
            ""
        )
        .1["value"]["priority"]
            == i));
        assert!(
            load.advances(load.done(), 100, EVENTUALLY),
            "load stalled after edit {i}"
        );
    }
    let done = load.finish();
    eprintln!(
        "3 route edits through etcd under load: {done} requests, upstream connections {before} \
         before the edits and {} after",
        node.connections()
    );
    assert_eq!(
        node.connections(),
        before,
        "route edits opened upstream connections"
    );
    assert_eq!(fetch(&h, "/extra2/z").0, 200, "the last edit is live");
}

#[test]
fn an_admin_write_on_one_instance_reaches_the_other_through_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    let node = MockUpstream::echo_target();
    let (h1, h2) = (start_hearth(&etcd), start_hearth(&etcd));
    let body =
        json!({ "uris": ["/adm/*"], "upstream": { "nodes": { node.addr().to_string(): 1 } } })
            .to_string();

    // Refused by the local check: nothing reaches etcd.
    let bad = json!({ "uris": ["/adm/*"], "plugins": { "p": {} }, "upstream_id": "u" }).to_string();
    let (status, answer) = admin(&h1, "PUT", "/apisix/admin/routes/adm", &bad);
    assert_eq!(status, 400, "{answer}");
    assert!(etcd
        .client()
        .range_prefix(b"/apisix/routes/")
        .unwrap()
        .kvs
        .is_empty());

    let t = Instant::now();
    let (status, answer) = admin(&h1, "PUT", "/apisix/admin/routes/adm", &body);
    let answered = t.elapsed();
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["key"], "/apisix/routes/adm");
    // The answer came once this instance had applied it: its store has it now.
    let (status, got) = admin(&h1, "GET", "/apisix/admin/routes/adm", "");
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["value"], answer["value"]);
    // etcd holds the object as answered, timestamps included.
    let kvs = etcd
        .client()
        .range_prefix(b"/apisix/routes/adm")
        .unwrap()
        .kvs;
    assert_eq!(kvs.len(), 1);
    let stored: Value = serde_json::from_slice(&kvs[0].value).unwrap();
    assert_eq!(stored, answer["value"]);
    let seen = delays("admin PUT on instance 0", &[&h1, &h2], t, |h| {
        fetch(h, "/adm/x").0 == 200
    });
    eprintln!("admin PUT answered after {answered:?}");
    assert_within("admin PUT on instance 0", &seen);

    let t = Instant::now();
    let (status, answer) = admin(&h2, "DELETE", "/apisix/admin/routes/adm", "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(admin(&h2, "GET", "/apisix/admin/routes/adm", "").0, 404);
    let seen = delays("admin DELETE on instance 1", &[&h2, &h1], t, |h| {
        fetch(h, "/adm/x").0 == 404
    });
    assert_within("admin DELETE on instance 1", &seen);
    assert_eq!(admin(&h1, "GET", "/apisix/admin/routes/adm", "").0, 404);
}

#[test]
fn a_start_with_etcd_down_and_no_cache_exits_1_saying_why() {
    let endpoint = format!("http://{}", dead_addr());
    let config = ConfigFile::new(&fleet_toml(&endpoint, ""));
    let exit = run_hearth(&["-c", &config.path_str()], Duration::from_secs(20));
    assert_eq!(exit.code(), Some(1), "{exit:?}");
    let want = format!("hearth: config center: etcd at {endpoint} unreachable: ");
    assert!(
        exit.stderr.contains(&want) && exit.stderr.contains("; no cache file configured"),
        "{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains("listening on"), "{}", exit.stderr);
}

#[test]
fn with_a_cache_a_restart_while_etcd_is_down_serves_the_cached_routes() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let node = MockUpstream::echo_target();
    let cache = etcd.dir().join("hearth-cache.json");
    let toml = fleet_toml(
        &etcd.url(),
        &format!("cache = {:?}\n", cache.display().to_string()),
    );
    put(
        &etcd,
        "/apisix/upstreams/u",
        &json!({ "nodes": { node.addr().to_string(): 1 } }).to_string(),
    );
    put(
        &etcd,
        "/apisix/routes/r",
        r#"{"uris":["/cached/*"],"upstream_id":"u"}"#,
    );
    let mut h = Hearth::start(&toml);
    assert_eq!(fetch(&h, "/cached/x").0, 200);
    assert!(wait_until(EVENTUALLY, || std::fs::read_to_string(&cache)
        .is_ok_and(|t| t.contains("/cached/*"))));
    assert!(h.terminate().is_some_and(|s| s.success()));

    etcd.stop();
    let h = Hearth::start(&toml);
    assert!(h.wait_log(&["serving the cached routes and upstreams from"], WITHIN));
    assert_eq!(
        fetch(&h, "/cached/x"),
        (200, "/cached/x".to_owned()),
        "the cached route"
    );
    assert_eq!(connected(&h), 0.0);

    // When etcd answers again, the instance follows it.
    etcd.start_again();
    put(
        &etcd,
        "/apisix/routes/r2",
        r#"{"uris":["/fresh"],"upstream_id":"u"}"#,
    );
    assert!(wait_until(EVENTUALLY, || fetch(&h, "/fresh").0 == 200));
    assert!(wait_until(EVENTUALLY, || connected(&h) == 1.0));
}
