"""Participant flows in a real browser (Chromium): desktop and phone, mouse and keyboard
only, Enter in a text field, back button and reload, labels and focus order."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from studies.design import study_create
from studies.models import Participant, ParticipantStage, Response
from tests.studies.conftest import spec_for

ITEM_TASKS = ["agreement", "distinction", "output_prediction", "similarity", "region_annotation"]
SURVEYS = ["likert_understanding", "tradeoff", "demographics", "free_text"]
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def full_study(engine_world, researcher):
    model, dataset = engine_world
    return study_create(
        spec=spec_for(
            model,
            dataset,
            tasks=[{"type": t} for t in ITEM_TASKS],
            task_assignment="within",
            trials={"per_participant": 1, "practice": 1},
            questionnaires=[{"type": t} for t in SURVEYS],
        ),
        owner=researcher,
        open_now=True,
    )


def _begin(page: Page, live_server, study) -> str:
    page.goto(f"{live_server.url}/s/{study.slug}/")
    page.get_by_label("I have read the above and agree to take part.").check()
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Start").click()
    return page.url.rstrip("/").split("/")[-1]


def _task(page: Page) -> str | None:
    form = page.locator("#trial-form")
    return form.get_attribute("data-task") if form.count() else None


def _answer_with_mouse(page: Page, task: str) -> None:
    if task == "region_annotation":
        box = page.locator("#region-canvas").bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
        expect(page.locator("#region-status")).to_contain_text("1 box(es)")
    elif task == "tradeoff":
        page.locator("#slider-high").fill("90")
    elif task == "demographics":
        page.select_option("#demo-age", "25-34")
        page.select_option("#demo-gender", "na")
        page.select_option("#demo-ml_experience", "some")
    elif task == "free_text":
        page.fill("#answer-text", "The red areas.")
    else:
        page.locator("input[name=answer]").first.check()
    page.get_by_role("button", name="Next").click()


@pytest.mark.parametrize("viewport", [None, PHONE], ids=["desktop", "phone"])
def test_every_task_type_completes_with_the_mouse(page: Page, live_server, full_study, viewport):
    if viewport:
        page.set_viewport_size(viewport)
    token = _begin(page, live_server, full_study)
    seen = []
    while (task := _task(page)) is not None:
        seen.append(task)
        if viewport:  # nothing wider than the phone's screen
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        _answer_with_mouse(page, task)
    # each item task in its block (practice page, then the main trial), then the questionnaires
    assert list(dict.fromkeys(seen)) == ITEM_TASKS + SURVEYS
    expect(page.locator("#completion-code")).to_have_text(full_study.completion_code)
    participant = Participant.objects.get(token=token)
    assert participant.stage == ParticipantStage.DEBRIEF
    assert Response.objects.filter(participant=participant).count() == len(participant.trial_order)
    region = Response.objects.get(
        participant=participant, trial__task_type="region_annotation", trial__kind="main"
    )
    assert len(region.data["boxes"]) == 1 and region.data["area"] > 0.2
    assert all(r.rt_ms and r.rt_ms > 0 for r in Response.objects.filter(participant=participant))


def _tab_to(page: Page, selector: str, limit: int = 120) -> None:
    """Press Tab until the focused element matches ``selector`` (reachable by keyboard)."""
    for _ in range(limit):
        if page.evaluate(
            "s => document.activeElement && document.activeElement.matches(s)", selector
        ):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} is not reachable with Tab")


def test_keyboard_only_completion(page: Page, live_server, full_study):
    page.goto(f"{live_server.url}/s/{full_study.slug}/")
    page.keyboard.press("Tab")  # first focusable: the consent radio group
    page.keyboard.press("Space")
    page.keyboard.press("Tab")  # the radio group is one tab stop: next is Continue
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Instructions")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Start
    page.wait_for_selector("#trial-form")
    while (task := _task(page)) is not None:
        page.wait_for_load_state()
        position = page.locator("input[name=position]").get_attribute("value")
        if task in ("tradeoff",):
            _tab_to(page, "#slider-low")
            page.keyboard.press("ArrowRight")
        elif task == "demographics":
            for field in ("age", "gender", "ml_experience"):
                _tab_to(page, f"#demo-{field}")
                page.keyboard.press("ArrowDown")
        elif task == "free_text":
            _tab_to(page, "#answer-text")
            page.keyboard.type("Typed with the keyboard.")
        elif task == "region_annotation":
            _tab_to(page, ".cell input")
            page.keyboard.press("Space")
        else:
            _tab_to(page, "input[name=answer]")
            page.keyboard.press("Space")
        _tab_to(page, "#next")
        page.keyboard.press("Enter")
        page.wait_for_function(
            f"!document.querySelector('input[name=position]') || document.querySelector('input[name=position]').value !== '{position}'"
        )
    expect(page.locator("#completion-code")).to_have_text(full_study.completion_code)


def test_enter_in_a_text_field_neither_reloads_nor_skips(
    page: Page, live_server, engine_world, researcher
):
    model, dataset = engine_world
    study = study_create(
        spec=spec_for(
            model, dataset, trials={"per_participant": 1}, questionnaires=[{"type": "free_text"}]
        ),
        owner=researcher,
        open_now=True,
    )
    _begin(page, live_server, study)
    page.locator("input[name=answer]").first.check()
    page.get_by_role("button", name="Next").click()
    page.fill("#answer-text", "first line")
    _tab_to(page, "#answer-text")
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    page.keyboard.type("second line")
    assert _task(page) == "free_text"
    assert page.input_value("#answer-text") == "first line\nsecond line"


def test_back_button_and_reload_resume_at_the_current_trial(
    page: Page, live_server, engine_world, researcher
):
    model, dataset = engine_world
    study = study_create(spec=spec_for(model, dataset), owner=researcher, open_now=True)
    token = _begin(page, live_server, study)
    page.locator("input[name=answer]").first.check()
    page.get_by_role("button", name="Next").click()
    expect(page.locator("input[name=position]")).to_have_value("1")
    page.go_back()  # the browser may show the old trial 1 page from its history
    page.reload()
    expect(page.locator("input[name=position]")).to_have_value("1")
    page.go_back()
    if (
        page.locator("input[name=position]").count()
        and page.locator("input[name=position]").input_value() == "0"
    ):
        page.locator("input[name=answer]").nth(2).check()
        page.get_by_role("button", name="Next").click()  # a stale re-submit changes nothing
    expect(page.locator("input[name=position]")).to_have_value("1")
    answers = Response.objects.filter(participant__token=token)
    assert answers.count() == 1 and answers.get().answer == "1"


def test_every_control_has_a_label_and_focus_follows_reading_order(
    page: Page, live_server, full_study
):
    _begin(page, live_server, full_study)
    while (task := _task(page)) is not None:
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map(el => el.outerHTML)"""
        )
        assert unlabelled == [], (task, unlabelled)
        tops = page.evaluate(
            """() => [...document.querySelectorAll('#trial-form input:not([type=hidden]), #trial-form select, #trial-form textarea, #trial-form button')]
                 .map(el => el.getBoundingClientRect().top + window.scrollY)"""
        )
        assert tops == sorted(tops) or task == "region_annotation", task
        _answer_with_mouse(page, task)
