#!/usr/bin/env python3
"""bench/posts_report.py: turns bench/posts.sh's raw measurements into the tables of posts.md.

Usage: posts_report.py RESULTS_TSV COUNTERS_TSV "MIXES"

RESULTS_TSV has one line per run: mix, row, round, upstream connections opened, requests,
2xx answers, non-2xx answers, transport errors, client reconnects, complete (1 when the generator
finished before its deadline), seconds. COUNTERS_TSV has one line per run of a hearth row: mix,
row, round, then space-separated name=delta pairs from hearth's /metrics. Figures a run could not
take are "n/a" and stay out of the medians. Every comparison is between medians of this one run.
"""

import statistics
import sys

ORDER = ["hearth", "hearthb", "nginx64", "haproxy", "direct"]
LABEL = {"hearth": "hearth, keepalive_pool.size 64", "hearthb": "hearth base build, size 64",
         "nginx64": "nginx keepalive 64", "haproxy": "HAProxy http-reuse safe",
         "direct": "direct (no proxy)"}
MIX_TITLE = {"get": "get: GETs only",
             "post": "post: POSTs, head and body in one write",
             "post-split": "post-split: POSTs, body in a second write 2 ms after the head",
             "mixed": "mixed: long run, half GETs and half POSTs (one write)",
             "mixed-split": "mixed-split: long run, half GETs and half split POSTs"}
CONNS, REQUESTS, OK, NON2XX, ERRORS, RECONNECTS, COMPLETE, SECS = range(8)
# The bound on POST bursts against GET bursts.
POST_BOUND = 1.5
HEARTHS = ("hearth", "hearthb")
PEERS = ("nginx64", "haproxy")


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def median(runs, field):
    values = [v for v in (number(run[field]) for run in runs) if v is not None]
    return statistics.median(values) if values else None


def show(value):
    if value is None:
        return "n/a"
    return "%d" % value if value == int(value) else "%.1f" % value


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main():
    results, counters_file, mixes = sys.argv[1], sys.argv[2], sys.argv[3].split()
    runs = {}
    with open(results) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 11:
                runs.setdefault((fields[0], fields[1]), []).append(fields[3:])
    counters = {}
    with open(counters_file) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 4:
                continue
            sums = counters.setdefault((fields[0], fields[1]), {})
            for pair in fields[3].split():
                name, _, value = pair.partition("=")
                sums[name] = sums.get(name, 0) + int(value)

    rows = [r for r in ORDER if any((m, r) in runs for m in mixes)]
    conns = {(m, r): median(runs[(m, r)], CONNS) for (m, r) in runs}
    out = []

    for mix in mixes:
        out.append("### %s\n" % MIX_TITLE[mix])
        body = []
        for row in rows:
            got = runs.get((mix, row))
            if not got:
                continue
            each = ", ".join(run[CONNS] for run in got)
            cut = sum(1 for run in got if run[COMPLETE] != "1")
            body.append([
                LABEL[row],
                "%s (%s)" % (show(conns[(mix, row)]), each),
                show(median(got, REQUESTS)),
                show(median(got, NON2XX)),
                show(median(got, ERRORS)) + (" (%d cut by deadline)" % cut if cut else ""),
                show(median(got, RECONNECTS)),
                "n/a" if median(got, SECS) is None else "%.1f" % median(got, SECS),
            ])
        out.append(table(["row", "upstream connections (each round)", "requests", "non-2xx",
                          "transport errors", "client reconnects", "seconds"], body))

    # POST bursts against GET bursts, for every row, so hearth's ratio has the peers' beside it.
    posts = [m for m in ("post", "post-split", "mixed", "mixed-split") if m in mixes]
    if "get" in mixes and posts:
        out.append("### POST bursts against GET bursts (upstream connections, medians)\n")
        body = []
        for row in rows:
            cells = [LABEL[row], show(conns.get(("get", row)))]
            for m in posts:
                cells.append("%s (%s)" % (show(conns.get((m, row))),
                                          fmt_ratio(ratio(conns.get((m, row)),
                                                          conns.get(("get", row))))))
            body.append(cells)
        if any(m.startswith("mixed") for m in posts):
            out.append("The mixed runs are longer (more bursts, and gaps that outlast the\n"
                       "origin's idle timeout), so their ratio to the short GET run says less\n"
                       "than post's and post-split's.\n")
        out.append(table(["row", "get"] + ["%s (x get)" % m for m in posts], body))

    # The claims, one line per mix, with the figures behind each verdict.
    peers = [p for p in PEERS if p in rows]
    claims = []
    for row in (r for r in HEARTHS if r in rows):
        get = conns.get(("get", row)) if "get" in mixes else None
        body = []
        for m in mixes:
            mine = conns.get((m, row))
            cells = [m, show(mine)]
            if m in ("post", "post-split") and get is not None:
                r = ratio(mine, get)
                cells.append(judge(None if r is None else r <= POST_BOUND, fmt_ratio(r)))
            else:
                cells.append("")
            for peer in peers:
                theirs = conns.get((m, peer))
                ok = None if mine is None or theirs is None else mine <= theirs
                cells += [show(theirs), judge(ok, fmt_diff(mine, theirs))]
            body.append(cells)
        header = ["mix", LABEL[row], "x GET (bound %.1fx)" % POST_BOUND]
        for peer in peers:
            header += [LABEL[peer], "%s against it" % row]
        claims.append(table(header, body))
    if claims:
        out.append("### The issue's claims, from this run\n")
        out.append("Upstream connections (medians) for POST bursts within %.1fx of GET bursts,\n"
                   "and no more than nginx's and HAProxy's for the same mix in the same run. A\n"
                   "benchmark's verdict, never an exit status. The comparison with the peers\n"
                   "is strict, so where every row needs about one connection per client a\n"
                   "difference of one or two can flip it between rounds; the difference is\n"
                   "shown for that reason.\n" % POST_BOUND)
        out += claims

    if counters:
        out.append("### Why hearth opened and closed upstream connections\n")
        out.append("hearth's own /metrics counters, summed over the rounds of each mix (those\n"
                   "that moved): connects and reuses of pooled connections, closes by reason.\n")
        out.append("```")
        for mix in mixes:
            for row in HEARTHS:
                sums = counters.get((mix, row))
                if sums:
                    out.append("%-11s %-7s %s" % (mix, row, " ".join(
                        "%s=%d" % kv for kv in sorted(sums.items()))))
        out.append("```\n")

    print("\n".join(out))


def judge(ok, figure):
    if ok is None:
        return figure
    return "%s: %s" % (figure, "meets" if ok else "**misses**")


def fmt_diff(a, b):
    if a is None or b is None:
        return "n/a"
    d = a - b
    return "%+d" % d if d == int(d) else "%+.1f" % d


def fmt_ratio(r):
    return "n/a" if r is None else "%.2fx" % r


if __name__ == "__main__":
    main()
