#!/usr/bin/env python3
"""bench/report.py: turns bench/run.sh's raw measurements into the Markdown tables of results.md.

Usage: report.py RESULTS_TSV IDLE_TSV "SHAPES" IDLE_CONNS

RESULTS_TSV has one line per measured run: shape, row, round, req/s, p50 ms, p99 ms, CPU us/req,
syscalls/req, upstream conns/10k req, RSS MiB, errors, epoll waits/req, user us/req. IDLE_TSV
has one line per proxy: name, RSS KiB before and after the idle connections, connections held,
connections that failed. Figures a run could not take are "n/a" or "-" and stay out of the
medians. Every verdict compares medians from this one run, never figures from elsewhere.
"""

import statistics
import sys

ORDER = ["direct", "hearth", "hearth2", "hearthb", "floor", "nginx32", "nginx64", "haproxy",
         "tls_hearth", "tls_hearth0", "tls_nginx32"]
LABEL = {"direct": "direct (no proxy)", "hearth": "hearth", "hearth2": "hearth, 2 workers",
         "hearthb": "hearth, base build", "floor": "floor (bare forwarder)",
         "nginx32": "nginx keepalive 32", "nginx64": "nginx keepalive 64", "haproxy": "HAProxy",
         "tls_hearth": "hearth, https pool", "tls_hearth0": "hearth, https size 0",
         "tls_nginx32": "nginx 32, ssl reuse"}
# Fields of a run, in RESULTS_TSV's order after shape, row and round; CORES is derived.
RPS, P50, P99, CPU, SYSCALLS, CONNS, RSS, ERRORS, EPOLL, USER, CORES = range(11)
FIELDS = 11
# Table columns: title, format, field. "proxy cores" is CPU us/req times req/s: how much of a
# core the proxy kept busy. A proxy below one core idles between bursts, and then each
# epoll_wait returns fewer events, so it makes more of them per request than a saturated one.
COLUMNS = [("req/s", "%.0f", RPS), ("p50 ms", "%.3f", P50), ("p99 ms", "%.3f", P99),
           ("CPU us/req", "%.2f", CPU), ("user us/req", "%.2f", USER), ("proxy cores", "%.2f", CORES),
           ("syscalls/req", "%.2f", SYSCALLS), ("epoll waits/req", "%.3f", EPOLL),
           ("upstream conns/10k req", "%.2f", CONNS), ("RSS MiB", "%.1f", RSS)]
# The direct row has no proxy process, so these do not apply to it.
PROXY_ONLY = (CPU, USER, CORES, SYSCALLS, EPOLL, RSS)
SHAPE_TITLE = {"small": "small: GET /, 50 connections",
               "c500": "c500: GET /, 500 connections",
               "body": "body: POST 1 KiB to /big, 16 KiB answers, 50 connections",
               "https": "https: GET /, 50 connections, proxies talk TLS to the origin"}
# Figures compared as hearth / peer, and which way is better.
RATIOS = [(RPS, "req/s", "higher"), (CPU, "CPU per request", "lower"), (P99, "p99", "lower"),
          (SYSCALLS, "syscalls per request", "lower")]


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def median(rows, i):
    numbers = [n for n in (number(row[i]) for row in rows) if n is not None]
    return statistics.median(numbers) if numbers else None


def cell(value, fmt):
    return "n/a" if value is None else fmt % value


def table(header, body):
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in body])


def ratio(med, a, b, i):
    x = med.get(a, [None] * FIELDS)[i]
    y = med.get(b, [None] * FIELDS)[i]
    return x / y if x is not None and y else None


def ratios(med, a, b):
    """Row a's figures over row b's, one "what N.NNx" per compared figure."""
    parts = []
    for i, what, _ in RATIOS:
        r = ratio(med, a, b, i)
        parts.append(f"{what} {r:.2f}x" if r is not None else f"{what} n/a")
    return ", ".join(parts)


def main():
    results, idle_path, shapes, idle_conns = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
    runs = {}
    with open(results) as f:
        for line in f:
            shape, name, _round, *values = line.rstrip("\n").split("\t")
            values += ["n/a"] * (USER + 1 - len(values))
            cpu, rps = number(values[CPU]), number(values[RPS])
            values.append("%.4f" % (cpu * rps / 1e6) if cpu is not None and rps is not None else "n/a")
            runs.setdefault((shape, name), []).append(values)

    medians = {}
    for shape in shapes:
        print(f"### {SHAPE_TITLE[shape]}\n")
        header = ["proxy"] + [c for c, _, _ in COLUMNS] + ["errors", "runs"]
        body, med = [], {}
        for name in ORDER:
            rows = runs.get((shape, name))
            if not rows:
                continue
            med[name] = [median(rows, i) for i in range(FIELDS)]
            direct = name == "direct"
            cells = [LABEL[name]]
            for _, fmt, i in COLUMNS:
                cells.append("-" if direct and i in PROXY_ONLY else cell(med[name][i], fmt))
            errors = sum(int(r[ERRORS]) for r in rows if r[ERRORS].isdigit())
            body.append(cells + [str(errors), str(len(rows))])
        medians[shape] = med
        if not body:
            print("(no runs)\n")
            continue
        print(table(header, body) + "\n")
        if shape == "https":
            for a, b in (("tls_hearth", "tls_hearth0"), ("tls_hearth", "tls_nginx32")):
                if a in med and b in med:
                    print(f"- {LABEL[a]} / {LABEL[b]}: " + ratios(med, a, b))
            print()
            continue
        if "hearth" not in med:
            print("- hearth not measured, so no ratios\n")
            continue
        for peer in ("haproxy", "nginx64"):
            if peer not in med:
                print(f"- hearth / {LABEL[peer]}: {LABEL[peer]} not measured")
                continue
            print(f"- hearth / {LABEL[peer]}: " + ratios(med, "hearth", peer))
        if "hearth2" in med:
            print("- hearth 2 workers / 1 worker: " + ratios(med, "hearth2", "hearth"))
        if "floor" in med:
            # What the kernel and the machine leave: the floor's own ratios bound what any proxy
            # could reach against the same peers in this run.
            for peer in ("haproxy", "nginx64"):
                if peer in med:
                    print(f"- floor / {LABEL[peer]}: " + ratios(med, "floor", peer))
            print("- hearth / floor: " + ratios(med, "hearth", "floor"))
        if "hearthb" in med:
            print("- hearth / base build: " + ratios(med, "hearth", "hearthb"))
            # Round by round (the rows alternate within a round): with the same binary in both
            # rows, how far apart two identical rows land on this machine.
            pairs = [(number(a[CPU]), number(b[CPU]))
                     for a, b in zip(runs[(shape, "hearth")], runs[(shape, "hearthb")])]
            each = sorted(a / b for a, b in pairs if a is not None and b)
            if each:
                print("- hearth / base build, CPU per request in each round: "
                      + " ".join("%.3f" % r for r in each))
        print()

    idle, idle_per = {}, {}
    with open(idle_path) as f:
        for line in f:
            name, before, after, held, failed = line.rstrip("\n").split("\t")
            idle[name] = (number(before), number(after), int(held), int(failed))
    if idle:
        print(f"### RSS per idle keep-alive client connection ({idle_conns} connections)\n")
        print("A fresh process per proxy serves a short small-shape warm-up, then bench/idle_conns.py opens")
        print("the connections, 50 requests at a time, one `GET /` on each, and holds them idle.")
        print("HAProxy holds fewer when the file limit caps its maxconn below the count.\n")
        body = []
        for name in ORDER:
            if name not in idle:
                continue
            before, after, held, failed = idle[name]
            per = (after - before) / held if before is not None and after is not None and held else None
            idle_per[name] = per
            body.append([LABEL[name], str(held), str(failed), cell(before and before / 1024, "%.1f"),
                         cell(after and after / 1024, "%.1f"), cell(per, "%.2f")])
        print(table(["proxy", "held", "failed", "RSS before MiB", "RSS after MiB",
                     "KiB per idle conn"], body) + "\n")

    print_targets_21(medians)
    print_targets(medians.get("small", {}), runs, idle_per)


def print_targets_21(medians):
    """PASS or FAIL against issue 21's targets for the wrk shapes: hearth's CPU per request no
    higher than either peer's in each shape, and within 1.10x the floor's in the small shape."""
    rows = []
    for shape in ("small", "c500", "body", "https"):
        med = medians.get(shape)
        if not med:
            continue
        me, peers = ("tls_hearth", ("tls_nginx32",)) if shape == "https" else ("hearth", ("haproxy", "nginx64"))
        for peer in ("haproxy", "nginx64") if shape != "https" else ("haproxy", "tls_nginx32"):
            r = ratio(med, me, peer, CPU) if peer in med else None
            label = LABEL.get(peer, peer) if peer in LABEL else peer
            verdict = "not measured" if r is None else ("PASS" if r <= 1.0 else "FAIL")
            if shape == "https" and peer == "haproxy":
                label, verdict = "HAProxy (no https row)", "not measured"
            rows.append([f"{shape}: CPU per request no higher than {label}'s", cell(r, "%.2fx"), verdict])
        if shape == "small":
            r = ratio(med, "hearth", "floor", CPU) if "floor" in med else None
            rows.append(["small: CPU per request within 1.10x the floor's", cell(r, "%.2fx"),
                         "not measured" if r is None else ("PASS" if r <= 1.10 else "FAIL")])
    if not rows:
        return
    print("### Targets of issue 21 in these shapes (ratios of medians from this run)\n")
    print(table(["target", "measured", "result"], rows) + "\n")


def print_targets(med, runs, idle_per):
    """PASS or FAIL against each numeric target of issue 4 (one worker, 50 connections)."""
    print("### Targets of issue 4, retired by issue 21 and kept for comparison (small shape)\n")

    def check(value, op, bound):
        if value is None:
            return "not measured"
        return "PASS" if {"<=": value <= bound, ">=": value >= bound, ">": value > bound,
                          "==": value == bound}[op] else "FAIL"

    rows = []

    def target(what, value, fmt, op, bound):
        rows.append([what, cell(value, fmt), check(value, op, bound)])

    target("CPU per request <= 0.75x HAProxy's", ratio(med, "hearth", "haproxy", CPU), "%.2fx", "<=", 0.75)
    target("CPU per request <= 0.7x nginx keepalive 64's", ratio(med, "hearth", "nginx64", CPU),
           "%.2fx", "<=", 0.70)
    target("req/s >= 1.1x HAProxy's", ratio(med, "hearth", "haproxy", RPS), "%.2fx", ">=", 1.1)
    target("req/s >= 1.2x nginx keepalive 64's", ratio(med, "hearth", "nginx64", RPS), "%.2fx", ">=", 1.2)
    target("p99 no higher than HAProxy's", ratio(med, "hearth", "haproxy", P99), "%.2fx", "<=", 1.0)
    target("syscalls per request no more than HAProxy's", ratio(med, "hearth", "haproxy", SYSCALLS),
           "%.2fx", "<=", 1.0)
    # Every measured round, not the median: one round with a connect is a connect after warm-up.
    conns = [number(r[CONNS]) for r in runs.get(("small", "hearth"), [])]
    conns = [c for c in conns if c is not None]
    target("zero upstream connects after warm-up (worst round, per 10k req)",
           max(conns) if conns else None, "%.2f", "==", 0)
    target("RSS per idle keep-alive client connection <= 1 KiB", idle_per.get("hearth"),
           "%.2f KiB", "<=", 1.0)
    target("2 workers: req/s above 1 worker's", ratio(med, "hearth2", "hearth", RPS), "%.2fx", ">", 1.0)
    print(table(["target", "measured", "result"], rows) + "\n")
    if "floor" in med:
        # The same ratios for a forwarder with no features show how much of each target the
        # machine itself leaves to any proxy.
        print("For scale, the floor row (examples/floor.rs: bytes relayed over one upstream connection")
        print("per client, no parsing, no pool) in this run: " + ratios(med, "floor", "nginx64")
              .replace("req/s", "req/s vs nginx keepalive 64", 1) + "; vs HAProxy: "
              + ratios(med, "floor", "haproxy") + ".\n")


if __name__ == "__main__":
    main()
