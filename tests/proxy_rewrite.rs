//! APISIX's `proxy-rewrite` through the real binary: each field as a mock upstream receives the
//! request, on routes from the file, the admin API and etcd, the host as the SNI of an https
//! upstream that takes it from the request, and the refusal of any other plugin, by name, from
//! each. Also, in this test binary only, a counting allocator proves that writing a head with a
//! rewrite allocates nothing unless it keeps regex_uri's captures.

mod common;
#[path = "common/tls.rs"]
mod tlskit;

use std::net::IpAddr;
use std::time::Duration;

use hearth::http::head::{parse_request, Limits};
use hearth::http::rewrite::{request_head, request_head_with, Forward, Upgrades};
use hearth::proxy_rewrite::from_plugins;
use hearth::route::Request;
use serde_json::{json, Value};

use common::alloc::allocations;
use common::etcd::Etcd;
use common::*;
use tlskit::{Pki, TlsUpstream};

#[global_allocator]
static ALLOCATOR: common::alloc::Counting = common::alloc::Counting;

const KEY: &str = "edd1c9f034335f136f87ad84b625c8f1";

/// Config checks read a file and exit; anything slower is a hang.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// One route per field under test, each under its own prefix, and `/plain/*` without the plugin.
const FILE_ROUTES: &str = r#"
[[routes]]
uris = ["/plain/*"]
upstream = "backend"

[[routes]]
uris = ["/u/*"]
upstream = "backend"
plugins = { proxy-rewrite = { uri = "/fixed/$arg_id" } }

[[routes]]
uris = ["/r/*"]
upstream = "backend"
plugins = { proxy-rewrite = { regex_uri = ["^/r/(\\w+)/(\\w+)", "/$2/$1"] } }

[[routes]]
uris = ["/h/*"]
upstream = "backend"
plugins = { proxy-rewrite = { host = "backend.test:8080" } }

[[routes]]
uris = ["/m/*"]
upstream = "backend"
plugins = { proxy-rewrite = { method = "PUT" } }

[[routes]]
uris = ["/hs/*"]
upstream = "backend"

[routes.plugins.proxy-rewrite.headers]
set = { X-Set = "set", X-Replaced = "new" }
add = { X-Added = "added", X-Kept = "second" }
remove = ["X-Drop"]

[[routes]]
uris = ["/flat/*"]
upstream = "backend"
plugins = { proxy-rewrite = { headers = { X-Flat = "flat", X-Gone = "" } } }
"#;

/// Sends `GET target` with `headers`; the answer's status and what the mock received.
fn through(h: &Hearth, mock: &MockUpstream, target: &str, headers: &[(&str, &str)]) -> Recorded {
    let before = mock.request_count();
    let mut c = h.client();
    c.send(&request("GET", target, headers, b""));
    let r = c.read_response();
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    assert!(mock.wait_requests(before + 1, Duration::from_secs(5)));
    mock.requests().pop().expect("recorded")
}

#[test]
fn every_field_from_the_file() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).routes(FILE_ROUTES).start();

    let plain = through(&h, &mock, "/plain/a?id=7", &[]);
    assert_eq!(
        (plain.method.as_str(), plain.target.as_str()),
        ("GET", "/plain/a?id=7")
    );
    assert_eq!(plain.header("host"), Some(HOST));

    let r = through(&h, &mock, "/u/anything?id=7", &[]);
    assert_eq!(
        r.target, "/fixed/7?id=7",
        "uri, with a variable and the query kept"
    );

    let r = through(&h, &mock, "/r/one/two?q=1", &[]);
    assert_eq!(r.target, "/two/one?q=1", "regex_uri, with captures");
    let r = through(&h, &mock, "/r/x", &[]);
    assert_eq!(
        r.target, "/r/x",
        "regex_uri that does not match leaves the path"
    );

    let r = through(&h, &mock, "/h/x", &[]);
    assert_eq!(r.header("host"), Some("backend.test:8080"), "host");
    assert_eq!(
        r.header("x-forwarded-host"),
        Some(HOST),
        "the client's Host still told"
    );

    let r = through(&h, &mock, "/m/x", &[]);
    assert_eq!(r.method, "PUT", "method");
    assert_eq!(
        r.header("content-length"),
        Some("0"),
        "a PUT says its body is empty"
    );

    let r = through(
        &h,
        &mock,
        "/hs/x",
        &[
            ("X-Replaced", "old"),
            ("x_replaced", "old, underscored"),
            ("X-Kept", "first"),
            ("X-Drop", "gone"),
            ("X-Other", "untouched"),
        ],
    );
    assert_eq!(r.header_all("x-set"), ["set"]);
    assert_eq!(r.header_all("x-replaced"), ["new"], "set replaces");
    assert!(
        !r.headers.iter().any(|(n, _)| n == "x_replaced"),
        "and its underscore spelling goes too: {:?}",
        r.headers
    );
    assert_eq!(r.header_all("x-added"), ["added"]);
    assert_eq!(r.header_all("x-kept"), ["first", "second"], "add appends");
    assert!(!r.has_header("x-drop"), "remove drops");
    assert_eq!(r.header("x-other"), Some("untouched"));

    let r = through(
        &h,
        &mock,
        "/flat/x",
        &[("X-Flat", "old"), ("X-Gone", "old")],
    );
    assert_eq!(r.header_all("x-flat"), ["flat"], "the flat form sets");
    assert!(!r.has_header("x-gone"), "and an empty value removes");
}

#[test]
fn a_route_from_the_admin_api() {
    let mock = MockUpstream::echo_target();
    let mut toml = conf(&[mock.addr()])
        .routes("[[routes]]\nuris = [\"/file/*\"]\nupstream = \"backend\"\n")
        .admin()
        .toml();
    toml.push_str(&format!("key = \"{KEY}\"\n"));
    let h = Hearth::start(&toml);
    let route = json!({
        "uri": "/api/*",
        "upstream": {"nodes": {mock.addr().to_string(): 1}, "type": "roundrobin"},
        "plugins": {"proxy-rewrite": {
            "regex_uri": ["^/api/v(\\d+)/(.*)", "/$2"],
            "method": "POST",
            "headers": {"set": {"X-Api-Version": "$1", "X-Client": "$remote_addr"}}
        }}
    });
    let (status, answer) = admin(&h, "PUT", "/apisix/admin/routes/r1", &route.to_string());
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["value"]["plugins"]["proxy-rewrite"]["method"], "POST",
        "the plugin is stored as given"
    );
    let r = through(&h, &mock, "/api/v2/users?page=3", &[]);
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("POST", "/users?page=3")
    );
    assert_eq!(r.header("x-api-version"), Some("2"));
    assert_eq!(r.header("x-client"), Some("127.0.0.1"));
}

#[test]
fn another_plugin_is_refused_by_name() {
    let mock = MockUpstream::echo_target();
    let mut toml = conf(&[mock.addr()]).admin().toml();
    toml.push_str(&format!("key = \"{KEY}\"\n"));
    let h = Hearth::start(&toml);
    let up = json!({"nodes": {mock.addr().to_string(): 1}});
    for (plugins, want) in [
        (
            json!({"proxy-rewrite": {"uri": "/x"}, "limit-count": {"count": 1}}),
            "plugins.limit-count: plugins are not supported, except proxy-rewrite",
        ),
        (
            json!({"proxy-rewrite": {"headers": {"set": {"Content-Length": "5"}}}}),
            "plugins.proxy-rewrite.headers.set.Content-Length: Content-Length frames the body",
        ),
        (
            json!({"proxy-rewrite": {"method": "HEAD"}}),
            "plugins.proxy-rewrite.method: HEAD is refused",
        ),
    ] {
        let body = json!({"uri": "/a", "upstream": up, "plugins": plugins}).to_string();
        let (status, answer) = admin(&h, "PUT", "/apisix/admin/routes/r1", &body);
        assert_eq!(status, 400, "{body} -> {answer}");
        let msg = answer["error_msg"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body} -> {msg:?}, want {want:?}");
    }
    assert_eq!(admin(&h, "GET", "/apisix/admin/routes/r1", "").0, 404);

    // The file names the file, the line, the route and the plugin.
    let toml = conf(&[dead_addr()])
        .routes(
            "[[routes]]\nuris = [\"/*\"]\nupstream = \"backend\"\n\
             plugins = { cors = { allow_origins = \"*\" } }\n",
        )
        .toml();
    let file = ConfigFile::new(&toml);
    let path = file.path_str();
    let exit = run_hearth(&["--check", "-c", &path], EXIT_DEADLINE);
    assert_eq!(exit.code(), Some(1), "{}", exit.stderr);
    let want = format!(
        "{path}:{}: routes[0].plugins.cors: plugins are not supported, except proxy-rewrite",
        line_of(&toml, "plugins = { cors")
    );
    assert!(exit.stderr.contains(&want), "{}\nwant {want}", exit.stderr);
}

#[test]
fn the_host_is_the_sni_when_the_upstream_takes_it_from_the_request() {
    let pki = Pki::new("rewrite-sni");
    let (cert, key) = pki.issue("up", &["a.test", "b.test"]);
    let up = TlsUpstream::start(&cert, &key, None);
    let h = conf(&[up.addr()])
        .upstream("scheme = \"https\"")
        .upstream(&format!("tls = {{ ca = \"{}\" }}", pki.ca_path().display()))
        .routes(
            "[[routes]]\nuris = [\"/b/*\"]\nupstream = \"backend\"\n\
             plugins = { proxy-rewrite = { host = \"b.test\" } }\n\
             [[routes]]\nuris = [\"/*\"]\nupstream = \"backend\"\n",
        )
        .start();
    let mut c = h.client();
    for path in ["/a", "/b/x"] {
        let r = c
            .exchange(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes())
            .expect("answer");
        assert_eq!(r.status, 200, "{path}: {}", h.logs_text());
    }
    let conns = up.conns();
    let seen: Vec<(Option<&str>, &[String])> = conns
        .iter()
        .map(|c| (c.sni.as_deref(), c.hosts.as_slice()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("a.test"), &["a.test".to_owned()][..]),
            (Some("b.test"), &["b.test".to_owned()][..])
        ],
        "each name its own connection, the rewritten host its SNI"
    );
}

#[test]
fn routes_from_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    let mock = MockUpstream::echo_target();
    let put = |key: &str, value: &Value| {
        etcd.client()
            .put(key.as_bytes(), value.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    };
    let up = json!({"nodes": {mock.addr().to_string(): 1}});
    put(
        "/apisix/routes/1",
        &json!({"uri": "/old/*", "upstream": up,
                "plugins": {"proxy-rewrite": {"regex_uri": ["^/old/(.*)", "/new/$1"]}}}),
    );
    let h = Hearth::start(&format!(
        "workers = 1\n\n[[listen]]\naddr = \"127.0.0.1:0\"\n\n[config_center]\n\
         type = \"etcd\"\nendpoints = [\"{}\"]\ntimeout = \"2s\"\n",
        etcd.url()
    ));
    let r = through(&h, &mock, "/old/x?y", &[]);
    assert_eq!(r.target, "/new/x?y", "loaded at start");
    // Changed through the watch: the new value applies, and another plugin is refused by name.
    put(
        "/apisix/routes/1",
        &json!({"uri": "/old/*", "upstream": up,
                "plugins": {"proxy-rewrite": {"uri": "/newer"}}}),
    );
    assert!(wait_until(Duration::from_secs(15), || {
        through(&h, &mock, "/old/x", &[]).target == "/newer"
    }));
    put(
        "/apisix/routes/2",
        &json!({"uri": "/other", "upstream": up, "plugins": {"cors": {}}}),
    );
    assert!(h.wait_log(
        &[
            "/apisix/routes/2: plugins.cors: plugins are not supported, except proxy-rewrite",
            "; skipped"
        ],
        Duration::from_secs(15)
    ));
}

#[test]
fn writing_a_rewritten_head_allocates_only_for_captures() {
    let src =
        b"GET /api/v2/users?page=3 HTTP/1.1\r\nHost: a.test\r\nCookie: c=1\r\nX-User: u\r\n\r\n";
    let mut headers = Vec::new();
    let head = parse_request(src, &Limits::default(), &mut headers)
        .expect("valid")
        .expect("whole");
    let fwd = Forward {
        client_ip: IpAddr::from([192, 0, 2, 1]),
        proto: "http",
        host: None,
        upgrades: Upgrades::NONE,
    };
    let req = Request {
        method: head.method_span.of(src),
        target: head.target.of(src),
        host: head.host.map(|s| s.of(src)),
        remote: fwd.client_ip,
        headers: &headers,
        src,
    };
    let no_captures = from_plugins(&json!({"proxy-rewrite": {
        "regex_uri": ["^/api/v\\d+/", "/"],
        "method": "POST",
        "headers": {"set": {"X-Who": "$http_x_user from $remote_addr", "X-Page": "$arg_page"},
                    "add": {"Via": "1.1 hearth"}, "remove": ["Cookie"]}
    }}))
    .expect("valid")
    .expect("proxy-rewrite");
    let captures = from_plugins(&json!({"proxy-rewrite": {
        "regex_uri": ["^/api/v(\\d+)/(.*)", "/$2"],
        "headers": {"set": {"X-Version": "$1"}}
    }}))
    .expect("valid")
    .expect("proxy-rewrite");
    let mut out = Vec::with_capacity(4096);
    // Warm up: the regex crate makes its search cache on a thread's first match.
    for rule in [&no_captures, &captures] {
        out.clear();
        request_head_with(
            src,
            &head,
            &headers,
            &fwd,
            &mut rule.editor(&req, "http"),
            &mut out,
        );
    }
    let before = allocations();
    for _ in 0..100 {
        out.clear();
        request_head(src, &head, &headers, &fwd, &mut out);
        out.clear();
        request_head_with(
            src,
            &head,
            &headers,
            &fwd,
            &mut no_captures.editor(&req, "http"),
            &mut out,
        );
    }
    assert_eq!(
        allocations() - before,
        0,
        "no rewrite, or one keeping no captures"
    );
    assert!(String::from_utf8_lossy(&out).starts_with("POST /users?page=3 HTTP/1.1\r\n"));
    let before = allocations();
    for _ in 0..100 {
        out.clear();
        request_head_with(
            src,
            &head,
            &headers,
            &fwd,
            &mut captures.editor(&req, "http"),
            &mut out,
        );
    }
    assert_eq!(
        allocations() - before,
        100,
        "one per request, to keep the captures"
    );
    assert!(String::from_utf8_lossy(&out).contains("X-Version: 2\r\n"));
}

/// One admin request with the key; the answer's status and JSON body.
fn admin(h: &Hearth, method: &str, path: &str, body: &str) -> (u16, Value) {
    let headers = [("Content-Type", "application/json"), ("X-API-KEY", KEY)];
    let mut c = Client::connect(h.admin_addr());
    c.send(&request(method, path, &headers, body.as_bytes()));
    let r = c.read_response();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}
