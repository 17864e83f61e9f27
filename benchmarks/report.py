#!/usr/bin/env python3
"""Print the benchmark tables (Markdown) from load.py's JSON lines: medians, ratios, target check.

python benchmarks/report.py /tmp/bench-results/results.jsonl
"""

from __future__ import annotations

import json
import sys

PEERS = ("otree", "labelstudio")
NAMES = {
    "ours": "studyplatform (gunicorn + PostgreSQL)",
    "ours-html": "studyplatform, HTML form flow",
    "otree": "oTree 6 prodserver (SQLite)",
    "labelstudio": "Label Studio 1.23 (dev server, SQLite)",
}


def pace(r) -> str:
    t = f"{int(r['think_ms'])} ms" if r.get("think_ms") else "0"
    return t + (f", ramp {int(r['ramp_s'])} s" if r.get("ramp_s") else "")


def fmt(x, nd=1):
    if x is None or x != x:
        return "–"
    return f"{x:.{nd}f}"


def load(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(path: str) -> int:
    rows = [r for r in load(path) if r["kind"] == "aggregate"]
    out = []
    out.append(
        "| system | variant | conc. | N | trials/p | think, ramp | runs | submits/s (each) "
        "| submit p50 / p95 / p99 ms "
        "| lost | dup | unack-stored | loadgen / server / db / foreign cores |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|---|---|--:|--:|--:|---|")
    for r in rows:
        out.append(
            f"| {r['system']} | {r['label'] or '–'} | {r['concurrency']} | {r['participants']} "
            f"| {fmt(r['trials_per_participant'], 0)} | {pace(r)} | {r['runs']} "
            f"| **{fmt(r['submits_per_s'])}** "
            f"({', '.join(fmt(x) for x in r['submits_per_s_each'])}) "
            f"| {fmt(r['submit_p50_ms'])} / {fmt(r['submit_p95_ms'])} "
            f"/ **{fmt(r['submit_p99_ms'])}** "
            f"| {r['lost']} | {r['duplicated']} | {r['unacknowledged_stored']} "
            f"| {fmt(r['loadgen_cores'], 2)} / {fmt(r['server_cores'], 2)} "
            f"/ {fmt(r['db_cores'], 2)} "
            f"/ {fmt(r['foreign_cores'], 2)} |"
        )
    print("\n".join(out))

    # per-endpoint latency for ours
    print()
    print("| ours: endpoint | conc. | variant | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|--:|---|--:|--:|--:|--:|")
    for r in rows:
        if not r["system"].startswith("ours"):
            continue
        for name, e in sorted(r["endpoints"].items()):
            print(
                f"| {name} | {r['concurrency']} | {r['label'] or '–'}, think {pace(r)} "
                f"| {fmt(e['p50_ms'])} | {fmt(e['p95_ms'])} | {fmt(e['p99_ms'])} "
                f"| {fmt(e['max_ms'])} |"
            )

    # ratios ours / peer at the same concurrency and think time (baseline variant of ours)
    print()
    print("| conc. | think, ramp | peer | ours submits/s ÷ peer | ours p99 ÷ peer p99 |")
    print("|--:|--:|---|--:|--:|")
    base = {
        (r["concurrency"], r["think_ms"], r.get("ramp_s", 0.0)): r
        for r in rows
        if r["system"] == "ours" and r["label"] in ("", "shipped settings")
    }
    for r in rows:
        if r["system"] not in PEERS:
            continue
        o = base.get((r["concurrency"], r["think_ms"], r.get("ramp_s", 0.0)))
        if not o:
            continue
        print(
            f"| {r['concurrency']} | {pace(r)} | {r['system']} "
            f"| {fmt(o['submits_per_s'] / r['submits_per_s'], 2)}× "
            f"| {fmt(o['submit_p99_ms'] / r['submit_p99_ms'], 2)} |"
        )

    slo(rows)

    # target check at 200 participants, closed loop
    print()
    o = base.get((200, 0.0, 0.0))
    if o:
        peers = [
            r
            for r in rows
            if r["system"] in PEERS
            and r["concurrency"] == 200
            and not r["think_ms"]
            and not r.get("ramp_s")
        ]
        best_peer = max((p["submits_per_s"] for p in peers), default=float("nan"))
        ok_tp = o["submits_per_s"] >= 3 * best_peer
        ok_p99 = o["submit_p99_ms"] < 100
        ours_rows = [r for r in rows if r["system"].startswith("ours")]
        ok_data = all(r["lost"] == 0 and r["duplicated"] == 0 for r in ours_rows)
        ok_done = all(r["completed_all"] and r["participants_ok"] for r in ours_rows)
        print(
            f"Target at 200 participants (closed loop, shipped settings): "
            f"throughput >= 3x every peer: {'MET' if ok_tp else 'NOT MET'} "
            f"(ours {fmt(o['submits_per_s'])}/s, best peer {fmt(best_peer)}/s); "
            f"p99 < 100 ms: {'MET' if ok_p99 else 'NOT MET'} (ours {fmt(o['submit_p99_ms'])} ms); "
            f"zero lost/duplicated in every run of ours: {'MET' if ok_data else 'NOT MET'}; "
            f"every participant completed and counted: {'yes' if ok_done else 'NO'}"
        )
        for r in rows:
            if r["system"] in PEERS and (r["lost"] or r["duplicated"]):
                print(
                    f"  peer {r['system']} C={r['concurrency']}: "
                    f"lost {r['lost']}, duplicated {r['duplicated']}"
                )
    return 0


SLO_MS = 100.0


def slo_ok(r: dict) -> bool:
    """p99 of every request and of the submits under SLO_MS, every answer stored exactly once."""
    return (
        (r.get("all_p99_ms") or float("inf")) < SLO_MS
        and (r.get("submit_p99_ms") or float("inf")) < SLO_MS
        and r["lost"] == 0
        and r["duplicated"] == 0
        and r["completed_all"]
    )


def slo(rows: list[dict]) -> None:
    """Capacity at the target: per system, the highest submits/s of a "SLO ladder" row that
    meets :func:`slo_ok` (0 when none does), and ours as a multiple of each peer's."""
    ladder = [r for r in rows if r["label"] == "SLO ladder"]
    if not ladder:
        return
    print()
    print(f"Capacity at p99 < {SLO_MS:.0f} ms (200 participants paced; the ladder):")
    print()
    print(
        "| system | conc. | N | think, ramp | submits/s | submit p99 ms | all requests p99 ms "
        "| lost | dup | meets target |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    capacity: dict[str, float] = {}
    for r in sorted(ladder, key=lambda r: (r["system"], r["submits_per_s"])):
        ok = slo_ok(r)
        capacity.setdefault(r["system"], 0.0)
        if ok:
            capacity[r["system"]] = max(capacity[r["system"]], r["submits_per_s"])
        print(
            f"| {r['system']} | {r['concurrency']} | {r['participants']} | {pace(r)} "
            f"| {fmt(r['submits_per_s'])} | {fmt(r['submit_p99_ms'])} "
            f"| {fmt(r.get('all_p99_ms'))} | {r['lost']} | {r['duplicated']} "
            f"| {'yes' if ok else 'no'} |"
        )
    print()
    ours = capacity.get("ours", 0.0)
    for peer, cap in sorted(capacity.items()):
        if peer == "ours":
            continue
        ratio = f"{ours / cap:.1f}x" if cap else "unbounded (the peer never met it)"
        print(
            f"* ours {fmt(ours)} submits/s vs {peer} {fmt(cap)} at p99 < {SLO_MS:.0f} ms: "
            f"{ratio}; target >= 3x: {'MET' if ours and ours >= 3 * cap else 'NOT MET'}"
        )


def profile(path: str) -> int:
    """Top functions of a py-spy raw (collapsed) profile: inclusive and self share of samples."""
    from collections import Counter

    incl: Counter = Counter()
    own: Counter = Counter()
    total = 0
    cold = 0

    def name(frame: str) -> str:
        func, _, where = frame.partition(" (")
        where = where.split(":")[0].split("site-packages/")[-1].split("/work/main/")[-1]
        return f"{func} ({where})"

    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            if "URLResolver.urlconf_module" in stack or "load_middleware" in stack:
                # a worker's first request imports the URLconf (and with it the analysis stack)
                cold += n
                continue
            total += n
            frames = [name(f) for f in stack.split(";") if " (" in f]
            for f in set(frames):
                incl[f] += n
            if frames:
                own[frames[-1]] += n
    print(
        f"{total} steady-state samples (GIL held) in {path}; {cold} more samples "
        f"({100 * cold / max(1, cold + total):.0f}%) were first-request URLconf imports, left out"
    )
    print("-- inclusive (share of Python CPU spent in and below) --")
    for f, n in incl.most_common(60):
        if any(
            s in f for s in ("threading.py", "thread.py", "gthread.py", "_bootstrap", "base.py)")
        ):
            continue
        print(f"{100 * n / total:5.1f}%  {f}")
    print("-- self --")
    for f, n in own.most_common(15):
        print(f"{100 * n / total:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--profile":
        sys.exit(profile(sys.argv[2]))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench-results/results.jsonl"))
