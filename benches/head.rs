//! The per-request cost of the framing layer: parse a head and write its rewritten form, for a
//! typical browser request and a small upstream response. Buffers are reused across iterations as
//! a core reuses them across requests, so a steady-state allocation would show up as time here.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hearth::http::head::{parse_request, parse_response, Limits, Version};
use hearth::http::rewrite::{request_head, response_head, ClientSide, Forward};

/// About 400 bytes, shaped like what a browser sends for a page.
const REQUEST: &[u8] = b"GET /catalog/items?page=2&sort=price HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
Cookie: session=4f9c2a7d1e; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 14 Apr 2026 10:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 42\r\n\
Cache-Control: no-cache\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5, max=100\r\n\
\r\n";

fn framing(c: &mut Criterion) {
    let limits = Limits::default();
    let fwd = Forward {
        client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        proto: "https",
        host: None,
        upgrades: hearth::http::rewrite::Upgrades::NONE,
    };
    let client = ClientSide {
        version: Version::Http11,
        keep_alive: true,
        dechunk: false,
        head_request: false,
    };
    let mut headers = Vec::with_capacity(limits.max_headers);
    let mut out = Vec::with_capacity(2048);

    c.bench_function("parse_request + request_head (400 B)", |b| {
        b.iter(|| {
            // The request is well-formed and complete by construction.
            let head = parse_request(black_box(REQUEST), &limits, &mut headers)
                .unwrap()
                .unwrap();
            out.clear();
            request_head(REQUEST, &head, &headers, &fwd, &mut out);
            black_box(out.len())
        })
    });

    c.bench_function("parse_response + response_head (small)", |b| {
        b.iter(|| {
            // The response is well-formed and complete by construction.
            let head = parse_response(black_box(RESPONSE), &limits, false, &mut headers)
                .unwrap()
                .unwrap();
            out.clear();
            response_head(RESPONSE, &head, &headers, &client, &mut out);
            black_box(out.len())
        })
    });

    c.bench_function("parse_request only (400 B)", |b| {
        b.iter(|| {
            parse_request(black_box(REQUEST), &limits, &mut headers)
                .unwrap()
                .unwrap()
                .head_len
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = framing
}
criterion_main!(benches);
