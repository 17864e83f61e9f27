"""The README's main command, headless: a real worker process, a real broker-less queue, bots
over real HTTP, and the printed results table."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_runs_a_whole_study_through_a_real_celery_worker(tmp_path):
    # The embedded default: no database or broker server, whatever the suite runs on.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(
        STUDYPLATFORM_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="studyplatform.settings.base",
        DEMO_PASSWORD="pw-demo",
    )
    run = subprocess.run(
        [sys.executable, "manage.py", "demo", "--no-serve", "--participants", "4"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "started Celery worker pid" in out
    assert re.search(r"job #1: succeeded, 10/10 items, 0 failed", out)
    assert "14 trials (7 agreement + 7 distinction)" in out
    assert "each participant does one task" in out
    rows = re.findall(
        r"^(agreement|distinction)\s+(all|model right|model wrong)\s+(\d+)", out, re.M
    )
    counts = {(task, model): int(n) for task, model, n in rows}
    assert counts[("agreement", "all")] == 2 * 7 and counts[("distinction", "all")] == 2 * 7
    assert counts[("agreement", "model right")] + counts[("agreement", "model wrong")] == 14
    assert "password 'pw-demo'" in out and "/admin/login/?next=/r/" in out
    assert (tmp_path / "db.sqlite3").exists()
