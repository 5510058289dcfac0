//! A request held in one buffer, as a core holds it, for driving `route::Router` directly (the
//! route tests and benches/route.rs, which includes this file by path). The first header, if
//! any, is the Host.

use std::net::IpAddr;

use hearth::http::head::{Header, Span};
use hearth::route::Request;

pub struct Held {
    src: Vec<u8>,
    method: Span,
    target: Span,
    headers: Vec<Header>,
}

impl Held {
    pub fn new(method: &str, target: &str, headers: &[(&str, &str)]) -> Held {
        let mut src = Vec::new();
        let mut push = |s: &str| {
            let start = src.len() as u32;
            src.extend_from_slice(s.as_bytes());
            Span {
                start,
                end: src.len() as u32,
            }
        };
        let (method, target) = (push(method), push(target));
        let headers = headers
            .iter()
            .map(|(n, v)| Header {
                name: push(n),
                value: push(v),
            })
            .collect();
        Held {
            src,
            method,
            target,
            headers,
        }
    }

    /// The request as routing reads it, from client address `remote`.
    pub fn view(&self, remote: IpAddr) -> Request<'_> {
        Request {
            method: self.method.of(&self.src),
            target: self.target.of(&self.src),
            host: self.headers.first().map(|h| h.value.of(&self.src)),
            remote,
            headers: &self.headers,
            src: &self.src,
        }
    }
}
