//! The event loops: one `Core` per worker thread, control messages between them, and process
//! start and stop (`Server`).
//!
//! # The life of a request
//! A client connection (`core::Client`) starts in `Phase::Head` (after a TLS handshake, on a TLS
//! listener: rustls is driven by the same readiness events, and every read and write of either
//! side goes through one `End` that is plain or TLS), reading into a buffer checked out from the
//! core's pool until `http::head::parse_request` finds a whole head. The core's copy of the router
//! picks a route (host, uri, method, `vars`), hence an upstream; the upstream's balancer picks a
//! node among those active and passive health allow; the head is rewritten into the exchange's
//! `to_up` buffer and the phase becomes `Phase::Exchange` (the exchange itself is boxed, from a
//! per-core free list, so each step moves a pointer). The exchange takes the most recently used
//! idle connection to that node from the core's pool, or connects (for https, the connection
//! stays connecting until its handshake, resumed from the pool key's session cache when it can,
//! is done), or queues when the node's caps are reached. A connect failure, connect timeout or
//! failure before the request was sent moves the request to another node while `retries` allow.
//! Request body bytes stream from the client buffer into `to_up` and on to the upstream; response
//! bytes stream from `from_up` through the response framing into the client's `wbuf`. Bytes sent
//! to the upstream stay in `to_up` until the first response byte arrives, so a request that a
//! reused connection drops before answering can be replayed once on a fresh connection. When both
//! bodies are complete the upstream connection goes back to the pool (or to the next waiter) and
//! the client returns to `Phase::Head`, where pipelined bytes may already wait. A 101 turns the
//! exchange into `Phase::Tunnel`; answers hearth makes itself go out through `Phase::Closing` when
//! the connection cannot continue.
//!
//! Each pass of a core's loop takes one batch of events from `epoll`, records the readiness each
//! reports for its socket (`Core::note`), and only then drives the connections in event order
//! (`Core::dispatch`): a pooled connection whose EOF is in the batch is known closed before any
//! request in the same batch can take it.

pub mod control;
pub mod core;
mod deadline;
mod exchange;
pub mod generation;
mod io;
pub mod process;
mod relay;
pub mod server;
pub mod upconn;

pub use server::Server;
