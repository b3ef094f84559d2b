#!/usr/bin/env python3
"""The measuring half of bench/compare.sh: interleaved wrk points against running servers, one table.

bench/compare.sh seeds, starts every server and then runs this with their pids and ports. Each round runs every
target once, in the same order: a probe request (checked: HTTP 200, no GraphQL `errors`, the expected number of
touchpoints; its size is the `bytes` column), a wrk warm-up, then the measured wrk run. Around the measured run it
reads the CPU time of the server process and of PostgreSQL (the postmaster, its live children and the children it
reaped: every backend, whichever server's pool it serves) from /proc, and wrk's own from this process's children.

Everything wrk printed, the probe answers, the per-round figures (results.json) and the table (results.md) go to
--out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

# The same content from every target: the customer's names, identities, consents and its 20 latest touchpoints with
# their properties. Kontakt decides consent (the `consents` in force, touchpoints served under the token's purpose)
# and logs the read; PostGraphile serves the rows as they are (the consent ledger's rows for that customer).
KONTAKT_PROFILE = """query($id: UUID!) { customer(id: $id) { id givenName familyName identities { kind value }
  consents { purpose status }
  touchpoints(first: 20) { edges { node { id channel type stage occurredAt properties } } } } }"""
# PostGraphile's own shape of the same read. `condition: {tenant}` lets PostgreSQL use the indexes Kontakt's reads
# use (they lead with tenant); the order is Kontakt's (newest first, id breaking ties).
POSTGRAPHILE4_PROFILE = """query($id: UUID!, $tenant: String!) { customerById(id: $id) { id givenName familyName
  identitiesByCustomerId(condition: {tenant: $tenant}) { nodes { kind value } }
  consentEventsByCustomerId(condition: {tenant: $tenant}, orderBy: [CAPTURED_AT_DESC, ID_DESC]) {
    nodes { purpose status } }
  touchpointsByCustomerId(condition: {tenant: $tenant}, orderBy: [OCCURRED_AT_DESC, ID_DESC], first: 20) {
    nodes { id channel kind stage occurredAt properties } } } }"""
# PostGraphile 5's amber preset names a column `id` `rowId` (`id` is its global Node id) and orders by indexed
# columns only (both orders here are indexed).
POSTGRAPHILE5_PROFILE = """query($id: UUID!, $tenant: String!) { customerByRowId(rowId: $id) { rowId givenName familyName
  identitiesByCustomerId(condition: {tenant: $tenant}) { nodes { kind value } }
  consentEventsByCustomerId(condition: {tenant: $tenant}, orderBy: [CAPTURED_AT_DESC, ROW_ID_DESC]) {
    nodes { purpose status } }
  touchpointsByCustomerId(condition: {tenant: $tenant}, orderBy: [OCCURRED_AT_DESC, ROW_ID_DESC], first: 20) {
    nodes { rowId channel kind stage occurredAt properties } } } }"""
KONTAKT_VIEWER = "{ viewer { tenant } }"
KONTAKT_ROW = "query($id: UUID!) { customer(id: $id) { id } }"


@dataclass
class Target:
    key: str
    label: str
    pid: int
    url: str
    body: dict
    touchpoints: int  # how many touchpoints the probe's answer must hold


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def postgres_ticks(postmaster: int | None) -> int | None:
    """CPU of the whole PostgreSQL server: the postmaster (with the children it has reaped) and its live children."""
    if not postmaster:
        return None
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == postmaster:
            total += int(stat[11]) + int(stat[12])
    return total


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def probe(target: Target, token: str, out: Path) -> int:
    """One request, checked; returns the answer's size in bytes."""
    request = urllib.request.Request(
        target.url,
        data=json.dumps(target.body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    out.write_bytes(raw)
    if status != 200:
        sys.exit(f"{target.label}: HTTP {status} (answer in {out}): {raw[:300]!r}")
    answer = json.loads(raw)
    if answer.get("errors"):
        sys.exit(f"{target.label}: GraphQL errors (answer in {out}): {json.dumps(answer['errors'])[:500]}")
    times = [datetime.datetime.fromisoformat(t) for t in re.findall(r'"occurredAt":\s*"([^"]+)"', raw.decode())]
    if len(times) != target.touchpoints:
        sys.exit(f"{target.label}: {len(times)} touchpoints in the answer, expected {target.touchpoints} (see {out})")
    if times:
        # Every profile target must serve the same touchpoints, newest first.
        SEEN_TIMELINES.setdefault("first", (target.label, times))
        first_label, first_times = SEEN_TIMELINES["first"]
        if times != first_times:
            sys.exit(f"{target.label} serves other touchpoints than {first_label} (see {out})")
    return len(raw)


SEEN_TIMELINES: dict[str, tuple[str, list]] = {}


LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = [==[{body}]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk(script: Path, url: str, args: argparse.Namespace, seconds: int) -> tuple[str, dict]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(script), url]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"wrk failed ({result.returncode}): {result.stderr}{result.stdout}")
    line = next((l for l in result.stdout.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"wrk printed no summary: {result.stdout}")
    return result.stdout, json.loads(line[len("BENCH "):])


def point(target: Target, args: argparse.Namespace, round_no: int, script: Path) -> dict:
    raw_dir = Path(args.out)
    size = probe(target, args.token, raw_dir / f"answer-{target.key}.json")
    if args.warmup > 0:
        wrk(script, target.url, args, args.warmup)
    server0, pg0, wrk0, t0 = cpu_ticks(target.pid), postgres_ticks(args.postmaster), children_cpu(), time.monotonic()
    text, summary = wrk(script, target.url, args, args.duration)
    wall = time.monotonic() - t0
    server1, pg1, wrk1 = cpu_ticks(target.pid), postgres_ticks(args.postmaster), children_cpu()
    (raw_dir / f"wrk-{round_no:02d}-{target.key}.txt").write_text(text)
    if server0 is None or server1 is None:
        sys.exit(f"{target.label}: the server process {target.pid} is gone")
    seconds = summary["duration_us"] / 1e6
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "round": round_no,
        "target": target.key,
        "requests": summary["requests"],
        "rps": summary["requests"] / seconds,
        "p50_ms": summary["p50_us"] / 1000,
        "p90_ms": summary["p90_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "max_ms": summary["max_us"] / 1000,
        "errors": errors,
        "non2xx": summary["status"],
        "answer_bytes": size,
        "server_cpu": 100 * (server1 - server0) / TICKS / wall,
        "postgres_cpu": None if pg0 is None or pg1 is None else 100 * (pg1 - pg0) / TICKS / wall,
        "wrk_cpu": 100 * (wrk1 - wrk0) / wall,
        "server_rss_mb": rss_mb(target.pid),
    }


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}×"


def median(points: list[dict], key: str) -> float | None:
    values = [p[key] for p in points if p[key] is not None]
    return statistics.median(values) if values else None


def report(targets: list[Target], points: list[dict], args: argparse.Namespace) -> str:
    by = {t.key: [p for p in points if p["target"] == t.key] for t in targets}
    lines = [
        f"{args.rounds} round(s) × {len(targets)} targets, wrk -t{args.threads} -c{args.connections}, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured per point; medians over rounds "
        f"(req/s range in brackets). CPU: % of one core (the machine has {os.cpu_count()}).",
        "",
        "| target | req/s | [min–max] | p50 ms | p99 ms | server CPU % | PostgreSQL CPU % | wrk CPU % "
        "| server RSS MB | answer bytes | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in targets:
        ps = by[t.key]
        rps = [p["rps"] for p in ps]
        lines.append(
            f"| {t.label} | {fmt(median(ps, 'rps'))} | {fmt(min(rps))}–{fmt(max(rps))} "
            f"| {fmt(median(ps, 'p50_ms'), 2)} | {fmt(median(ps, 'p99_ms'), 2)} "
            f"| {fmt(median(ps, 'server_cpu'))} | {fmt(median(ps, 'postgres_cpu'))} | {fmt(median(ps, 'wrk_cpu'))} "
            f"| {fmt(max((p['server_rss_mb'] or 0) for p in ps))} | {fmt(ps[0]['answer_bytes'])} "
            f"| {sum(p['errors'] for p in ps)} |"
        )

    pgl = [t for t in targets if t.key in ("pg4", "pg5")]
    if pgl:
        best = max(pgl, key=lambda t: median(by[t.key], "rps"))
        best_rps, best_p99 = median(by[best.key], "rps"), median(by[best.key], "p99_ms")
        viewer = median(by["viewer"], "rps") if by.get("viewer") else None
        lines += [
            "",
            f"Ratios against the better PostGraphile ({best.label}: {fmt(best_rps)} req/s, p99 {fmt(best_p99, 2)} ms); "
            "per-round ratios (each Kontakt point over the better PostGraphile of the same round) in brackets.",
            "",
            "| Kontakt target | req/s ÷ PostGraphile | [per round] | p99 ÷ PostGraphile | issue 12 asks |",
            "|---|---:|---:|---:|---|",
        ]
        asks = {
            "kontakt-off": "req/s ≥ 3×, p99 ≤ 0.33×",
            "kontakt-on": "req/s ≥ 10×, and ≥ 0.5× the viewer ceiling",
            "viewer": "(ceiling: no database)",
            "row": "(one statement + access log)",
        }
        for t in targets:
            if t.key in ("pg4", "pg5"):
                continue
            per_round = []
            for r in range(1, args.rounds + 1):
                mine = [p["rps"] for p in by[t.key] if p["round"] == r]
                theirs = [p["rps"] for p in points if p["round"] == r and p["target"] in ("pg4", "pg5")]
                if mine and theirs and max(theirs) > 0:
                    per_round.append(mine[0] / max(theirs))
            ask = asks.get(t.key, "")
            if t.key == "kontakt-on" and viewer:
                ask += f" (now {ratio(median(by[t.key], 'rps'), viewer)} of {fmt(viewer)})"
            spread = f"{min(per_round):.2f}–{max(per_round):.2f}" if per_round else "n/a"
            lines.append(
                f"| {t.label} | {ratio(median(by[t.key], 'rps'), best_rps)} | {spread} "
                f"| {ratio(median(by[t.key], 'p99_ms'), best_p99)} | {ask} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token", required=True)
    parser.add_argument("--customer", required=True, help="the customer every target reads")
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--target", action="append", default=[], metavar="KEY=PID:PORT:LABEL",
                        help="pg4, pg5, kontakt-off, kontakt-on, viewer or row (viewer and row: a Kontakt server)")
    parser.add_argument("--postmaster", type=int, default=0, help="PostgreSQL's postmaster pid (0: CPU not read)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds (whole)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds (whole; 0: none)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    kontakt_profile = {"query": KONTAKT_PROFILE, "variables": {"id": args.customer}}
    bodies = {
        "pg4": ({"query": POSTGRAPHILE4_PROFILE, "variables": {"id": args.customer, "tenant": args.tenant}}, 20),
        "pg5": ({"query": POSTGRAPHILE5_PROFILE, "variables": {"id": args.customer, "tenant": args.tenant}}, 20),
        "kontakt-off": (kontakt_profile, 20),
        "kontakt-on": (kontakt_profile, 20),
        "viewer": ({"query": KONTAKT_VIEWER}, 0),
        "row": ({"query": KONTAKT_ROW, "variables": {"id": args.customer}}, 0),
    }
    targets = []
    for spec in args.target:
        key, rest = spec.split("=", 1)
        pid, port, label = rest.split(":", 2)
        body, touchpoints = bodies[key]
        targets.append(Target(key, label, int(pid), f"http://127.0.0.1:{port}/graphql", body, touchpoints))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scripts = {}
    for t in targets:
        scripts[t.key] = out / f"{t.key}.lua"
        scripts[t.key].write_text(LUA.format(token=args.token, body=json.dumps(t.body)))

    points = []
    for round_no in range(1, args.rounds + 1):
        for t in targets:
            p = point(t, args, round_no, scripts[t.key])
            points.append(p)
            print(f"round {round_no}/{args.rounds} {t.label}: {p['rps']:,.0f} req/s, p50 {p['p50_ms']:.2f} ms, "
                  f"p99 {p['p99_ms']:.2f} ms, server {p['server_cpu']:.0f}% "
                  f"postgres {fmt(p['postgres_cpu'])}% wrk {p['wrk_cpu']:.0f}%, {p['errors']} errors",
                  file=sys.stderr, flush=True)
            if p["requests"] == 0:
                print(f"warning: {t.label} completed no request in {args.duration} s", file=sys.stderr)
            if p["non2xx"]:
                sys.exit(f"{t.label}: {p['non2xx']} non-2xx answers (see {out})")

    table = report(targets, points, args)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"settings": vars(args) | {"token": "…"}, "points": points},
                                                 indent=2))
    print(table)


if __name__ == "__main__":
    main()
