//! Node names followed in DNS. This commit brings the leaves: `dns`, the wire format and
//! [`dns::Lookup`], the sans-io machine of one lookup over the configured servers; `schedule`,
//! when each name is asked again and what a result does to its last good addresses, on a
//! virtual clock.

pub mod dns;
pub mod schedule;
