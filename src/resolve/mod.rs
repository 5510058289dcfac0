//! Node names followed in DNS: a node written as `"api.internal:8080"` stands for every A and
//! AAAA address the name has, each a node of the upstream with the written weight, and the name
//! is looked up again in the background, never on a core. A different set of addresses is
//! applied as a reload is: the new addresses get pools, idle connections to vanished ones close
//! at once and busy ones when released, and addresses that stay keep their pools (the pool key
//! is address, scheme and TLS identity, and the TLS identity takes its SNI name from the name as
//! written, so `pass_host = "node"` and SNI say `api.internal`, never the address).
//!
//! Two sources, as `resolver` says:
//! - `resolver = ["10.0.0.2:53", ...]`: hearth's own queries over UDP (TCP for truncated
//!   answers), the servers tried in order within `resolve.timeout` each, twice round; the
//!   answer's TTL, clamped to `[resolve.min, resolve.max]`, says when to ask again.
//! - no `resolver`: the system resolver (`getaddrinfo`), every `resolve.interval`.
//!
//! A lookup that finds no address (no answer, NXDOMAIN, no record) keeps the last good set, is
//! logged and counted (`hearth_resolve_failures_total`), and is retried after `resolve.min`
//! (with servers) or `resolve.interval` (without). At load (start, `--check`, reload, an admin
//! API or etcd change) a name that does not resolve is refused with the file, line and key (or
//! the JSON path), as nginx refuses a `server` name it cannot resolve at start: hearth does not
//! start serving an upstream it has no address for.
//!
//! The pieces, leaves first:
//! - `dns`: the wire format and [`dns::Lookup`], the sans-io machine of one lookup;
//! - `schedule`: when each name is asked again and what a result does, on a virtual clock;
//! - `names`: the names of a configuration, and the configuration readdressed;
//! - `net`: blocking lookups for the loader, and the sockets the thread shares with it;
//! - `thread`: the resolver thread ([`thread::start`], [`thread::Resolver`]).

pub mod dns;
pub mod names;
pub mod net;
pub mod schedule;
pub mod thread;
