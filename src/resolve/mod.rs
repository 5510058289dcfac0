//! Node names followed in DNS. The leaves so far: `dns`, the wire format and [`dns::Lookup`],
//! the sans-io machine of one lookup over the configured servers; `schedule`, when each name is
//! asked again and what a result does to its last good addresses, on a virtual clock; `net`,
//! blocking lookups for the configuration loader, and the sockets a resolver thread will share
//! with it.

pub mod dns;
pub mod net;
pub mod schedule;
