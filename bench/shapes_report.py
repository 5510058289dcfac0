#!/usr/bin/env python3
"""bench/shapes_report.py: bench/shapes.sh's raw figures -> the Markdown of issue 21's shapes.

Usage: shapes_report.py RESULTS_TSV "SHAPES" "RATES"

RESULTS_TSV has one line per run: shape, row, round, then space-separated key=value figures
(shape is stale, spike, cap, large_get, large_post, rate_capacity or rate_PCT). Each table shows
the median over the rounds; error counts are summed over all rounds instead, since one error is
one too many. Verdicts compare medians from this one run, never figures from elsewhere.
"""

import statistics
import sys

LABEL = {"direct": "direct (no proxy)", "hearth": "hearth", "hearthb": "hearth, base build",
         "hearth_copy": "hearth, splice = false",
         "hearth_pre": "hearth, preconnect 1.5", "hearth_rank": "hearth, /slow queue_class 1",
         "nginx64": "nginx keepalive 64", "haproxy": "HAProxy", "haproxy_splice": "HAProxy, splice-auto",
         "haproxy_rank": "HAProxy, /slow priority-class 1"}
ORDER = ["direct", "hearth", "hearthb", "hearth_pre", "hearth_copy", "hearth_rank", "nginx64", "haproxy",
         "haproxy_splice", "haproxy_rank"]


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            shape, row, _round, rest = (line.rstrip("\n").split("\t") + [""])[:4]
            figures = dict(kv.split("=", 1) for kv in rest.split() if "=" in kv)
            runs.setdefault(shape, {}).setdefault(row, []).append(figures)
    return runs


def med(rows, key):
    values = [v for v in (number(r.get(key)) for r in rows) if v is not None]
    return statistics.median(values) if values else None


def total(rows, key):
    values = [number(r.get(key)) for r in rows]
    return None if any(v is None for v in values) or not values else sum(values)


def cell(value, fmt):
    return "n/a" if value is None else fmt % value


def table(header, body):
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in body])


def verdict(ok):
    return "not measured" if ok is None else ("PASS" if ok else "FAIL")


def shape_table(shape_runs, columns):
    """columns: (title, key, fmt, how) with how "median" or "sum"."""
    body = []
    for row in ORDER:
        rows = shape_runs.get(row)
        if not rows:
            continue
        cells = [LABEL[row]]
        for _, key, fmt, how in columns:
            cells.append(cell(med(rows, key) if how == "median" else total(rows, key), fmt))
        body.append(cells + [str(len(rows))])
    return table(["row"] + [c[0] for c in columns] + ["runs"], body)


def ab_rounds(shape_runs, figures):
    """With a hearthb row: for each (key, what) of figures, hearth's figure over the base
    build's, round by round (the rows alternate within each round), sorted, as a list ended by a
    blank line. With HEARTH_BASE_BIN unset both rows are the same binary, and the spread is how
    far apart two identical rows land on this machine. True when it printed anything."""
    a, b = shape_runs.get("hearth"), shape_runs.get("hearthb")
    if not a or not b:
        return False
    printed = False
    for key, what in figures:
        pairs = [(number(x.get(key)), number(y.get(key))) for x, y in zip(a, b)]
        pairs = [(x, y) for x, y in pairs if x is not None and y]
        if pairs:
            ratios = " ".join("%.3f" % q for q in sorted(x / y for x, y in pairs))
            lower = sum(1 for x, y in pairs if x < y)
            print(f"- {what}, hearth / base build in each round: {ratios}; "
                  f"hearth the lower in {lower} of {len(pairs)}")
            printed = True
    if printed:
        print()
    return printed


TARGETS = []


def target(what, measured, ok):
    TARGETS.append([what, measured, verdict(ok)])


def stale(runs):
    r = runs.get("stale", {})
    print("### stale: the origin closes idle connections after 2 s; bursts with 1.5-3 s gaps, "
          "half GETs, half POSTs\n")
    for rows in r.values():
        for f in rows:
            n = number(f.get("requests")) or 0
            c = number(f.get("connects"))
            f["per10k"] = "%.1f" % (c * 10000 / n) if c is not None and n else "n/a"
    print(shape_table(r, [("requests", "requests", "%.0f", "median"),
                          ("non-2xx (all rounds)", "non2xx", "%.0f", "sum"),
                          ("no answer (all rounds)", "errors", "%.0f", "sum"),
                          ("upstream connects/10k req", "per10k", "%.1f", "median")]) + "\n")
    if "hearth" in r:
        bad = [total(r["hearth"], "non2xx"), total(r["hearth"], "errors")]
        ok = None if None in bad else sum(bad) == 0
        peers = ", ".join(f"{LABEL[p]} {cell(total(r[p], 'non2xx'), '%.0f')} + {cell(total(r[p], 'errors'), '%.0f')}"
                          for p in ("nginx64", "haproxy") if p in r)
        target("stale: hearth answers no request with an error", "%s (peers: %s)" % (
            "n/a" if None in bad else "%.0f" % sum(bad), peers or "not measured"), ok)


def spike(runs):
    r = runs.get("spike", {})
    peak = max((int(x["peak"]) for rows in r.values() for x in rows if "peak" in x), default=300)
    print(f"### spike: 10 clients, {peak} for 5 s, back to 10; the origin answers in 20 ms\n")
    print("Connections held: the proxy's ESTABLISHED connections to the origin 10 s after the "
          "step, while 10 clients still send; up to 10 of them are busy, the rest idle.\n")
    print(shape_table(r, [("p99 in the step us", "p99_step_us", "%.0f", "median"),
                          ("upstream connects in the step", "connects", "%.0f", "median"),
                          ("connections held 10 s after", "held_after_10s", "%.0f", "median"),
                          ("requests", "requests", "%.0f", "median"),
                          ("errors (all rounds)", "errors", "%.0f", "sum")]) + "\n")
    ab_rounds(r, [("p99_step_us", "p99 in the step")])


def cap(runs):
    r = runs.get("cap", {})
    print("### cap: at most 50 upstream connections, 200 clients, every 10th request takes 200 ms\n")
    print("nginx's `max_conns` has no queue: a request past the cap is answered 502 at once. The "
          "ranked rows queue `/slow` behind `/fast` (hearth `queue_class = 1` on a `/slow` route, "
          "HAProxy `http-request set-priority-class int(1)` for it); the target compares the "
          "first-come-first-served rows.\n")
    print(shape_table(r, [("req/s", "rps", "%.0f", "median"),
                          ("fast p50 us", "fast_p50_us", "%.0f", "median"),
                          ("fast p99 us", "fast_p99_us", "%.0f", "median"),
                          ("slow p99 us", "slow_p99_us", "%.0f", "median"),
                          ("errors (all rounds)", "errors", "%.0f", "sum")]) + "\n")
    ab_rounds(r, [("fast_p99_us", "fast p99")])
    turns = runs.get("cap_turn", {})
    if turns:
        print("The origin's syscalls traced for 2 s of one more run per row (CAP_TRACE=1): the time "
              "from the origin writing an answer to reading the next request on that connection, "
              "the proxy's part of how long a request holds it (bench/capturn.py).\n")
        print(shape_table(turns, [("turnarounds", "turns", "%.0f", "median"),
                                  ("p10 us", "p10_us", "%.0f", "median"),
                                  ("p50 us", "p50_us", "%.0f", "median"),
                                  ("p90 us", "p90_us", "%.0f", "median"),
                                  ("mean us", "mean_us", "%.0f", "median")]) + "\n")
    # A row that refuses requests past the cap (nginx: 502 at once) answers the rest quickly;
    # its p99 is shown but a verdict compares rows that answered every request.
    h = med(r.get("hearth", []), "fast_p99_us")
    peers = {p: med(r.get(p, []), "fast_p99_us") for p in ("nginx64", "haproxy") if p in r}
    clean = {p: v for p, v in peers.items() if v is not None and total(r[p], "errors") == 0}
    ok = None if h is None or not clean else all(h < v for v in clean.values())
    described = ", ".join(f"{LABEL[p]} {cell(v, '%.0f')}" + ("" if p in clean else " (with errors, not compared)")
                          for p, v in peers.items())
    target("cap: hearth's p99 of fast requests the lowest (rows with no errors)",
           "%s us vs %s" % (cell(h, "%.0f"), described), ok)
    # The lever, like for like: both proxies told that /slow may wait.
    hr, pr = med(r.get("hearth_rank", []), "fast_p99_us"), med(r.get("haproxy_rank", []), "fast_p99_us")
    if hr is not None and pr is not None:
        clean = total(r["hearth_rank"], "errors") == 0 and total(r["haproxy_rank"], "errors") == 0
        target("cap, /slow ranked behind in both: hearth's p99 of fast requests the lower (lever)",
               "%s us vs %s %s" % (cell(hr, "%.0f"), LABEL["haproxy_rank"], cell(pr, "%.0f")),
               clean and hr < pr)


def large(runs):
    for direction, title in (("get", "1 MiB answers (GET)"), ("post", "1 MiB uploads (POST)")):
        r = runs.get(f"large_{direction}", {})
        print(f"### large: {title}, 10 connections\n")
        print(shape_table(r, [("req/s", "rps", "%.0f", "median"), ("MB/s", "mbps", "%.0f", "median"),
                              ("p99 ms", "p99_ms", "%.2f", "median"),
                              ("CPU us/req", "cpu_us", "%.1f", "median"),
                              ("errors (all rounds)", "errors", "%.0f", "sum")]) + "\n")
        h = med(r.get("hearth", []), "cpu_us")
        copy = med(r.get("hearth_copy", []), "cpu_us")
        hap = med(r.get("haproxy_splice", []), "cpu_us")
        if h is not None and copy:
            h_rps, c_rps = med(r["hearth"], "rps"), med(r["hearth_copy"], "rps")
            print(f"- the splice lever: hearth with splice / without: CPU per request {h / copy:.2f}x, "
                  f"req/s {h_rps / c_rps:.2f}x" if h_rps and c_rps else "")
        if h is not None and hap:
            print(f"- hearth / HAProxy splice-auto: CPU per request {h / hap:.2f}x")
        ab_rounds(r, [("cpu_us", "CPU per request")]) or print()
        target(f"large ({direction}): CPU per request at most 0.7x HAProxy's",
               cell(h / hap if h is not None and hap else None, "%.2fx"),
               None if h is None or not hap else h / hap <= 0.7)


def rate(runs, rates):
    capacity = med(runs.get("rate_capacity", {}).get("direct", []), "rps")
    print("### fixed rate: an open loop at 25%, 50% and 75% of the direct origin's capacity\n")
    print(f"Capacity of the direct origin (GET /, closed loop, 50 connections, best of 3): "
          f"{cell(capacity, '%.0f')} req/s. Latency counts from when each request was due, so a "
          "proxy that falls behind is charged for the wait. Added = the row's median percentile "
          "minus direct's.\n")
    keys = (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"))
    for pct in rates:
        r = runs.get(f"rate_{pct}", {})
        if not r:
            continue
        rate_value = med(next(iter(r.values())), "rate")
        print(f"#### {pct}% ({cell(rate_value, '%.0f')} req/s)\n")
        body = []
        direct = {k: med(r.get("direct", []), key) for k, key in keys}
        added = {}
        for row in ORDER:
            rows = r.get(row)
            if not rows:
                continue
            cells = [LABEL[row], cell(med(rows, "rps"), "%.0f")]
            for k, key in keys:
                v = med(rows, key)
                cells.append(cell(v, "%.0f"))
            for k, key in keys:
                v = med(rows, key)
                a = v - direct[k] if v is not None and direct[k] is not None and row != "direct" else None
                added.setdefault(row, {})[k] = a
                cells.append("-" if row == "direct" else cell(a, "%+.0f"))
            errors = total(rows, "errors")
            body.append(cells + [cell(errors, "%.0f"), str(len(rows))])
        print(table(["row", "req/s", "p50 us", "p99 us", "p99.9 us", "added p50", "added p99",
                     "added p99.9", "errors", "runs"], body) + "\n")
        ab_rounds(r, [(key, k) for k, key in keys])
        h = added.get("hearth")
        if h:
            for k, _ in keys:
                peers = [added[p][k] for p in ("nginx64", "haproxy") if p in added and added[p][k] is not None]
                ok = None if h[k] is None or not peers else all(h[k] <= v for v in peers)
                target(f"rate {pct}%: hearth adds the least at {k}",
                       "%s us vs %s" % (cell(h[k], "%+.0f"), ", ".join(
                           f"{LABEL[p]} {cell(added[p][k], '%+.0f')}" for p in ("nginx64", "haproxy") if p in added)),
                       ok)


def main():
    runs = load(sys.argv[1])
    shapes, rates = sys.argv[2].split(), sys.argv[3].split()
    for shape in shapes:
        if shape == "rate":
            rate(runs, rates)
        else:
            globals()[shape](runs)
    if TARGETS:
        print("### Targets of issue 21 for these shapes (ratios of medians from this run)\n")
        print(table(["target", "measured", "result"], TARGETS) + "\n")


if __name__ == "__main__":
    main()
