#!/usr/bin/env python3
"""A discrete-event model of the cap shape (bench/shapes.sh, issue 21 shape 3), to ask what moves
the fast requests' p99 when the queue is first come first served.

The model has what the shape has and nothing of either proxy's code: 200 closed-loop clients,
every 10th request of each (offset by client, as examples/load.rs does) slow, a FIFO queue in
front of 50 connections. A request spends `pre` us reaching the queue, holds a connection for
`slow` or `fast` us, spends `post` us reaching its client, and the client sends the next one
`turn` us later. Times are exact (the origin's 200 ms timer does not wander); the clients start
at random within the first millisecond, which is all the seed changes.

    python3 bench/capmodel.py            # the two sweeps quoted in bench/cap.md
    python3 bench/capmodel.py --seeds 3  # quicker
    python3 bench/capmodel.py --seeds 15 --holds 1000 1040 1100 1200
"""
import argparse
import heapq
import random
import statistics

SEND, ARRIVE, DONE, ANSWER = range(4)


def run(fast, pre=30, post=30, turn=20, slow=200_000, clients=200, conns=50, every=10,
        secs=8, warm=2, seed=1):
    """Simulates `secs` seconds; returns req/s, fast p50, fast p99 and slow p99 (us) over the
    time after `warm`."""
    rnd = random.Random(seed)
    events, order = [], 0

    def at(t, kind, c):
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, c))

    sent = [0] * clients
    is_slow = [False] * clients
    began = [0.0] * clients
    for c in range(clients):
        at(rnd.uniform(0, 1000), SEND, c)
    busy, queue, head = 0, [], 0
    lat = ([], [])  # fast, slow
    end, warm_us = secs * 1_000_000, warm * 1_000_000
    while events:
        t, _, kind, c = heapq.heappop(events)
        if t > end:
            break
        if kind == SEND:
            is_slow[c] = (sent[c] + c) % every == 0
            sent[c] += 1
            began[c] = t
            at(t + pre, ARRIVE, c)
        elif kind == ARRIVE:
            if busy < conns and head == len(queue):
                busy += 1
                at(t + (slow if is_slow[c] else fast), DONE, c)
            else:
                queue.append(c)
        elif kind == DONE:
            at(t + post, ANSWER, c)
            if head < len(queue):
                n = queue[head]
                head += 1
                at(t + (slow if is_slow[n] else fast), DONE, n)
            else:
                busy -= 1
        else:  # ANSWER
            if t > warm_us:
                lat[is_slow[c]].append(t - began[c])
            at(t + turn, SEND, c)

    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(len(v) * p))]

    fast_lat, slow_lat = lat
    rps = (len(fast_lat) + len(slow_lat)) / (secs - warm)
    return rps, pct(fast_lat, 0.5), pct(fast_lat, 0.99), pct(slow_lat, 0.99)


def row(label, results):
    med = [statistics.median(r[i] for r in results) for i in range(4)]
    print(f"| {label} | {med[1] / 1000:.1f} | {med[2] / 1000:.1f} | {med[3] / 1000:.1f} | {med[0]:.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=9)
    ap.add_argument("--holds", type=int, nargs="+", metavar="US",
                    help="only these holds of a fast request (us), instead of the two sweeps")
    args = ap.parse_args()
    seeds = range(args.seeds)
    head = "| fast p50 ms | fast p99 ms | slow p99 ms | req/s |\n|---:|---:|---:|---:|---:|"
    print(f"Medians of {args.seeds} seeds.\n")
    if args.holds:
        print("| hold us " + head)
        for fast in args.holds:
            row(str(fast), [run(fast, seed=s) for s in seeds])
        return
    print("How long a fast request holds its connection (pre = post = 30 us, turn 20 us):\n")
    print("| hold us " + head)
    for fast in (40, 60, 80, 100, 150, 200, 400, 1000, 2000):
        row(str(fast), [run(fast, seed=s) for s in seeds])
    print("\nTime outside the queue, each way (hold 60 us, turn 20 us):\n")
    print("| pre = post us " + head)
    for d in (10, 50, 100, 300):
        row(str(d), [run(60, pre=d, post=d, seed=s) for s in seeds])


if __name__ == "__main__":
    main()
