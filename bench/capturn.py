#!/usr/bin/env python3
"""bench/capturn.py: how quickly a proxy gives a connection its next request, seen from the origin.

Usage: capturn.py PERF_DATA

PERF_DATA is `perf record -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit` of the nginx
origin (one process, one thread) while a proxy drives it. For every connection it takes the time
from the origin writing an answer (write, writev or sendto) to its next read of a request
(read or recvfrom) on the same descriptor: the proxy's turnaround, which is part of how long a
request holds its connection (bench/cap.md). Tracing slows the origin's syscalls a little; the
figure is for comparing proxies traced the same way, not an absolute. Prints key=value figures
for bench/shapes.sh's results file.
"""

import statistics
import subprocess
import sys

READS = {0, 45}  # read, recvfrom
WRITES = {1, 20, 44}  # write, writev, sendto


def events(path):
    """(time, 'r' | 'w', fd) for each read or write that moved bytes."""
    text = subprocess.run(["perf", "script", "-i", path, "-F", "time,event,trace"],
                          capture_output=True, text=True, check=True).stdout
    entered = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        t = float(parts[0].rstrip(":"))
        if parts[1].endswith("sys_enter:"):
            # "NR 45 (1d, ...)": the first argument is the descriptor, in hex.
            entered = (int(parts[3]), int(parts[4].strip("(,"), 16))
        elif parts[1].endswith("sys_exit:") and entered is not None:
            # "NR 45 = 158"
            nr, ret = int(parts[3]), int(parts[5])
            if nr == entered[0] and ret > 0:
                if nr in READS:
                    yield t, "r", entered[1]
                elif nr in WRITES:
                    yield t, "w", entered[1]
            entered = None


def main():
    answered = {}
    turns = []
    for t, kind, fd in events(sys.argv[1]):
        if kind == "w":
            answered[fd] = t
        elif fd in answered:
            turns.append((t - answered.pop(fd)) * 1e6)
    if not turns:
        print("turns=0")
        return
    turns.sort()

    def pct(p):
        return turns[min(len(turns) - 1, int(len(turns) * p))]

    print(f"turns={len(turns)} p10_us={pct(0.1):.0f} p50_us={pct(0.5):.0f} "
          f"p90_us={pct(0.9):.0f} mean_us={statistics.mean(turns):.0f}")


if __name__ == "__main__":
    main()
