//! The event loops: one `Core` per worker thread, control messages between them, and process
//! start and stop (`Server`).
//!
//! # Who owns what
//! - `core.rs`: the loop (`Core::run`), event dispatch, timers, and the client's phases
//!   (`Phase::Head`, `Exchange`, `Tunnel`, `Closing`, `Lingering`).
//! - `exchange.rs`: one request in flight (`Exchange`) and where it stands with the upstream
//!   side (`Leg`: `Unattached`, `Queued`, `Connecting`, `Attached`, `Draining`); `relay.rs`: the
//!   core's steps that move it. `deadline.rs`: its timeouts as plain values.
//! - `upstream::Upstreams` (outside this module): the upstream connections' books and every pool
//!   decision, on a clock it is handed. `upconn.rs` carries those decisions out on sockets
//!   (and runs the pools' once-a-second housekeeping, `pool_tick`); `handover.rs`: a core's part
//!   in a binary upgrade, giving idle connections away or waiting for them;
//!   `io.rs` is every read and write, plain or TLS, of either side (`End`, `UpIo`), and the
//!   core's splice pipe (`SplicePipe`); `splice.rs`: when a large plain body skips the buffers
//!   and moves through that pipe instead.
//! - `generation.rs`: one configuration generation (`Shared`); `process.rs`: what outlives
//!   generations (the pool registry that numbers nodes, the control peers); `control.rs`: the
//!   messages between cores; `server.rs`: start, signals, reload and stop.
//!
//! # The life of a request
//! A client connection (`core::Client`, `ClientId`) starts in `Phase::Head` (after a TLS
//! handshake, on a TLS listener: rustls is driven by the same readiness events, and every read and
//! write of either side goes through one `io::End` that is plain or TLS), reading into a buffer
//! checked out from the core's pool until `http::head::parse_request` finds a whole head. The
//! core's copy of the router picks a route (host, uri, method, `vars`), hence an upstream; the
//! upstream's balancer picks a node (`NodeId`) among those active and passive health allow; the
//! head is rewritten into the exchange's `to_up` buffer (with the route's `proxy-rewrite`, when it
//! has one, applied as it is written) and the phase becomes `Phase::Exchange` (the exchange
//! itself is boxed, from a per-core free list, so each step moves a pointer).
//!
//! `Core::start_exchange` asks the upstream side for a connection: `Upstreams::pop_idle` hands
//! out the node's most recently used idle connection (`Leg::Attached`, after a check that it is
//! still quiet); otherwise `Upstreams::reserve` takes a place in the node's process-wide caps as
//! a `Reservation`, and the core connects (`Leg::Connecting`; for https the connection stays
//! connecting until its handshake, resumed from the pool key's session cache when it can, is
//! done); with the caps reached, the request waits in the node's queue (`Leg::Queued`). A connect
//! failure, connect timeout or failure before the request was sent moves the request to another
//! node while `retries` allow. Request body bytes stream from the client buffer into `to_up` and
//! on to the upstream; response bytes stream from `from_up` through the response framing into the
//! client's `wbuf` (`Resp` says how far the answer is). Bytes sent to the upstream stay in
//! `to_up` until the first response byte arrives, so a request that a reused connection drops
//! before answering can be replayed once on a fresh connection. An answer complete before its
//! request body lets the rest of the body go on, within bounds (`Leg::Draining`), so that the
//! connection can be kept.
//!
//! When both bodies are complete the core gives the connection back: `Upstreams::release`
//! decides, on the upstream's framing and hints and the pool's rules, whether it goes to a
//! waiter of this core (`Release::ToWaiter`), to another core whose requests wait for the node
//! (`Release::HandOver`, over the control channel), into the idle list with a deadline
//! (`Release::Pooled`), or closes, and why (`Release::Close`); the core performs it. The client
//! returns to `Phase::Head`, where pipelined bytes may already wait. A 101 turns the exchange into
//! `Phase::Tunnel`; answers hearth makes itself go out through `Phase::Closing` when the
//! connection cannot continue. Each answer hearth makes itself carries a `cause::Cause`, which
//! the log line, the access log and `hearth_failures_total` name.
//!
//! # Time and events
//! The time is read in one place (`clock::Clock`), once per pass of the loop, and handed to every
//! decision as `now`. Timers are armed lazily in the core's wheel: an entry already due at or
//! before a connection's new deadline is kept, and one that fires early re-arms at the current
//! deadline. A client's deadline is the earliest of its exchange's clocks
//! (`deadline::Clocks::deadline`), and when it comes, `Clocks::due` says which one it was; an
//! upstream connection's is its connect or idle deadline, which `Upstreams::expire` judges.
//!
//! Each pass of a core's loop takes one batch of events from `epoll`, records the readiness each
//! reports for its socket (`Core::note`), and only then drives the connections in event order
//! (`Core::dispatch`): a pooled connection whose EOF is in the batch is known closed before any
//! request in the same batch can take it.

pub mod advisor;
pub mod control;
pub mod core;
mod deadline;
mod exchange;
pub mod generation;
mod handover;
mod io;
pub mod process;
mod relay;
pub mod server;
mod splice;
pub mod upconn;

pub use server::Server;
