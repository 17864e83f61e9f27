"""The curator's queue in Chromium: sign in, decide with the keyboard, undo, skip."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from labeling.models import Assignment, Decision
from tests.labeling.conftest import (  # noqa: F401  (fixtures)
    curator,
    finished_run,
    project,
    small_dataset,
)


def test_a_curator_works_the_queue_with_the_keyboard(
    page: Page,
    live_server,
    project,  # noqa: F811 (the fixture imported above)
    curator,  # noqa: F811
):
    page.goto(f"{live_server.url}/label/projects/{project.pk}/queue/")
    page.fill("#id_username", "curator")
    page.fill("#id_password", "pw-curator")
    page.click("button[type=submit]")
    expect(page.locator("#q-meta")).to_contain_text("#1 ")
    expect(page.locator("#q-given")).to_have_text("ant")
    page.keyboard.press("2")  # relabel as the second class, "bee"
    expect(page.locator("#q-status")).to_contain_text("relabelled as bee")
    expect(page.locator("#q-meta")).to_contain_text("#2 ")
    expect(page.locator("#q-count")).to_have_text("1 of 5 decided")
    page.keyboard.press("z")
    expect(page.locator("#q-status")).to_contain_text("Undone")
    expect(page.locator("#q-meta")).to_contain_text("#1 ")
    expect(page.locator("#q-count")).to_have_text("0 of 5 decided")
    page.keyboard.press("k")
    expect(page.locator("#q-meta")).to_contain_text("#2 ")
    page.keyboard.press("n")  # skip without deciding
    expect(page.locator("#q-meta")).to_contain_text("#3 ")
    page.keyboard.press("x")
    expect(page.locator("#q-meta")).to_contain_text("#4 ")
    actions = list(Decision.objects.order_by("pk").values_list("action", flat=True))
    assert actions == ["relabel", "undo", "keep", "remove"]
    standing = Assignment.objects.filter(curator=curator, decision__isnull=False)
    assert sorted(a.entry.rank for a in standing) == [0, 2]
    shown = Decision.objects.get(action="keep").shown
    assert shown["view"] == "queue" and shown["rank"] == 0 and shown["gradcam"] == [0, 1]
