//! hearth: a low-latency HTTP/1.1 reverse proxy whose upstream keep-alive pool is done right.
//!
//! The crate is laid out leaves first: references between modules form no loop, so each module
//! can be read knowing only those below it (`tests/layout.rs` checks this, and that no file under
//! `src/` passes 2,000 lines). The sans-io leaves (`lru`, `timer`, `http`, `vars`, `route`,
//! `balance`, `upstream::pool`) never touch a socket and take `now` as an argument, so they are
//! tested with a virtual clock. `config` sits above what it validates with (`route`, `balance`, `tls`, ...) and
//! re-exports their types. `runtime` owns the sockets: one `mio` event loop per core, each with
//! its own listener, connections, buffers, timer wheel and upstream pool. Cores share only the
//! immutable configuration and, for per-node connection caps, a few counters touched when a
//! connection opens or closes, never per request. `app` starts it all; `main` only parses the
//! arguments and sets up logging. `upgrade` hands a running hearth's listening sockets and idle
//! upstream connections to a new one (binary upgrade, SIGUSR2 or `hearth --upgrade`).

pub mod accesslog;
pub mod admin;
pub mod admin_state;
pub mod apisix;
pub mod app;
pub mod balance;
pub mod buf;
pub mod cause;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_center;
pub mod dynamic;
pub mod etcd;
pub mod health;
pub mod http;
pub mod id;
pub mod lru;
pub mod metrics;
pub mod probe;
pub mod proxy_rewrite;
pub mod resolve;
pub mod route;
pub mod runtime;
pub mod slab;
pub mod sys;
pub mod timer;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod vars;

#[cfg(test)]
mod testutil;
