//! Canned answers: complete HTTP/1.1 responses hearth sends when it answers a client itself.
//!
//! Each answer is a static byte string assembled at compile time, so sending one allocates nothing
//! and cannot fail halfway. The invariant kept is that every Content-Length matches its body; a
//! const assertion checks it when the crate compiles.

/// Two versions of one answer: keep-alive, and with `Connection: close`.
struct Answer {
    keep: &'static [u8],
    close: &'static [u8],
}

macro_rules! answer {
    ($status:literal, $reason:literal, $len:literal, $body:literal) => {
        answer!($status, $reason, "", $len, $body)
    };
    // `$extra`: further field lines, each ending in CRLF.
    ($status:literal, $reason:literal, $extra:literal, $len:literal, $body:literal) => {{
        const _: () = assert!($body.len() == $len, "Content-Length must match the body");
        Answer {
            keep: concat!(
                "HTTP/1.1 ",
                $status,
                " ",
                $reason,
                "\r\n",
                $extra,
                "Content-Type: text/plain\r\n",
                "Content-Length: ",
                $len,
                "\r\n",
                "\r\n",
                $body
            )
            .as_bytes(),
            close: concat!(
                "HTTP/1.1 ",
                $status,
                " ",
                $reason,
                "\r\n",
                $extra,
                "Content-Type: text/plain\r\n",
                "Content-Length: ",
                $len,
                "\r\n",
                "Connection: close\r\n",
                "\r\n",
                $body
            )
            .as_bytes(),
        }
    }};
}

const BAD_REQUEST: Answer = answer!(
    400,
    "Bad Request",
    42,
    "400 Bad Request: the request is malformed\n"
);
const NOT_FOUND: Answer = answer!(
    404,
    "Not Found",
    44,
    "404 Not Found: no route matches the request\n"
);
/// CONNECT asks for a tunnel, which a reverse proxy does not open (RFC 9110 §9.3.6); the methods
/// listed are those a route may carry.
const METHOD_NOT_ALLOWED: Answer = answer!(
    405,
    "Method Not Allowed",
    "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\n",
    56,
    "405 Method Not Allowed: the proxy opens no tunnels here\n"
);
const REQUEST_TIMEOUT: Answer = answer!(
    408,
    "Request Timeout",
    57,
    "408 Request Timeout: the request took too long to arrive\n"
);
const CONTENT_TOO_LARGE: Answer = answer!(
    413,
    "Content Too Large",
    58,
    "413 Content Too Large: the request body exceeds the limit\n"
);
const URI_TOO_LONG: Answer = answer!(
    414,
    "URI Too Long",
    55,
    "414 URI Too Long: the request target exceeds the limit\n"
);
const FIELDS_TOO_LARGE: Answer = answer!(
    431,
    "Request Header Fields Too Large",
    72,
    "431 Request Header Fields Too Large: the request head exceeds the limit\n"
);
const INTERNAL_ERROR: Answer = answer!(
    500,
    "Internal Server Error",
    44,
    "500 Internal Server Error: the proxy failed\n"
);
const NOT_IMPLEMENTED: Answer = answer!(
    501,
    "Not Implemented",
    65,
    "501 Not Implemented: the request needs a feature the proxy lacks\n"
);
const BAD_GATEWAY: Answer = answer!(
    502,
    "Bad Gateway",
    37,
    "502 Bad Gateway: the upstream failed\n"
);
const SERVICE_UNAVAILABLE: Answer = answer!(
    503,
    "Service Unavailable",
    58,
    "503 Service Unavailable: no upstream can take the request\n"
);
const GATEWAY_TIMEOUT: Answer = answer!(
    504,
    "Gateway Timeout",
    57,
    "504 Gateway Timeout: the upstream did not answer in time\n"
);

/// A complete response for `status` (400 404 405 408 413 414 431 500 501 502 503 504; anything else
/// gets the 500), with `Connection: close` when `close`.
pub fn canned(status: u16, close: bool) -> &'static [u8] {
    let answer = match status {
        400 => &BAD_REQUEST,
        404 => &NOT_FOUND,
        405 => &METHOD_NOT_ALLOWED,
        408 => &REQUEST_TIMEOUT,
        413 => &CONTENT_TOO_LARGE,
        414 => &URI_TOO_LONG,
        431 => &FIELDS_TOO_LARGE,
        501 => &NOT_IMPLEMENTED,
        502 => &BAD_GATEWAY,
        503 => &SERVICE_UNAVAILABLE,
        504 => &GATEWAY_TIMEOUT,
        _ => &INTERNAL_ERROR,
    };
    if close {
        answer.close
    } else {
        answer.keep
    }
}

#[cfg(test)]
mod tests {
    use super::super::head::{parse_response, Limits, RespBody};
    use super::*;

    #[test]
    fn every_answer_parses_and_frames_its_body() {
        let statuses = [400, 404, 405, 408, 413, 414, 431, 500, 501, 502, 503, 504];
        let mut headers = Vec::new();
        for status in statuses {
            for close in [false, true] {
                let bytes = canned(status, close);
                let head = parse_response(bytes, &Limits::default(), false, &mut headers)
                    .expect("valid")
                    .expect("complete");
                assert_eq!(head.status, status);
                let body = &bytes[head.head_len..];
                assert_eq!(head.body, RespBody::Length(body.len() as u64), "{status}");
                assert!(body.starts_with(status.to_string().as_bytes()), "{status}");
                assert!(body.ends_with(b"\n"));
                assert_eq!(head.keep_alive, !close, "{status} close={close}");
                let text = String::from_utf8_lossy(bytes);
                assert!(
                    text.contains("\r\nContent-Type: text/plain\r\n"),
                    "{status}"
                );
                assert_eq!(
                    text.contains("\r\nConnection: close\r\n"),
                    close,
                    "{status}"
                );
            }
        }
    }

    #[test]
    fn every_head_error_has_its_own_answer() {
        use super::super::head::HeadError::*;
        // A refusal the parser can produce must not fall through to the generic 500.
        let table = [
            (Malformed, 400),
            (HeadTooLarge, 431),
            (TooManyHeaders, 431),
            (UriTooLong, 414),
            (UnsupportedCoding, 501),
        ];
        for (error, status) in table {
            assert_eq!(error.status(), status, "{error:?}");
            for close in [false, true] {
                let bytes = canned(error.status(), close);
                let line = format!("HTTP/1.1 {status} ");
                assert!(bytes.starts_with(line.as_bytes()), "{error:?}");
            }
        }
    }

    #[test]
    fn method_not_allowed_names_the_methods() {
        let text = String::from_utf8_lossy(canned(405, true));
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD, POST,"));
    }

    #[test]
    fn unknown_status_is_500() {
        for status in [0, 200, 302, 418, 599, 999] {
            assert_eq!(canned(status, true), canned(500, true));
            assert_eq!(canned(status, false), canned(500, false));
        }
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(
            canned(502, true),
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 37\r\n\
              Connection: close\r\n\r\n502 Bad Gateway: the upstream failed\n"
        );
    }
}
