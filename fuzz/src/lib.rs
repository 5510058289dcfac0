//! The checks behind hearth's fuzz targets, one module per target.
//!
//! Each `check(data)` takes the fuzzer's bytes, reads a few control bytes from the front (which
//! limits to use, where to split the input), runs hearth's sans-io HTTP code on the rest and
//! panics when an invariant breaks. The targets under `fuzz_targets/` are one line each, so the
//! same checks run under libFuzzer and from this crate's unit tests, which replay
//! `corpus-seed/` on a stable toolchain.
//!
//! The checks compare hearth against itself in ways that must agree (split against unsplit input,
//! a rewritten head parsed again against the head it came from) and against small independent
//! oracles written here, never against a copy of the code under test.

#![forbid(unsafe_code)]

pub mod chunked;
pub mod client_codec;
pub mod request_head;
pub mod response;

use hearth::http::body::{MAX_EXT_BYTES, MAX_TRAILER_BYTES};
use hearth::http::head::{Header, Limits, Span, MAX_HEADERS_CEILING, MAX_HEAD_BYTES};

/// A target's check: panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every target by the name of its directory under `corpus-seed/` and `fuzz_targets/`.
pub const TARGETS: [(&str, Check); 4] = [
    ("request_head", request_head::check),
    ("chunked", chunked::check),
    ("response", response::check),
    ("client_codec", client_codec::check),
];

/// Control bytes read from the front of a fuzz input. Reading past the end yields zeros, so every
/// input is valid and a short one means "defaults".
pub(crate) struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// A count byte (low nibble: up to 15 points) and that many u16 offsets. The caller reduces
    /// them modulo the payload length.
    pub(crate) fn splits(&mut self) -> (Vec<usize>, u8) {
        let count = self.byte();
        let points = (0..count & 0x0f).map(|_| usize::from(self.u16())).collect();
        (points, count >> 4)
    }

    /// Everything after the control bytes.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// Split points reduced into `0..=len`, sorted, as read boundaries.
pub(crate) fn read_boundaries(points: &[usize], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (len + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// `data` cut at `cuts` (sorted, each within `0..=data.len()`) into consecutive pieces.
pub(crate) fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &c in cuts {
        out.push(&data[from..c]);
        from = c;
    }
    out.push(&data[from..]);
    out
}

/// Room per step in a bounded sink (hearth's `to_up` or the client's write buffer): index 0 is
/// unbounded, the rest are small enough to cut bodies into many calls.
pub(crate) const ROOMS: [usize; 8] = [usize::MAX, 1, 2, 3, 5, 16, 100, 4096];

/// The core's smallest buffer (`BUF_BYTES` in `runtime/core.rs`): the pool's buffers, `to_up`
/// and the client's write buffer among them, are `max_head_bytes.max(BUF_BYTES)` bytes.
pub(crate) const BUF_BYTES: usize = 32_768;

/// The core's `reframe_window`, as `Core::pump_request` and `Core::relay_response` use it: how
/// many input bytes `body::reframe` may take when `room` bytes of buffer are free, so that what
/// it writes fits (a lenient decoder may write up to half as much again as it reads).
pub(crate) fn reframe_window(room: usize, lenient: bool) -> usize {
    let room = room.saturating_sub(hearth::http::body::REFRAME_SLACK);
    if lenient {
        room / 3 * 2
    } else {
        room
    }
}

/// Head limits the targets choose among: the defaults hearth runs with, small ones that put
/// every limit within reach of a short input, and the extremes; the extremes and the last entry
/// (the defaults with `client.accept_bare_lf`) take a lone LF as a line end in request heads.
pub(crate) const LIMITS: [Limits; 7] = [
    Limits {
        max_head_bytes: MAX_HEAD_BYTES,
        max_headers: 100,
        max_uri_bytes: 8_192,
        max_ext_bytes: MAX_EXT_BYTES,
        max_trailer_bytes: MAX_TRAILER_BYTES,
        accept_bare_lf: false,
    },
    Limits {
        max_head_bytes: 64,
        max_headers: 3,
        max_uri_bytes: 8,
        max_ext_bytes: 4,
        max_trailer_bytes: 16,
        accept_bare_lf: false,
    },
    Limits {
        max_head_bytes: usize::MAX,
        max_headers: usize::MAX,
        max_uri_bytes: usize::MAX,
        max_ext_bytes: usize::MAX,
        max_trailer_bytes: usize::MAX,
        accept_bare_lf: true,
    },
    Limits {
        max_head_bytes: 0,
        max_headers: 0,
        max_uri_bytes: 0,
        max_ext_bytes: 0,
        max_trailer_bytes: 0,
        accept_bare_lf: false,
    },
    Limits {
        max_head_bytes: 40,
        max_headers: 100,
        max_uri_bytes: 8_192,
        max_ext_bytes: MAX_EXT_BYTES,
        max_trailer_bytes: MAX_TRAILER_BYTES,
        accept_bare_lf: false,
    },
    Limits {
        max_head_bytes: MAX_HEAD_BYTES,
        max_headers: 1,
        max_uri_bytes: 1,
        max_ext_bytes: 1,
        max_trailer_bytes: 1,
        accept_bare_lf: false,
    },
    Limits {
        max_head_bytes: MAX_HEAD_BYTES,
        max_headers: 100,
        max_uri_bytes: 8_192,
        max_ext_bytes: MAX_EXT_BYTES,
        max_trailer_bytes: MAX_TRAILER_BYTES,
        accept_bare_lf: true,
    },
];

/// Limits looser than every entry of [`LIMITS`] in every respect, the bare-LF opt-in included:
/// whatever a [`LIMITS`] entry accepts, these must accept the same way, and whatever it is still
/// waiting on, these must wait on too.
pub(crate) const LOOSE: Limits = Limits {
    max_head_bytes: usize::MAX,
    max_headers: MAX_HEADERS_CEILING,
    max_uri_bytes: usize::MAX,
    max_ext_bytes: usize::MAX,
    max_trailer_bytes: usize::MAX,
    accept_bare_lf: true,
};

/// [`LOOSE`] without the bare-LF opt-in, for parsing hearth's own output again: what hearth sends
/// on must parse without any leniency, since the next hop may have none.
pub(crate) const OWN: Limits = Limits {
    accept_bare_lf: false,
    ..LOOSE
};

/// Whether `bytes` hold an LF that no CR comes right before.
pub(crate) fn has_lone_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// What hearth writes for a peer ends every line in CRLF, whatever it read (RFC 9112 §2.2 lets a
/// recipient take a lone LF, never a sender send one).
pub(crate) fn assert_no_lone_lf(out: &[u8], what: &str) {
    assert!(
        !has_lone_lf(out),
        "{what} has a lone LF: {:?}",
        String::from_utf8_lossy(out)
    );
}

pub(crate) fn assert_span_within(span: Span, head_len: usize, what: &str) {
    assert!(
        span.start <= span.end && span.end as usize <= head_len,
        "{what} span {span:?} outside the head of {head_len} bytes"
    );
}

/// A field line copied out of its buffer, for comparing heads parsed from different buffers.
pub(crate) type Field = (Vec<u8>, Vec<u8>);

pub(crate) fn fields(src: &[u8], headers: &[Header]) -> Vec<Field> {
    headers
        .iter()
        .map(|h| (h.name.of(src).to_vec(), h.value.of(src).to_vec()))
        .collect()
}

pub(crate) fn named<'a>(fields: &'a [Field], name: &'a str) -> impl Iterator<Item = &'a Field> {
    fields
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// Every field name hearth interprets or writes in a head, lowercase.
pub(crate) const KNOWN: [&str; 15] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "expect",
    "idempotency-key",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Whether `name` spells a [`KNOWN`] name with `_` for one or more of its `-`, as CGI-style peers
/// read it (`X_Forwarded_For`, `x_forwarded-proto`).
pub(crate) fn is_alias(name: &[u8]) -> bool {
    name.contains(&b'_')
        && KNOWN.iter().any(|k| {
            k.len() == name.len()
                && name
                    .iter()
                    .zip(k.bytes())
                    .all(|(&a, c)| a.to_ascii_lowercase() == c || (a == b'_' && c == b'-'))
        })
}

/// Whether `name` is a [`KNOWN`] name in any case, or an alias of one.
pub(crate) fn is_known_or_alias(name: &[u8]) -> bool {
    is_one_of(name, &KNOWN) || is_alias(name)
}

pub(crate) fn is_one_of(name: &[u8], names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// The elements of a comma-separated field value, without surrounding whitespace.
pub(crate) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|e| e.trim_ascii())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    /// Every committed seed passes its target's checks, so the checks and the seeds stay in step
    /// and a stable `cargo test` exercises the checks without libFuzzer.
    #[test]
    fn seeds_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus-seed");
        for (name, check) in crate::TARGETS {
            let dir = root.join(name);
            let mut seen = 0;
            for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = entry.expect("directory entry").path();
                let data = fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                check(&data);
                seen += 1;
            }
            assert!(seen > 0, "no seeds for {name}");
        }
    }

    #[test]
    fn short_inputs_do_not_panic() {
        for len in 0..64 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            for (_, check) in crate::TARGETS {
                check(&data);
            }
        }
    }
}
