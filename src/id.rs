//! The ids that name things across modules: a client connection, an upstream connection, a node.
//!
//! Each is an index into its owner's table (the core's client slab, the upstream side's
//! connection slab, the process-wide pool registry) wrapped in its own type, so one cannot be
//! passed where another is meant. A slot is reused once its thing is gone, so anything that
//! outlives it (a timer entry, a queued waiter) re-checks what it finds there.

use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub usize);

        impl $name {
            /// The index in the owner's table.
            pub fn index(self) -> usize {
                self.0
            }
        }

        /// Tests compare ids with the plain indexes they expect.
        #[cfg(test)]
        impl PartialEq<usize> for $name {
            fn eq(&self, other: &usize) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// A client connection on one core (its slot in the core's client slab).
    ClientId
);
id!(
    /// An upstream connection on one core (its slot in `upstream::Upstreams`).
    UpId
);
id!(
    /// A pool: one node address and TLS identity, numbered once for the life of the process by
    /// the pool registry, so a node that stays across reloads keeps its id and its connections.
    NodeId
);
