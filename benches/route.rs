//! Cost of one route match with 10 and with 10,000 routes, the index against a scan of every
//! route.
//!
//! The routes mix what APISIX configurations hold: a quarter without hosts, exact hosts,
//! wildcard hosts, exact uris and `/x/*` and `/x*` prefixes, a few priorities, and a `vars`
//! condition on every fifth route (header equality) and every seventh (a query argument `IN` a
//! list). The requests each aim at a different route spread over the table, plus one that only
//! the final catch-all serves, so a match walks the host buckets and falls through. Each
//! iteration routes every request once; criterion's throughput figure is matches per second.
//!
//! On the shared 2-core dev machine (`cargo bench --bench route -- --warm-up-time 1
//! --measurement-time 2`): 10 routes about 118 ns per match (index, 8 requests in 944 ns) and
//! 87 ns (scan); 10,000 routes about 196 ns (index, 9 requests in 1.77 us) and 89 us (scan).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

#[path = "../tests/common/held.rs"]
mod held;
use held::Held;

/// The client address every request comes from.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hearth::config::{route_host, uri_pattern, Route};
use hearth::route::{parse_cond, Operand, Router};

fn table(n: usize) -> Vec<Route> {
    let mut routes: Vec<Route> = (0..n - 1)
        .map(|i| {
            let hosts = match i % 4 {
                0 => vec![],
                1 => vec![format!("svc{}.example.com", i % 97)],
                2 => vec![format!("*.t{}.example.com", i % 31)],
                _ => vec![format!("api{i}.test")],
            };
            let uri = match i % 3 {
                0 => format!("/api/v1/res{i}"),
                1 => format!("/api/v{}/res{i}/*", i % 7),
                _ => format!("/static{i}*"),
            };
            let mut vars = Vec::new();
            if i % 5 == 0 {
                vars.push(
                    parse_cond("http_x_tenant", "==", Operand::Str(format!("t{i}"))).unwrap(),
                );
            }
            if i % 7 == 0 {
                let list = Operand::List(vec!["".into(), format!("a{i}")]);
                vars.push(parse_cond("arg_app", "IN", list).unwrap());
            }
            Route {
                id: i.to_string(),
                uris: vec![uri_pattern(&uri).unwrap()],
                hosts: hosts.iter().map(|h| route_host(h).unwrap()).collect(),
                methods: if i % 6 == 0 {
                    vec!["GET".into()]
                } else {
                    vec![]
                },
                priority: (i % 20 == 0) as i64,
                enabled: true,
                vars,
                upstream: i % 3,
                websocket: None,
                rewrite: None,
                queue: Default::default(),
            }
        })
        .collect();
    routes.push(Route {
        id: "catch-all".into(),
        uris: vec![uri_pattern("/*").unwrap()],
        hosts: vec![],
        methods: vec![],
        priority: -1,
        enabled: true,
        vars: vec![],
        upstream: 0,
        websocket: None,
        rewrite: None,
        queue: Default::default(),
    });
    routes
}

/// A request held in one buffer, as the core holds it.
/// Requests for routes spread over the table (each satisfying its route's conditions), and one
/// that only the catch-all serves.
fn requests(n: usize) -> Vec<Held> {
    let mut out = Vec::new();
    for k in 0..8 {
        let i = (n - 1) * k / 8 + k % 4;
        if i >= n - 1 {
            continue;
        }
        let host = match i % 4 {
            0 => "www.example.org".to_string(),
            1 => format!("svc{}.example.com:8080", i % 97),
            2 => format!("edge.t{}.example.com", i % 31),
            _ => format!("api{i}.test"),
        };
        let path = match i % 3 {
            0 => format!("/api/v1/res{i}"),
            1 => format!("/api/v{}/res{i}/items/42", i % 7),
            _ => format!("/static{i}/app.js"),
        };
        let target = format!("{path}?page=2&app=a{i}");
        let tenant = format!("t{i}");
        let held = Held::new(
            "GET",
            &target,
            &[
                ("Host", &host),
                ("User-Agent", "bench"),
                ("X-Tenant", &tenant),
                ("Accept", "*/*"),
            ],
        );
        out.push(held);
    }
    out.push(Held::new(
        "GET",
        "/nowhere/at/all?x=1",
        &[("Host", "unknown.example.net")],
    ));
    out
}

fn find(c: &mut Criterion) {
    for n in [10, 10_000] {
        let routes = table(n);
        let router = Router::new(&routes);
        let reqs = requests(n);
        // Each request must reach the route it aims at (or the catch-all), or the bench
        // would measure misses.
        for r in &reqs {
            let view = r.view(CLIENT);
            let got = router.find(&view);
            assert!(got.is_some());
            assert_eq!(got, Router::find_linear(&routes, &view));
        }
        let mut group = c.benchmark_group(format!("route/{n}"));
        group.throughput(Throughput::Elements(reqs.len() as u64));
        group.bench_function("index", |b| {
            b.iter(|| {
                for r in &reqs {
                    black_box(router.find(black_box(&r.view(CLIENT))));
                }
            })
        });
        group.bench_function("linear", |b| {
            b.iter(|| {
                for r in &reqs {
                    black_box(Router::find_linear(&routes, black_box(&r.view(CLIENT))));
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, find);
criterion_main!(benches);
