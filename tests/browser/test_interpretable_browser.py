"""Prototype and concept tasks in a real browser (Chromium), desktop and phone: every
prototype rated by mouse, the concept sums readable without horizontal scrolling, and the
whole rating row reachable with the keyboard."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from studies.design import study_create
from studies.models import Response
from tests import interpretable_world as world
from tests.browser.test_participant_browser import PHONE, _begin, _tab_to, _task


@pytest.fixture
def explanation_types_study(db, tmp_path, researcher):
    dataset = world.shapes_dataset(train=10, test=3)
    protopnet = world.train(dataset, "protopnet", tmp_path).classifier
    cbm = world.train(dataset, "cbm", tmp_path).classifier
    world.explain(protopnet, dataset, "prototypes")
    world.explain(cbm, dataset, "concepts")
    return study_create(
        spec={
            "version": 1,
            "title": "Prototypes and concepts",
            "model": protopnet.name,
            "dataset": dataset.name,
            "items": {"split": "test"},
            "conditions": [
                {"name": "prototypes", "method": "prototypes"},
                {"name": "concepts", "method": "concepts", "model": cbm.name, "max_concepts": 2},
            ],
            "condition_assignment": "within",
            "tasks": [{"type": "agreement"}, {"type": "distinction"}],
            "task_assignment": "within",
            "trials": {"seed": 0, "order": "fixed"},
        },
        owner=researcher,
        open_now=True,
    )


@pytest.mark.parametrize("viewport", [None, PHONE], ids=["desktop", "phone"])
def test_prototype_and_concept_trials_complete_with_the_mouse(
    page: Page, live_server, explanation_types_study, viewport
):
    if viewport:
        page.set_viewport_size(viewport)
    _begin(page, live_server, explanation_types_study)
    kinds = set()
    while _task(page) is not None:
        if viewport:
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        page.wait_for_function(  # every stimulus loads (a broken image never does)
            "() => [...document.querySelectorAll('#trial-form img')]"
            ".every(i => i.complete && i.naturalWidth > 0)",
            timeout=10_000,
        )
        ratings = page.locator(".prototype .rating")
        if ratings.count():
            kinds.add("rated prototypes")
            before = Response.objects.count()
            page.locator("input[name=answer]").first.check()
            page.get_by_role("button", name="Next").click()  # unrated: the browser refuses
            assert _task(page) == "agreement" and Response.objects.count() == before
            for j in range(ratings.count()):
                ratings.nth(j).get_by_label("Very similar").check()
        if page.locator("table.concepts").count():
            kinds.add("concepts")
        if page.locator(".evidence .prototypes").count():
            kinds.add("candidate prototypes")
        page.locator("input[name=answer]").first.check()
        page.get_by_role("button", name="Next").click()
    expect(page.locator("#completion-code")).to_have_text(explanation_types_study.completion_code)
    assert kinds == {"rated prototypes", "concepts", "candidate prototypes"}
    rated = [r for r in Response.objects.all() if r.data.get("ratings")]
    assert rated and all(r.data["ratings"] == [4, 4, 4] for r in rated)


def test_prototype_ratings_with_the_keyboard_only(page: Page, live_server, explanation_types_study):
    _begin(page, live_server, explanation_types_study)
    while _task(page) is not None and not page.locator(".prototype .rating").count():
        page.locator("input[name=answer]").first.check()
        page.get_by_role("button", name="Next").click()
    assert page.locator(".prototype .rating").count() == 3
    for j in range(3):
        _tab_to(page, f"input[name=rating-{j}]")
        page.keyboard.press("ArrowRight")  # radio group: arrows move and select
    _tab_to(page, "input[name=answer]")
    page.keyboard.press("Space")
    _tab_to(page, "#next")
    position = page.locator("input[name=position]").input_value()
    page.keyboard.press("Enter")
    expect(page.locator("input[name=position]")).not_to_have_value(position)
    stored = [r for r in Response.objects.all() if r.data.get("ratings")]
    assert len(stored) == 1 and len(stored[0].data["ratings"]) == 3
