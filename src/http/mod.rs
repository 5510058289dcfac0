//! HTTP/1.1 framing, sans-io (RFC 9112, RFC 9110): request and response heads parsed into
//! offsets into the caller's buffer, body framing, hop-by-hop rewriting, canned answers, and one
//! whole-message reader on top of them for the blocking side (admin listener, etcd, health).

pub mod answer;
pub mod body;
mod field;
pub mod head;
mod lex;
mod limits;
pub mod read;
pub mod rewrite;
