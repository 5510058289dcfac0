#!/usr/bin/env python3
"""bench/idle_conns.py: holds many idle keep-alive client connections open on a proxy.

Usage: idle_conns.py PORT COUNT STATUS_FILE

Opens COUNT connections to 127.0.0.1:PORT, sends one `GET /` on each and reads its whole answer,
then keeps every connection open and silent. When all are answered (or the attempt gives up) it
writes "answered failed" to STATUS_FILE, and then waits, holding the connections, until it is
terminated; bench/run.sh measures the proxy's RSS meanwhile.

Requests go out at most BATCH at a time, like a load of BATCH clients, so the proxy never has
more than BATCH active requests: what stays in its memory afterwards is the cost of idle
connections, not of a burst of 10,000 concurrent requests. Every wait is bounded: the whole
attempt by SETUP_SECONDS, the idle hold by HOLD_SECONDS.
"""

import os
import selectors
import socket
import sys
import time

BATCH = 50
SETUP_SECONDS = 60
HOLD_SECONDS = 300
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def answer_complete(data):
    """True once `data` holds a whole response with a Content-Length body (the origin's /)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in data[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(data) >= end + 4 + length


def main():
    port, count, status_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    selector = selectors.DefaultSelector()
    held, pending = [], {}
    started = failed = 0
    deadline = time.monotonic() + SETUP_SECONDS
    while len(held) + failed < count and time.monotonic() < deadline:
        while started < count and len(pending) < BATCH:
            started += 1
            sock = socket.socket()
            try:
                sock.settimeout(5)
                sock.connect(("127.0.0.1", port))
                sock.sendall(REQUEST)
                sock.setblocking(False)
            except OSError:
                sock.close()
                failed += 1
                continue
            pending[sock] = b""
            selector.register(sock, selectors.EVENT_READ)
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                selector.unregister(sock)
                del pending[sock]
                sock.close()
                failed += 1
                continue
            pending[sock] += chunk
            if answer_complete(pending[sock]):
                selector.unregister(sock)
                del pending[sock]
                held.append(sock)
    failed += len(pending) + (count - started)
    with open(status_path + ".tmp", "w") as f:
        f.write(f"{len(held)} {failed}\n")
    # Renamed into place so the reader never sees a half-written line.
    os.replace(status_path + ".tmp", status_path)
    time.sleep(HOLD_SECONDS)


if __name__ == "__main__":
    main()
