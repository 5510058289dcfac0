//! Route matching through the real binary: APISIX route fields in the TOML file decide which of
//! two mock upstreams serves a request, or that none does (404). Also, in this test binary only,
//! a counting allocator proves that `Router::find` does not allocate.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::alloc::allocations;
use common::held::Held;
use common::{request, Client, Hearth, MockUpstream, Reply};
use hearth::config::{route_host, uri_pattern, Route};
use hearth::route::{parse_cond, Operand, Request, Router};

#[global_allocator]
static ALLOCATOR: common::alloc::Counting = common::alloc::Counting;

/// Two upstreams answering "a" and "b", and routes exercising each field, operator and
/// variable; the catch-alls under `/op/` go to b, so "a" means the conditions held.
fn routes_toml(a: &MockUpstream, b: &MockUpstream) -> String {
    format!(
        r#"workers = 1

[[listen]]
addr = "127.0.0.1:0"

[upstreams.a]
nodes = {{ "{a}" = 1 }}

[upstreams.b]
nodes = {{ "{b}" = 1 }}

# The issue's APISIX route, field for field where TOML has them.
[[routes]]
id = "00000000000000000956"
uris = ["/pki/*"]
status = 1
priority = 0
vars = [
    ["http_X-SW-Authorization-TenantCode", "==", "tenant"],
    ["http_X-SW-Authorization-AppCode", "IN", ["", "testapp"]],
]
upstream = "a"

[[routes]]
uris = ["/op/*"]
priority = 1
vars = [["arg_n", ">", 10]]
upstream = "a"

[[routes]]
uris = ["/op/*"]
priority = 1
vars = [["cookie_session", "~~", "^s[0-9]+$"]]
upstream = "a"

[[routes]]
uris = ["/op/*"]
vars = [["http_x_tags", "HAS", "beta"]]
upstream = "a"

[[routes]]
uris = ["/op*"]
hosts = ["*.example.com"]
vars = [["remote_addr", "==", "127.0.0.1"], ["request_method", "!~*", "^delete$"]]
upstream = "a"

[[routes]]
uris = ["/op/*"]
upstream = "b"

[[routes]]
uris = ["/off"]
status = 0
upstream = "a"

[[routes]]
uris = ["/m"]
methods = ["post"]
upstream = "a"
"#,
        a = a.addr(),
        b = b.addr()
    )
}

#[test]
fn fields_operators_and_variables_pick_the_upstream() {
    let a = MockUpstream::start(|_, _| Reply::ok("a"));
    let b = MockUpstream::start(|_, _| Reply::ok("b"));
    let hearth = Hearth::start(&routes_toml(&a, &b));
    let tenant = ("X-SW-Authorization-TenantCode", "tenant");
    let app = |code| ("x_sw_authorization_appcode", code);
    // (method, target, headers, expected body or 404)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    #[rustfmt::skip]
    let table: Vec<Case<'_>> = vec![
        ("GET", "/pki/x", vec![tenant, ("X-SW-Authorization-AppCode", "testapp")], "a"),
        ("GET", "/pki/x", vec![tenant, app("testapp")], "a"),
        ("GET", "/pki/x", vec![tenant], "a"),
        ("GET", "/pki/x", vec![tenant, app("other")], "404"),
        ("GET", "/pki/x", vec![("X-SW-Authorization-TenantCode", "else"), app("testapp")], "404"),
        ("GET", "/pki", vec![tenant, app("testapp")], "404"),
        ("GET", "/op/x?n=11", vec![], "a"),
        ("GET", "/op/x?n=10", vec![], "b"),
        ("GET", "/op/x?n=ten", vec![], "b"),
        ("GET", "/op/x", vec![("Cookie", "theme=dark; session=s42")], "a"),
        ("GET", "/op/x", vec![("Cookie", "session=x42")], "b"),
        ("GET", "/op/x", vec![("X-Tags", "alpha, beta")], "a"),
        ("GET", "/op/x", vec![("X-Tags", "betamax")], "b"),
        ("GET", "/opera", vec![("Host", "www.example.com")], "a"),
        ("DELETE", "/op/x", vec![("Host", "www.example.com:8080")], "b"),
        ("GET", "/opera", vec![("Host", "example.com")], "404"),
        ("GET", "/off", vec![], "404"),
        ("POST", "/m", vec![], "a"),
        ("GET", "/m", vec![], "404"),
    ];
    for (method, target, headers, want) in table {
        let mut c = Client::connect(hearth.addr());
        c.send(&request(method, target, &headers, b""));
        let resp = c.read_response();
        let got = if resp.status == 404 {
            "404".to_string()
        } else {
            assert_eq!(resp.status, 200, "{method} {target} {headers:?}");
            resp.text()
        };
        assert_eq!(got, want, "{method} {target} {headers:?}");
    }
    // Requests refused with 404 never reached an upstream.
    let served = a.request_count() + b.request_count();
    assert_eq!(served, 13);
}

#[test]
fn the_issue_tenant_example_alone() {
    let up = MockUpstream::echo_target();
    let toml = format!(
        r#"[[listen]]
addr = "127.0.0.1:0"

[upstreams.pki]
nodes = {{ "{}" = 100 }}
pass_host = "node"

[[routes]]
id = "00000000000000000956"
uris = ["/pki/*"]
status = 1
priority = 0
vars = [["http_X-SW-Authorization-TenantCode", "==", "tenant"],
        ["http_X-SW-Authorization-AppCode", "IN", ["", "testapp"]]]
upstream = "pki"
"#,
        up.addr()
    );
    let hearth = Hearth::start(&toml);
    let ask = |code: &str| {
        let mut c = Client::connect(hearth.addr());
        c.send(&request(
            "GET",
            "/pki/x",
            &[
                ("X-SW-Authorization-TenantCode", "tenant"),
                ("X-SW-Authorization-AppCode", code),
            ],
            b"",
        ));
        c.read_response()
    };
    let ok = ask("testapp");
    assert_eq!((ok.status, ok.text().as_str()), (200, "/pki/x"));
    assert_eq!(ask("other").status, 404);
    assert_eq!(up.request_count(), 1);
}

#[test]
fn matching_does_not_allocate() {
    let cond = |v: &str, op: &str, x: Operand| parse_cond(v, op, x).unwrap();
    let s = |x: &str| Operand::Str(x.into());
    let route = |uris: &[&str], hosts: &[&str], vars| Route {
        id: String::new(),
        uris: uris.iter().map(|u| uri_pattern(u).unwrap()).collect(),
        hosts: hosts.iter().map(|h| route_host(h).unwrap()).collect(),
        methods: vec!["GET".into()],
        priority: 0,
        enabled: true,
        vars,
        upstream: 0,
        websocket: None,
        rewrite: None,
        queue: Default::default(),
    };
    let mut routes = vec![
        route(
            &["/a/*"],
            &["*.example.com"],
            vec![cond("remote_addr", "==", s("10.1.2.3"))],
        ),
        route(
            &["/a/b"],
            &["x.example.com"],
            vec![cond("arg_id", "~~", s("^[0-9]+$"))],
        ),
        route(&["/a*"], &[], vec![cond("cookie_k", "~*", s("^V"))]),
        route(
            &["/a/*"],
            &[],
            vec![cond("http_x_tenant", "IN", Operand::List(vec!["t".into()]))],
        ),
        route(
            &["/a/*"],
            &[],
            vec![
                cond("host", "HAS", s("y.test")),
                cond("uri", "!<", Operand::Num(1.0)),
            ],
        ),
        route(&["/*"], &[], vec![]),
    ];
    routes[4].priority = 2;
    let router = Router::new(&routes);
    let reqs = [
        Held::new("GET", "/a/b?id=12", &[("Host", "X.Example.com:80")]),
        Held::new("GET", "/a/c", &[("Host", "z.example.com")]),
        Held::new(
            "GET",
            "/abc",
            &[("Host", "y.test"), ("Cookie", "j=1; k=v2")],
        ),
        Held::new("GET", "/a/b", &[("Host", "z.test"), ("X-Tenant", "t")]),
        Held::new("GET", "/a/b", &[("Host", "y.test")]),
        Held::new("GET", "http://q.test/zz", &[("Host", "y.test")]),
        Held::new("POST", "/a/b", &[("Host", "y.test")]),
    ];
    let views: Vec<Request<'_>> = reqs
        .iter()
        .map(|r| r.view(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))))
        .collect();
    let mut hits = vec![0; routes.len()];
    // Warm up: the regex crate creates its per-thread search scratch on first use.
    for v in &views {
        let _ = router.find(v);
    }
    let before = allocations();
    for _ in 0..100 {
        for v in &views {
            if let Some(m) = router.find(v) {
                hits[m.route] += 1;
            }
        }
    }
    let during = allocations() - before;
    assert_eq!(during, 0, "Router::find allocated {during} times");
    assert!(
        hits.iter().all(|&h| h > 0),
        "every route was reached: {hits:?}"
    );
}
