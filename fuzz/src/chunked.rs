//! `chunked`: `ChunkedDecoder` on arbitrary input, fed whole, split at input-chosen points and
//! one byte at a time.
//!
//! Input: `[bounds, count, count & 15 u16 split points] ++ body bytes`. `bounds` picks the
//! extension and trailer bounds from small tables so that both are reached by short inputs.
//!
//! What must hold: the three feedings agree on payload, bytes consumed, whether the body ended
//! and the error; payload runs lie in order within the consumed bytes of each call; an unfinished
//! body takes all of its input; a finished one stays finished and a failed one stays failed; the
//! payload of a finished body matches an independent reading of the consumed bytes, and framing
//! it again with `write_chunk_head` and `LAST_CHUNK` decodes to the same payload.

use hearth::http::body::{
    write_chunk_head, BodyError, ChunkedDecoder, LAST_CHUNK, MAX_EXT_BYTES, MAX_TRAILER_BYTES,
};

use crate::{pieces, read_boundaries, Input};

const EXT_BOUNDS: [usize; 4] = [MAX_EXT_BYTES, 0, 3, 8];
const TRAILER_BOUNDS: [usize; 4] = [MAX_TRAILER_BYTES, 0, 4, 9];

/// Payload, bytes consumed in total, and whether the body ended; or the error.
pub(crate) type Outcome = Result<(Vec<u8>, usize, bool), BodyError>;

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let bounds = input.byte();
    let max_ext = EXT_BOUNDS[usize::from(bounds & 3)];
    let max_trailer = TRAILER_BOUNDS[usize::from((bounds >> 2) & 3)];
    let (points, _) = input.splits();
    let body = input.rest();

    let whole = feed(&[body], max_ext, max_trailer);
    let cuts = read_boundaries(&points, body.len());
    let split = feed(&pieces(body, &cuts), max_ext, max_trailer);
    assert_eq!(split, whole, "split at {cuts:?}");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(
        feed(&bytes, max_ext, max_trailer),
        whole,
        "one byte at a time"
    );

    if let Ok((payload, consumed, true)) = &whole {
        assert_eq!(
            reference_payload(&body[..*consumed]).as_ref(),
            Some(payload),
            "payload disagrees with a plain reading of {:?}",
            String::from_utf8_lossy(&body[..*consumed])
        );
        let mut again = Vec::new();
        if !payload.is_empty() {
            write_chunk_head(payload.len() as u64, &mut again);
            again.extend_from_slice(payload);
            again.extend_from_slice(b"\r\n");
        }
        again.extend_from_slice(LAST_CHUNK);
        let reframed = feed(&[&again], MAX_EXT_BYTES, MAX_TRAILER_BYTES);
        assert_eq!(reframed, Ok((payload.clone(), again.len(), true)));
    }
}

/// Feeds `pieces` in order as a connection would, checking each call's contract.
pub(crate) fn feed(pieces: &[&[u8]], max_ext: usize, max_trailer: usize) -> Outcome {
    let mut decoder = ChunkedDecoder::new(max_ext, max_trailer);
    let mut payload = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let mut last_end = 0;
        let result = decoder.decode(piece, &mut |start, end| {
            assert!(last_end <= start && start <= end && end <= piece.len());
            last_end = end;
            payload.extend_from_slice(&piece[start..end]);
        });
        let d = match result {
            Ok(d) => d,
            Err(e) => {
                let again = decoder.decode(b"0\r\n\r\n", &mut |_, _| panic!("data after failing"));
                assert_eq!(again, Err(e), "a failed decoder stays failed");
                return Err(e);
            }
        };
        assert!(last_end <= d.consumed && d.consumed <= piece.len());
        assert_eq!(decoder.payload_len(), payload.len() as u64);
        consumed += d.consumed;
        if d.done {
            assert!(decoder.in_trailers());
            let rest = &piece[d.consumed..];
            let after = decoder.decode(rest, &mut |_, _| panic!("data after the end"));
            assert_eq!(after.map(|a| (a.consumed, a.done)), Ok((0, true)));
            return Ok((payload, consumed, true));
        }
        assert_eq!(
            d.consumed,
            piece.len(),
            "an unfinished body takes all its input"
        );
    }
    Ok((payload, consumed, false))
}

/// The payload of a complete chunked body (RFC 9112 §7.1), read loosely and without hearth's
/// code: hex size, anything up to CRLF, data, CRLF; after the last chunk, lines up to an empty
/// one. None when the bytes do not end exactly at the end of the trailer section.
pub(crate) fn reference_payload(body: &[u8]) -> Option<Vec<u8>> {
    let mut payload = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find_crlf(&body[at..])?;
        let line = &body[at..line_end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            loop {
                let end = at + find_crlf(&body[at..])?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return (at == body.len()).then_some(payload);
                }
            }
        }
        let size = usize::try_from(size).ok()?;
        let data = body.get(at..at.checked_add(size)?)?;
        payload.extend_from_slice(data);
        at += size;
        if body.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

fn find_crlf(s: &[u8]) -> Option<usize> {
    s.windows(2).position(|w| w == b"\r\n")
}
