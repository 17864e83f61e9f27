"""Count SQL queries and Redis round trips per participant request (one participant, in-process).

Run from the repository root with the benchmark environment (see run_all.sh):
    DJANGO_SETTINGS_MODULE=benchmarks.bench_settings python benchmarks/count_queries.py SLUG
It enrols one extra participant in the benchmark study (it is not counted by load.py's checks,
which only look at participants created during a run).
"""

import os
import re
import sys
import time

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.bench_settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

slug = sys.argv[1] if len(sys.argv) > 1 else "hive-demo-grad-cam-on-efficientnet-lite0"
redis_calls = {"n": 0}
try:
    import redis.client

    _orig = redis.client.Redis.execute_command

    def _counting(self, *args, **kwargs):
        redis_calls["n"] += 1
        return _orig(self, *args, **kwargs)

    redis.client.Redis.execute_command = _counting
except ImportError:
    pass

c = Client(HTTP_HOST="127.0.0.1", enforce_csrf_checks=False)


def call(name, method, path, **kw):
    redis_calls["n"] = 0
    with CaptureQueriesContext(connection) as ctx:
        t0 = time.perf_counter()
        r = getattr(c, method)(path, **kw)
        dt = (time.perf_counter() - t0) * 1000
    kinds = {}
    for q in ctx.captured_queries:
        verb = q["sql"].split()[0].upper()
        kinds[verb] = kinds.get(verb, 0) + 1
    print(
        f"{name:<14} {r.status_code}  {len(ctx.captured_queries):3d} SQL {kinds}  "
        f"{redis_calls['n']} redis  {dt:6.1f} ms"
    )
    return r, ctx


r, _ = call("enrol", "get", f"/s/{slug}/")
page = r["Location"]
token = re.search(r"/p/([0-9a-f-]{36})/", page).group(1)
call("page(consent)", "get", page)
call("consent", "post", f"{page}consent", data={"consent": "yes"})
call("instructions", "post", f"{page}instructions")
r, _ = call("state", "get", f"/api/p/{token}/")
state = r.json()
n = 0
while state.get("stage") != "debrief" and n < 50:
    t = state["trial"]
    r, ctx = call(
        f"submit #{t['position']}",
        "post",
        f"/api/p/{token}/",
        data={"position": t["position"], "answer": t["options"][0]["value"], "rt_ms": 1000},
        content_type="application/json",
    )
    if n == 0:
        for q in ctx.captured_queries:
            print("      ", q["sql"][:150])
    state = r.json()
    n += 1
call("debrief", "get", page)
