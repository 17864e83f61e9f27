#!/usr/bin/env python3
"""Render the example report in ``docs/``: after ``make demo``, a Grad-CAM vs no-explanation
study (docs/specs/hive-gradcam.yaml, but open to the public link) answered through the real
pages by 48 model-based simulated participants, then ``manage.py analyze --html``.

    .venv/bin/python docs/example_report.py    # writes docs/example-report.html
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyplatform.settings.base")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from studies.design import study_create  # noqa: E402
from studies.models import Study  # noqa: E402
from studies.simulation import ResponseModel, simulated_participant_run  # noqa: E402
from studies.spec import spec_file_load  # noqa: E402

TITLE = "Example report: Grad-CAM vs no explanation (simulated participants)"


def main() -> int:
    spec = spec_file_load(ROOT / "docs/specs/hive-gradcam.yaml")
    spec["title"] = TITLE
    spec["recruitment"] = {"mode": "public", "max_participants": 200}
    study = Study.objects.filter(title=TITLE).first()
    if study is None:
        owner = get_user_model().objects.filter(username="researcher").first()
        study = study_create(spec=spec, owner=owner, open_now=True)
        # Heatmaps help when the model is right and mislead when it is wrong (HIVE's finding).
        rm = ResponseModel(
            accuracy={
                "gradcam": {"right": 0.85, "wrong": 0.35},
                "none": {"right": 0.6, "wrong": 0.55},
            }
        )
        for seed in range(48):
            simulated_participant_run(client=Client(), study=study, rm=rm, seed=seed)
    call_command("analyze", study.slug, "--html", str(ROOT / "docs/example-report.html"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
