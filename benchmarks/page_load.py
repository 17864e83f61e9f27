"""Participant page load times in Chromium (a benchmark, not part of the test suite).

    .venv/bin/python -m pytest benchmarks/page_load.py -s -p no:cacheprovider

Serves a study with every task type (Django's live server, SQLite, DEBUG off) and loads each
participant page 5 times in Debian's Chromium through Playwright; reports the median and
maximum of the Navigation Timing ``loadEventEnd`` (request start to the load event: HTML,
images and scripts) per page. Target (issue 6): every page under 1 s locally.
"""

from __future__ import annotations

import statistics

import pytest
from playwright.sync_api import Page

from studies.design import study_create
from tests.browser.conftest import browser_type_launch_args  # noqa: F401  (system Chromium)
from tests.conftest import _fresh_cache, researcher  # noqa: F401
from tests.studies.conftest import engine_world, spec_for  # noqa: F401

LOADS = 5
TARGET_MS = 1000.0


def _load_ms(page: Page) -> float:
    page.reload(wait_until="load")
    return page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")


@pytest.mark.django_db(transaction=True)
def test_participant_page_load_times(page: Page, live_server, engine_world, researcher):  # noqa: F811
    model, dataset = engine_world
    tasks = ["agreement", "distinction", "output_prediction", "similarity", "region_annotation"]
    surveys = ["likert_understanding", "tradeoff", "demographics", "free_text"]
    study = study_create(
        spec=spec_for(
            model,
            dataset,
            tasks=[{"type": t} for t in tasks],
            task_assignment="within",
            trials={"per_participant": 1},
            questionnaires=[{"type": t} for t in surveys],
        ),
        owner=researcher,
        open_now=True,
    )
    rows = []

    def measure(name: str) -> None:
        times = [_load_ms(page) for _ in range(LOADS)]
        rows.append((name, statistics.median(times), max(times)))

    page.goto(f"{live_server.url}/s/{study.slug}/")
    measure("consent")
    page.get_by_label("I have read the above and agree to take part.").check()
    page.get_by_role("button", name="Continue").click()
    measure("instructions")
    page.get_by_role("button", name="Start").click()
    while page.locator("#trial-form").count():
        task = page.locator("#trial-form").get_attribute("data-task")
        measure(f"trial: {task}")
        if task == "region_annotation":
            page.locator(".cell input").first.check(force=True)
        elif task == "tradeoff":
            pass
        elif task == "demographics":
            for field in ("age", "gender", "ml_experience"):
                page.locator(f"#demo-{field}").select_option(index=1)
        elif task == "free_text":
            page.fill("#answer-text", "ok")
        else:
            page.locator("input[name=answer]").first.check()
        page.get_by_role("button", name="Next").click()
    measure("debrief")
    print()
    print(f"| page | median ms | max ms | < {TARGET_MS:.0f} ms |")
    print("|---|--:|--:|---|")
    for name, med, worst in rows:
        print(f"| {name} | {med:.0f} | {worst:.0f} | {'yes' if med < TARGET_MS else 'NO'} |")
