"""Uploads 1 MiB chunked to 127.0.0.1:PORT, UPLOADS times on one keep-alive connection, as one
chunk (`one`) or as one-byte chunks (`tiny`), and prints the median seconds per upload (first byte
sent to the whole answer read). bench/chunks.sh runs it; it only ever connects to loopback."""

import socket
import statistics
import sys
import time

PAYLOAD = 1 << 20
DEADLINE = 120.0


def body(shape):
    data = bytes(i % 251 for i in range(PAYLOAD))
    if shape == "one":
        return b"%x\r\n" % PAYLOAD + data + b"\r\n0\r\n\r\n"
    out = bytearray()
    for b in data:
        out += b"1\r\n" + bytes([b]) + b"\r\n"
    return bytes(out) + b"0\r\n\r\n"


def read_answer(sock, buf):
    """Reads one answer with a Content-Length body; returns its status and what follows it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before an answer")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed inside an answer")
        rest += chunk
    return status, rest[length:]


def main():
    port, shape, uploads = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    payload = body(shape)
    head = b"POST /upload HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    times, buf = [], b""
    for _ in range(uploads):
        start = time.monotonic()
        sock.sendall(head + payload)
        status, buf = read_answer(sock, buf)
        if status != 200:
            raise RuntimeError(f"answer {status}")
        times.append(time.monotonic() - start)
    sock.close()
    print(f"{statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
