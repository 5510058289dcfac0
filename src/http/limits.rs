//! How much one peer may make hearth read: [`Limits`] bounds a head
//! ([`parse_request`](super::head::parse_request), [`parse_response`](super::head::parse_response))
//! and a chunked body ([`ChunkedDecoder::from_limits`](super::body::ChunkedDecoder::from_limits)),
//! and the constants are the defaults a caller does not configure.
//!
//! Invariants: every default is a finite bound, and [`MAX_HEADERS_CEILING`] caps whatever a
//! configuration asks for field lines, so no setting makes one head cost unbounded parsing.

/// Default bound on a head, request line and blank line included.
pub const MAX_HEAD_BYTES: usize = 16_384;
/// Default bound on the number of field lines in a head.
pub const MAX_HEADERS: usize = 100;
/// Default bound on the request-target.
pub const MAX_URI_BYTES: usize = 8_192;
/// Hard ceiling on `Limits::max_headers`, so that a configuration cannot make one head cost an
/// unbounded amount of parsing.
pub const MAX_HEADERS_CEILING: usize = 256;
/// Default bound on the extension bytes of one chunk line.
pub const MAX_EXT_BYTES: usize = 4_096;
/// Default bound on the trailer section.
pub const MAX_TRAILER_BYTES: usize = 16_384;

/// The largest body length hearth accepts: 2^63 - 1. Many servers read a length into a signed
/// 64-bit integer, where anything larger wraps negative or saturates, so hearth and such a peer
/// would disagree on where the body ends; no real body comes near it.
pub const MAX_BODY_LENGTH: u64 = i64::MAX as u64;

/// Bounds on what one peer may make hearth read, for heads and chunked bodies (see the module
/// docs). Callers set the fields they configure and take the rest from `Default`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Head bytes, request or status line and blank line included (431 for requests).
    pub max_head_bytes: usize,
    /// Field lines in a head (431 for requests). Clamped to [`MAX_HEADERS_CEILING`].
    pub max_headers: usize,
    /// Request-target bytes (414).
    pub max_uri_bytes: usize,
    /// Extension bytes on one chunk-size line (RFC 9112 §7.1.1).
    pub max_ext_bytes: usize,
    /// Bytes of a chunked body's trailer section (RFC 9112 §7.1.2).
    pub max_trailer_bytes: usize,
    /// Take a lone LF as a line end in request heads (RFC 9112 §2.2 allows it; off by default,
    /// see the [`head`](super::head) docs). Response heads always may.
    pub accept_bare_lf: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
            max_uri_bytes: MAX_URI_BYTES,
            max_ext_bytes: MAX_EXT_BYTES,
            max_trailer_bytes: MAX_TRAILER_BYTES,
            accept_bare_lf: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_the_constants() {
        // The core builds `Limits { max_head_bytes, ..Limits::default() }`: every other field
        // must come out at its documented default.
        let l = Limits {
            max_head_bytes: 1,
            ..Limits::default()
        };
        assert_eq!(
            (
                l.max_headers,
                l.max_uri_bytes,
                l.max_ext_bytes,
                l.max_trailer_bytes
            ),
            (MAX_HEADERS, MAX_URI_BYTES, MAX_EXT_BYTES, MAX_TRAILER_BYTES)
        );
    }
}
