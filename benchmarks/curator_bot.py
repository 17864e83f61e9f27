"""Curator throughput: a bot signs in and works through the real keyboard queue in Chromium.

It starts the real development server (``manage.py runserver --noreload``) on a data directory,
signs in at ``/label/login/``, opens ``/label/projects/<pk>/queue/`` and, for each decision,
waits until the entry image and both Grad-CAM images have loaded, reads what the page shows
(given class, the model's top-3), presses one key and waits until the next item is ready:

* the model's top-1 class differs from the given label: the digit of that class (relabel);
* otherwise ``k`` (keep); every 20th decision ``u`` (unsure);
* every 25th decision is followed by ``z`` (undo), and the re-shown entry is decided again.

Latency is measured in the page (``performance.now()``): from the keydown to the moment the
next item's ``#q-meta`` text has changed and ``#q-image``, ``#q-cam-given`` and
``#q-cam-other`` (when shown) are complete with a non-zero natural width. The first decisions
include cold caches (Grad-CAM computed on first request, the model loaded into the server), so
the summary is given with and without the first 10. After the run the Decision rows logged for
the curator in the project are counted with the ORM: they must equal decisions + undos.

Work on a copy of the data directory; the bot's decisions are real::

    cp -a /tmp/lbl-var /tmp/lbl-bot-var
    .venv/bin/python benchmarks/curator_bot.py --json benchmarks/results/curator-bot.json

Optional screenshots: ``--queue-shot PNG`` (the queue mid-run, 1280x900) and
``--overview-shot PNG`` with ``--owner/--owner-password`` (the project overview, full page).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
KEYS = "1234567890"
UNSURE_EVERY = 20
UNDO_EVERY = 25
STEP_TIMEOUT_MS = 120_000

# Evaluated in the page. ``prev`` is the #q-meta text before the key was pressed; the value is
# the ms since the keydown when the next item is ready, or an error/done marker.
READY_JS = """
(prev) => {
  const done = document.getElementById("q-done");
  const st = document.getElementById("q-status");
  const since = () => performance.now() - (window.__botKeyAt || 0);
  if (st && st.classList.contains("err") && st.textContent) {
    return {error: st.textContent, ms: since()};
  }
  if (done && !done.hidden) return {done: true, ms: since()};
  const card = document.getElementById("q-card");
  const meta = document.getElementById("q-meta");
  if (!card || card.hidden || !meta || meta.textContent === prev) return false;
  const ok = (id) => {
    const img = document.getElementById(id);
    if (!img) return true;
    if (img.parentElement && img.parentElement.hidden) return true;
    return img.complete && img.naturalWidth > 0;
  };
  if (!(ok("q-image") && ok("q-cam-given") && ok("q-cam-other"))) return false;
  return {ms: since()};
}
"""

# What a curator reads: the item line, the given class, the top-3 bars and the count.
SHOWN_JS = """
() => {
  const classes = JSON.parse(document.getElementById("q-classes").textContent);
  const byName = Object.fromEntries(classes.map((c) => [c.name, c.index]));
  const top3 = [...document.querySelectorAll("#q-top3 .bar")].map((row) => {
    const cells = row.querySelectorAll(":scope > span");
    return {name: cells[0].textContent, index: byName[cells[0].textContent],
            percent: parseInt(cells[2].textContent, 10)};
  });
  const given = document.getElementById("q-given").textContent;
  return {meta: document.getElementById("q-meta").textContent, given: given,
          given_index: byName[given], top3: top3,
          count: document.getElementById("q-count").textContent,
          status: document.getElementById("q-status").textContent,
          done: !document.getElementById("q-done").hidden};
}
"""

# Stamp the keydown time before the page's own handler sees the key.
KEY_STAMP_JS = """
document.addEventListener("keydown", () => { window.__botKeyAt = performance.now(); }, true);
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--var-dir", default="/tmp/lbl-bot-var")
    p.add_argument("--project", type=int, default=2)
    p.add_argument("--user", default="curator")
    p.add_argument("--password", default="pw-curator")
    p.add_argument("--decisions", type=int, default=200)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--think-ms", type=int, default=0, help="the bot's delay before each key")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.add_argument("--queue-shot", type=Path, default=None, help="PNG of the queue mid-run")
    p.add_argument("--overview-shot", type=Path, default=None, help="PNG of the overview")
    p.add_argument("--owner", default="researcher", help="account for the overview shot")
    p.add_argument("--owner-password", default="pw-researcher")
    p.add_argument("--headed", action="store_true", help="show the browser window")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# The server


def server_env(var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["STUDYPLATFORM_VAR_DIR"] = str(var_dir)
    env.setdefault("DJANGO_SETTINGS_MODULE", "studyplatform.settings.base")
    # DEBUG (the settings' default) serves /static/ from the app folders through WhiteNoise's
    # finders and allows 127.0.0.1; without it a SECRET_KEY and collectstatic would be needed.
    env["DJANGO_DEBUG"] = "1"
    env.pop("DATABASE_URL", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def server_start(var_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    if not port_free(port):
        raise SystemExit(f"port {port} is in use: another server would answer the bot")
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runserver",
            f"127.0.0.1:{port}",
            "--noreload",
        ],
        cwd=ROOT,
        env=server_env(var_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/label/login/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    server_stop(proc)
    raise SystemExit(f"the server did not answer {url} within 90 s; see {log_path}")


def server_stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def decision_rows(var_dir: Path, project: int, user: str) -> dict[str, int]:
    """Decision rows logged for ``user`` in ``project``, by action, read with the ORM."""
    code = (
        "import json\n"
        "from django.db.models import Count\n"
        "from labeling.models import Decision\n"
        f"qs = Decision.objects.filter(project_id={project}, curator__username={user!r})\n"
        "rows = {r['action']: r['n'] for r in qs.values('action').annotate(n=Count('id'))}\n"
        "print('ROWS=' + json.dumps(rows))\n"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=server_env(var_dir),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^ROWS=(.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"no row count in the shell's output: {out!r}")
    rows = json.loads(match.group(1))
    rows["total"] = sum(rows.values())
    return rows


# --------------------------------------------------------------------------------------------
# The bot


def choose_key(n: int, shown: dict) -> tuple[str, str]:
    """The key for the ``n``-th decision (1-based) and what it means."""
    if n % UNSURE_EVERY == 0:
        return "u", "unsure"
    top1 = shown["top3"][0]["index"] if shown["top3"] else None
    given = shown["given_index"]
    if top1 is not None and given is not None and top1 != given and top1 < len(KEYS):
        return KEYS[top1], "relabel"
    return "k", "keep"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_ms(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 1),
        "p90": round(percentile(values, 0.9), 1),
        "mean": round(statistics.fmean(values), 1),
        "max": round(max(values), 1),
    }


def decided_of(count_text: str) -> int | None:
    """The N of the page's "N of M decided"."""
    match = re.match(r"\s*(\d+) of \d+ decided", count_text or "")
    return int(match.group(1)) if match else None


def request_kind(url: str) -> str | None:
    for kind, pattern in (
        ("gradcam", r"/entries/\d+/gradcam/\d+\.png"),
        ("item_image", r"/items/\d+\.png"),
        ("next_json", r"/queue/next\.json"),
        ("decide", r"/decide/$"),
        ("undo", r"/undo/$"),
    ):
        if re.search(pattern, url.split("?")[0]):
            return kind
    return None


def sign_in(page, base: str, user: str, password: str, next_path: str) -> None:
    page.goto(f"{base}/label/login/?next={next_path}")
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    if "/label/login/" in page.url:
        raise SystemExit(f"sign-in as {user!r} failed (still on {page.url})")


# The page's state when a step timed out: which image did not load.
STATE_JS = """
() => Object.fromEntries(["q-image", "q-cam-given", "q-cam-other"].map((id) => {
  const img = document.getElementById(id);
  return [id, img ? {src: img.getAttribute("src"), complete: img.complete,
                     width: img.naturalWidth, hidden: !!img.parentElement.hidden} : null];
}).concat([["meta", document.getElementById("q-meta").textContent],
           ["status", document.getElementById("q-status").textContent]]))
"""


def wait_ready(page, prev_meta: str) -> dict:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        handle = page.wait_for_function(READY_JS, arg=prev_meta, polling=5, timeout=STEP_TIMEOUT_MS)
    except PlaywrightTimeout:
        state = page.evaluate(STATE_JS)
        return {"error": f"not ready after {STEP_TIMEOUT_MS} ms: {json.dumps(state)}", "ms": -1}
    return handle.json_value()


def run_bot(args: argparse.Namespace, base: str) -> dict:
    from playwright.sync_api import sync_playwright

    queue_path = f"/label/projects/{args.project}/queue/"
    steps: list[dict] = []
    undo_steps: list[dict] = []
    requests: dict[str, list[float]] = {}
    problems: list[str] = []
    console_errors: list[str] = []
    failed: list[str] = []

    def on_response(response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.request.method} {response.url}")

    def on_finished(request) -> None:
        kind = request_kind(request.url)
        timing = request.timing
        if kind and timing and timing.get("responseEnd", -1) >= 0:
            requests.setdefault(kind, []).append(timing["responseEnd"])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=not args.headed)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("requestfinished", on_finished)
        page.on("response", on_response)
        page.on("pageerror", lambda exc: console_errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: console_errors.append(msg.text) if msg.type == "error" else None,
        )
        page.add_init_script(KEY_STAMP_JS)

        sign_in(page, base, args.user, args.password, queue_path)
        t_open = time.perf_counter()
        if not page.url.rstrip("/").endswith(queue_path.rstrip("/")):
            page.goto(base + queue_path)
        first = wait_ready(page, "")
        open_ms = (time.perf_counter() - t_open) * 1000
        if first.get("error") or first.get("done"):
            raise SystemExit(f"the queue did not show an item: {first}")
        shown = page.evaluate(SHOWN_JS)
        start_count = shown["count"]
        start_decided = decided_of(start_count) or 0
        count_mismatches: list[str] = []

        decisions = undos = 0
        shot_at = max(1, args.decisions // 2)
        t_start = time.perf_counter()
        while decisions < args.decisions:
            n = decisions + 1
            key, meaning = choose_key(n, shown)
            if args.think_ms:
                page.wait_for_timeout(args.think_ms)
            t_key = time.perf_counter()
            page.keyboard.press(key)
            ready = wait_ready(page, shown["meta"])
            t_ready = time.perf_counter()
            decisions += 1
            nxt = page.evaluate(SHOWN_JS)
            step = {
                "n": n,
                "key": key,
                "action": meaning,
                "item": shown["meta"],
                "given": shown["given"],
                "top1": shown["top3"][0]["name"] if shown["top3"] else None,
                "latency_ms": round(ready["ms"], 1),
                "wall_latency_ms": round((t_ready - t_key) * 1000, 1),
                "t_key_s": round(t_key - t_start, 3),
                "t_ready_s": round(t_ready - t_start, 3),
                "status": nxt["status"],
                "count_after": nxt["count"],
            }
            steps.append(step)
            if ready.get("error"):
                problems.append(f"decision {n}: the page showed an error: {ready['error']}")
                break
            expected = start_decided + decisions - undos
            if not ready.get("done") and decided_of(nxt["count"]) != expected:
                count_mismatches.append(
                    f"after decision {n}: page says {nxt['count']!r}, expected {expected}"
                )
            if not nxt["status"].startswith("Saved:"):
                problems.append(f"decision {n}: status {nxt['status']!r}, not 'Saved: ...'")
            if n == shot_at and args.queue_shot:
                args.queue_shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.queue_shot))
            if ready.get("done"):
                shown = nxt
                break
            shown = nxt
            if n % UNDO_EVERY == 0 and decisions < args.decisions:
                if args.think_ms:
                    page.wait_for_timeout(args.think_ms)
                t_key = time.perf_counter()
                page.keyboard.press("z")
                ready = wait_ready(page, shown["meta"])
                undos += 1
                nxt = page.evaluate(SHOWN_JS)
                undo_steps.append(
                    {
                        "after": n,
                        "latency_ms": round(ready["ms"], 1),
                        "shown_again": nxt["meta"],
                        "undid": step["item"],
                        "status": nxt["status"],
                        "count_after": nxt["count"],
                    }
                )
                if ready.get("error"):
                    problems.append(f"undo after {n}: the page showed an error: {ready['error']}")
                    break
                if nxt["meta"] != step["item"]:
                    problems.append(
                        f"undo after {n}: showed {nxt['meta']!r}, not the undone {step['item']!r}"
                    )
                shown = nxt
        t_end = time.perf_counter()
        end_count = page.evaluate(SHOWN_JS)["count"]
        # What the page says once reloaded (fresh counts from the server).
        page.reload()
        reloaded = wait_ready(page, "")
        reload_count = page.evaluate(SHOWN_JS)["count"] if not reloaded.get("error") else None

        overview = None
        if args.overview_shot:
            overview = overview_shot(browser, base, args)
        browser_version = browser.version
        browser.close()

    return {
        "open_ms": round(open_ms, 1),
        "steps": steps,
        "undo_steps": undo_steps,
        "decisions": decisions,
        "undos": undos,
        "wall_s": t_end - t_start,
        "t_start": t_start,
        "start_count": start_count,
        "end_count": end_count,
        "reload_count": reload_count,
        "requests": requests,
        "problems": problems,
        "console_errors": console_errors,
        "failed_responses": failed,
        "count_mismatches": count_mismatches,
        "overview": overview,
        "browser": browser_version,
    }


def overview_shot(browser, base: str, args: argparse.Namespace) -> dict:
    """Full-page PNG of the overview as the owner, once the projection has been drawn."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    path = f"/label/projects/{args.project}/"
    sign_in(page, base, args.owner, args.owner_password, path)
    if not page.url.rstrip("/").endswith(path.rstrip("/")):
        page.goto(base + path)
    page.wait_for_load_state("networkidle")
    # Scroll through once so that the lazy thumbnails (class strips) load, then wait for them.
    height = page.evaluate("() => document.documentElement.scrollHeight")
    for y in range(0, height + 900, 700):
        page.evaluate(f"() => window.scrollTo(0, {y})")
        page.wait_for_timeout(80)
    page.wait_for_function("() => [...document.images].every((i) => i.complete)", timeout=60_000)
    broken = page.evaluate(
        "() => [...document.images].filter((i) => i.getAttribute('src') && i.complete"
        " && i.naturalWidth === 0).map((i) => i.getAttribute('src'))"
    )
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_function(
        "() => { const c = document.getElementById('proj-caption');"
        " return !c || !/Loading/.test(c.textContent); }",
        timeout=60_000,
    )
    caption = page.evaluate(
        "() => (document.getElementById('proj-caption') || {}).textContent || ''"
    )
    page.wait_for_timeout(300)
    args.overview_shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(args.overview_shot), full_page=True)
    height = page.evaluate("() => document.documentElement.scrollHeight")
    context.close()
    return {
        "caption": caption.strip(),
        "page_height": height,
        "errors": errors,
        "broken_images": broken,
    }


# --------------------------------------------------------------------------------------------
# Report


def build_report(args: argparse.Namespace, run: dict, rows_before: dict, rows_after: dict) -> dict:
    steps = run["steps"]
    lat = [s["latency_ms"] for s in steps]
    warm = [s["latency_ms"] for s in steps[10:]]
    decisions, undos = run["decisions"], run["undos"]
    wall_min = run["wall_s"] / 60
    warm_min = (run["wall_s"] - steps[10]["t_key_s"]) / 60 if len(steps) > 10 else None
    logged = rows_after["total"] - rows_before["total"]
    by_action: dict[str, int] = {}
    for s in steps:
        by_action[s["action"]] = by_action.get(s["action"], 0) + 1
    return {
        "benchmark": "curator_bot",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "chromium": run["browser"],
            "server": "manage.py runserver --noreload (DEBUG, SQLite), same machine",
        },
        "args": {
            "var_dir": str(args.var_dir),
            "project": args.project,
            "user": args.user,
            "decisions": args.decisions,
            "port": args.port,
        },
        "think_ms": args.think_ms,
        "policy": (
            f"top-1 != given -> digit of top-1, else k; every {UNSURE_EVERY}th u; "
            f"z after every {UNDO_EVERY}th decision, then decide again"
        ),
        "decisions": decisions,
        "undos": undos,
        "net_decided": decisions - undos,
        "actions": by_action,
        "wall_minutes": round(wall_min, 3),
        "decisions_per_minute": round(decisions / wall_min, 1) if wall_min else None,
        "decisions_per_minute_excl_first10": round((decisions - 10) / warm_min, 1)
        if warm_min
        else None,
        "latency_ms": summary_ms(lat),
        "latency_ms_excl_first10": summary_ms(warm),
        "first_decisions_latency_ms": lat[:10],
        "undo_latency_ms": summary_ms([u["latency_ms"] for u in run["undo_steps"]]),
        "queue_open_to_first_item_ms": run["open_ms"],
        "server_check": {
            "rows_before": rows_before,
            "rows_after": rows_after,
            "logged": logged,
            "expected": decisions + undos,
            "ok": logged == decisions + undos,
        },
        "page_counts": {
            "start": run["start_count"],
            "end": run["end_count"],
            "after_reload": run["reload_count"],
        },
        "request_ms": {k: summary_ms(v) for k, v in sorted(run["requests"].items())},
        "problems": run["problems"],
        "console_errors": run["console_errors"],
        "failed_responses": run["failed_responses"],
        "count_mismatches": {
            "n": len(run["count_mismatches"]),
            "first": run["count_mismatches"][:5],
        },
        "overview_shot": run["overview"],
        "steps": steps,
        "undo_steps": run["undo_steps"],
    }


def print_table(r: dict) -> None:
    lat, warm = r["latency_ms"], r["latency_ms_excl_first10"]
    sc = r["server_check"]
    rows = [
        ("decisions (keys that logged a decision)", r["decisions"]),
        ("undos", r["undos"]),
        ("net items decided", r["net_decided"]),
        ("actions", ", ".join(f"{k} {v}" for k, v in sorted(r["actions"].items()))),
        ("think time per key (ms)", r["think_ms"]),
        ("wall minutes", r["wall_minutes"]),
        ("decisions per minute", r["decisions_per_minute"]),
        ("decisions per minute, first 10 excluded", r["decisions_per_minute_excl_first10"]),
        ("latency key -> next ready, median / p90 (ms)", f"{lat['median']} / {lat['p90']}"),
        ("  first 10 excluded, median / p90 (ms)", f"{warm.get('median')} / {warm.get('p90')}"),
        (
            "  first 10 decisions (ms)",
            ", ".join(f"{v:.0f}" for v in r["first_decisions_latency_ms"]),
        ),
        ("undo latency median (ms)", r["undo_latency_ms"].get("median")),
        ("queue open -> first item ready (ms)", r["queue_open_to_first_item_ms"]),
        (
            "Decision rows logged (server)",
            f"{sc['logged']} (expected {sc['expected']}: {'ok' if sc['ok'] else 'MISMATCH'})",
        ),
        (
            "page count start -> end -> reload",
            f"{r['page_counts']['start']} -> {r['page_counts']['end']} -> "
            f"{r['page_counts']['after_reload']}",
        ),
    ]
    for kind, s in r["request_ms"].items():
        rows.append((f"request {kind}: n, median / p90 / max (ms)", _req(s)))
    width = max(len(k) for k, _ in rows)
    print(f"Curator bot, {r['date']}, {r['machine']['cores']} cores")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    for p in r["problems"]:
        print(f"  PROBLEM: {p}")
    if r["count_mismatches"]["n"]:
        print(
            f"  PROBLEM: #q-count wrong after {r['count_mismatches']['n']} decisions, e.g. "
            f"{r['count_mismatches']['first'][0]}"
        )
    for e in r["failed_responses"][:10]:
        print(f"  failed response: {e}")
    for e in r["console_errors"][:10]:
        print(f"  console error: {e}")


def _req(s: dict) -> str:
    if not s.get("n"):
        return "-"
    return f"{s['n']}, {s['median']} / {s['p90']} / {s['max']}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.var_dir = Path(args.var_dir).resolve()
    if not (args.var_dir / "db.sqlite3").exists():
        raise SystemExit(f"{args.var_dir}/db.sqlite3 does not exist (copy a data directory)")
    rows_before = decision_rows(args.var_dir, args.project, args.user)
    log_path = args.var_dir / "curator-bot-server.log"
    proc = server_start(args.var_dir, args.port, log_path)
    try:
        run = run_bot(args, f"http://127.0.0.1:{args.port}")
    finally:
        server_stop(proc)
    rows_after = decision_rows(args.var_dir, args.project, args.user)
    report = build_report(args, run, rows_before, rows_after)
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    clean = not (report["problems"] or report["failed_responses"])
    return 0 if report["server_check"]["ok"] and clean else 1


if __name__ == "__main__":
    sys.exit(main())
