#!/usr/bin/env python3
"""Screenshots of the prototype and concept tasks in ``docs/``, from the real Fashion-MNIST
models that ``benchmarks/explanation_types_e2e.sh`` trains and explains:

    STUDYPLATFORM_VAR_DIR=/tmp/e2e-var .venv/bin/python docs/explanation_types_screens.py

Builds two one-condition studies (HIVE's prototype agreement task with its per-prototype
ratings; a concept distinction task showing 6 concepts per candidate), serves them with
``runserver`` and photographs each one's first trial in Debian's Chromium (Playwright).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyplatform.settings.base")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402

from labeling.models import TrainingRun  # noqa: E402
from studies.design import study_create  # noqa: E402
from studies.models import Study  # noqa: E402

PORT = 8765


def _model(architecture: str):
    return TrainingRun.objects.filter(architecture=architecture, status="succeeded").latest("pk")


def _study(slug: str, condition: dict, task: str, model_name: str) -> Study:
    study = Study.objects.filter(slug=slug).first()
    if study:
        return study
    return study_create(
        spec={
            "version": 1,
            "title": "Which class is it?" if task == "distinction" else "Is the model right?",
            "slug": slug,
            "model": model_name,
            "dataset": "fashion-mnist",
            "items": {"split": "test"},
            "conditions": [condition],
            "tasks": [{"type": task}],
            "trials": {"per_participant": 3, "seed": 3},
        },
        owner=get_user_model().objects.filter(is_superuser=True).first(),
        open_now=True,
    )


def main() -> int:
    from playwright.sync_api import sync_playwright

    proto = _model("protopnet").classifier
    cbm = _model("cbm").classifier
    shots = [
        (
            _study(
                "doc-prototypes",
                {"name": "prototypes", "method": "prototypes"},
                "agreement",
                proto.name,
            ),
            ROOT / "docs/prototype-agreement-trial.png",
        ),
        (
            _study(
                "doc-concepts",
                {"name": "concepts", "method": "concepts", "max_concepts": 6},
                "distinction",
                cbm.name,
            ),
            ROOT / "docs/concept-distinction-trial.png",
        ),
    ]
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{PORT}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/admin/login/", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            for study, out in shots:
                page = browser.new_page(viewport={"width": 1000, "height": 900})
                page.goto(f"http://127.0.0.1:{PORT}/s/{study.slug}/")
                page.get_by_label("I have read the above and agree to take part.").check()
                page.get_by_role("button", name="Continue").click()
                page.get_by_role("button", name="Start").click()
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#trial-form img')]"
                    ".every(i => i.complete && i.naturalWidth > 0)"
                )
                page.screenshot(path=str(out), full_page=True)
                print(f"wrote {out.relative_to(ROOT)}")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
