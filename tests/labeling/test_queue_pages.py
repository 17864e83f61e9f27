"""The curator's queue over HTTP: the page, the next-entry JSON, decisions, undo, images."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from labeling.models import Decision, QueueEntry


@pytest.fixture
def curator_client(client, curator):
    client.force_login(curator)
    return client


def _post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_the_queue_page_lists_a_key_per_class(curator_client, project):
    r = curator_client.get(f"/label/projects/{project.pk}/queue/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "<kbd>1</kbd>ant" in html and "<kbd>3</kbd>cat" in html
    assert "0 of 5 decided" in html


def test_next_json_shows_what_the_curator_needs(curator_client, project):
    r = curator_client.get(f"/label/projects/{project.pk}/queue/next.json")
    p = r.json()
    first = QueueEntry.objects.get(project=project, rank=0)
    assert p["entry"] == first.pk and p["given"] == {"index": 0, "name": "ant"}
    assert p["other"] == {"index": 1, "name": "bee"}
    assert [t["name"] for t in p["top3"]] == ["bee", "cat", "ant"]
    assert p["gradcam"]["given"].endswith("/gradcam/0.png")
    assert len(p["neighbours"]["given"]) == 4 and p["decision"] is None
    assert p["counts"] == {"total": 5, "decided": 0, "pending": 5}
    after = curator_client.get(f"/label/projects/{project.pk}/queue/next.json?after=0").json()
    assert after["rank"] == 1
    cell = curator_client.get(f"/label/projects/{project.pk}/queue/next.json?given=2").json()
    assert cell["item_name"] == "train-00020" and cell["counts"]["total"] == 1


def test_decide_undo_and_a_stale_page(curator_client, project, curator):
    url = f"/label/projects/{project.pk}"
    first = QueueEntry.objects.get(project=project, rank=0)
    r = _post(
        curator_client,
        f"{url}/decide/",
        {
            "entry": first.pk,
            "action": "relabel",
            "to_label": 1,
            "duration_ms": 850,
            "shown": {"view": "queue", "rank": 0},
        },
    )
    assert r.status_code == 200 and r.json()["created"] is True
    d = Decision.objects.get()
    assert (d.curator, d.to_label, d.duration_ms, d.shown["view"]) == (curator, 1, 850, "queue")
    # the same keypress delivered twice is one decision
    assert (
        _post(
            curator_client,
            f"{url}/decide/",
            {"entry": first.pk, "action": "relabel", "to_label": 1},
        ).json()["created"]
        is False
    )
    # a second tab that still shows the undecided item cannot overwrite it silently
    stale = _post(curator_client, f"{url}/decide/", {"entry": first.pk, "action": "remove"})
    assert stale.status_code == 409 and Decision.objects.count() == 1
    assert curator_client.get(f"{url}/queue/next.json").json()["rank"] == 1
    undo = _post(curator_client, f"{url}/undo/", {})
    assert undo.json() == {"undone": d.pk, "entry": first.pk}
    assert curator_client.get(f"{url}/queue/next.json").json()["rank"] == 0
    assert _post(curator_client, f"{url}/undo/", {}).status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"entry": "x", "action": "keep"},
        {"action": "keep"},
        {"entry": 10**9, "action": "keep"},
        {"entry": "{first}", "action": "relabel", "to_label": 9},
        {"entry": "{first}", "action": "relabel", "to_label": "bee"},
        {"entry": "{first}", "action": "explode"},
    ],
)
def test_bad_decisions_get_400_and_log_nothing(curator_client, project, body):
    first = QueueEntry.objects.get(project=project, rank=0)
    body = {k: (first.pk if v == "{first}" else v) for k, v in body.items()}
    r = _post(curator_client, f"/label/projects/{project.pk}/decide/", body)
    assert r.status_code == 400 and "error" in r.json()
    assert not Decision.objects.exists()


def test_outsiders_see_nothing_of_a_project(client, project, db):
    outsider = get_user_model().objects.create_user("nosy", password="pw")
    client.force_login(outsider)
    item = project.dataset.items.first()
    base = f"/label/projects/{project.pk}"
    for url in (
        f"{base}/queue/",
        f"{base}/queue/next.json",
        f"{base}/items/{item.pk}.png",
        f"{base}/export.csv",
    ):
        assert client.get(url).status_code == 404, url
    first = QueueEntry.objects.get(project=project, rank=0)
    assert (
        _post(client, f"{base}/decide/", {"entry": first.pk, "action": "keep"}).status_code == 404
    )
    client.logout()
    assert client.get(f"{base}/queue/").status_code == 302  # to the login page


def test_item_images_are_served_only_for_the_projects_dataset(curator_client, project, db):
    from explanations.models import Dataset, Item

    item = project.dataset.items.first()
    r = curator_client.get(f"/label/projects/{project.pk}/items/{item.pk}.png")
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    other = Dataset.objects.create(name="other")
    stranger = Item.objects.create(dataset=other, name="s", sha256="f" * 64, width=1, height=1)
    assert (
        curator_client.get(f"/label/projects/{project.pk}/items/{stranger.pk}.png").status_code
        == 404
    )


def test_forms_with_non_numeric_ids_get_404_not_500(client, researcher, project):
    client.force_login(researcher)
    assert client.post("/label/runs/start/", {"dataset": "x"}).status_code == 404
    assert client.post("/label/projects/start/", {"run": ""}).status_code == 404
    url = f"/label/datasets/{project.dataset.pk}/versions/"
    assert client.post(url, {"version": "abc"}).status_code == 404


def test_a_curator_signs_in_on_the_curation_login_page(client, project, curator):
    queue = f"/label/projects/{project.pk}/queue/"
    r = client.get(queue)
    assert r.status_code == 302 and r["Location"].startswith("/label/login/?next=")
    r = client.post(r["Location"], {"username": "curator", "password": "wrong", "next": queue})
    assert r.status_code == 200 and "do not match" in r.content.decode()
    r = client.post(
        "/label/login/", {"username": "curator", "password": "pw-curator", "next": queue}
    )
    assert r.status_code == 302 and r["Location"] == queue
    assert client.get(queue).status_code == 200
    r = client.post("/label/logout/")
    assert r.status_code == 302 and r["Location"] == "/label/login/"
    assert client.get(queue).status_code == 302
