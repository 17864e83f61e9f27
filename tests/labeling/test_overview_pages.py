"""The label-correction pages: home, run, project overview (projection, lasso selection,
confusion matrix, strips), bulk pair review and label versions, through the test client.

The world is built without training: a succeeded ``TrainingRun`` whose arrays are written by
hand (three classes, a few items whose probabilities clearly point to another class), and a
curation project built from it synchronously.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from explanations.models import Dataset, Item
from labeling.curation import curation_project_build, curation_project_create
from labeling.models import (
    Decision,
    ItemLabel,
    LabelVersion,
    QueueEntry,
    RunStatus,
    TrainingRun,
)
from labeling.services import label_version_initial, version_labels
from labeling.views import SELECTION_KEY

CLASSES = ["top", "trouser", "bag"]
N_ITEMS = 30
# rows whose given label is wrong: the model puts 0.85 on the next class
MISLABELLED = {0: 1, 3: 1, 6: 1, 9: 1, 12: 1, 4: 2, 8: 0}


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _npy(array: np.ndarray) -> ContentFile:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return ContentFile(buf.getvalue())


@pytest.fixture
def curator(db):
    return get_user_model().objects.create_user("curator", password="pw-curator")


@pytest.fixture
def world(db, researcher, curator):
    """Dataset (3 classes, 30 items), v1, a succeeded run with synthetic arrays, and a built
    project owned by ``researcher`` and curated by ``curator`` alone."""
    dataset = Dataset.objects.create(
        name="tiny-fashion", modality="image", class_names=CLASSES, owner=researcher
    )
    items = []
    for i in range(N_ITEMS):
        label = i % 3
        item = Item(
            dataset=dataset,
            name=f"train-{i:05d}",
            sha256=f"{i:064x}",
            width=8,
            height=8,
            label_index=label,
            label_name=CLASSES[label],
            split="train",
        )
        item.image.save(f"tiny-{i}.png", ContentFile(_png(i)), save=False)
        item.save()
        items.append(item)
    v1 = label_version_initial(dataset)

    rng = np.random.default_rng(0)
    labels = np.array([i % 3 for i in range(N_ITEMS)])
    truth = labels.copy()
    for row, true in MISLABELLED.items():
        truth[row] = true
    probs = np.full((N_ITEMS, 3), 0.1)
    probs[np.arange(N_ITEMS), labels] = 0.8
    for row, true in MISLABELLED.items():
        probs[row] = 0.075
        probs[row, true] = 0.85
    probs += rng.uniform(0, 0.01, size=probs.shape)
    probs /= probs.sum(1, keepdims=True)
    centres = np.eye(3, 8) * 4
    embeddings = centres[truth] + rng.normal(0, 0.5, size=(N_ITEMS, 8))

    run = TrainingRun.objects.create(
        dataset=dataset,
        label_version=v1,
        status=RunStatus.SUCCEEDED,
        num_items=N_ITEMS,
        done=10,
        total=10,
        message="finished",
        fold_accuracy=[0.8, 0.75],
        test_accuracy=0.8125,
        test_items=16,
        seconds=3.5,
        requested_by=researcher,
    )
    run.item_ids.save("ids.npy", _npy(np.array([it.pk for it in items], dtype=np.int64)), False)
    run.pred_probs.save("probs.npy", _npy(probs.astype(np.float32)), False)
    run.embeddings.save("emb.npy", _npy(embeddings.astype(np.float32)), False)
    run.save()

    project = curation_project_create(
        run=run, name="Tiny curation", owner=researcher, curators=[curator], enqueue=False
    )
    project = curation_project_build(project_id=project.pk)
    assert project.status == RunStatus.SUCCEEDED, project.error
    return {"dataset": dataset, "items": items, "v1": v1, "run": run, "project": project}


def _login(client, user, password):
    assert client.login(username=user.username, password=password)
    return client


# --------------------------------------------------------------------------------------------
# Home and run pages


def test_home_for_staff_shows_datasets_runs_and_the_training_form(client, researcher, world):
    _login(client, researcher, "pw-researcher")
    html = client.get(reverse("labeling-home")).content.decode()
    assert f'action="{reverse("labeling-run-start")}"' in html
    assert reverse("labeling-versions", args=[world["dataset"].pk]) in html
    assert reverse("labeling-run", args=[world["run"].pk]) in html
    assert "81.3&nbsp;%" in html  # test accuracy as a percentage
    assert 'name="train_split" value="train"' in html
    assert 'name="test_split" value="test"' in html
    assert "tiny-fashion v1" in html  # the version select
    assert "Tiny curation" in html  # the owner's project


def test_home_for_a_curator_lists_projects_without_the_training_form(client, curator, world):
    _login(client, curator, "pw-curator")
    response = client.get(reverse("labeling-home"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Tiny curation" in html
    assert reverse("labeling-queue", args=[world["project"].pk]) in html
    assert reverse("labeling-run-start") not in html
    assert "Start a training run" not in html


def test_run_page_json_progress_and_project_form(client, researcher, world):
    _login(client, researcher, "pw-researcher")
    run = world["run"]
    data = client.get(reverse("labeling-run", args=[run.pk]), {"format": "json"}).json()
    assert data["status"] == "succeeded"
    assert (data["done"], data["total"], data["progress"]) == (10, 10, 1.0)
    assert data["test_accuracy"] == pytest.approx(0.8125)
    html = client.get(reverse("labeling-run", args=[run.pk])).content.decode()
    assert f'action="{reverse("labeling-project-start")}"' in html
    assert f'name="run" value="{run.pk}"' in html
    assert "prune_by_noise_rate" in html
    assert "Leave empty to curate alone" in html
    assert "81.3&nbsp;%" in html and "80.0&nbsp;%" in html  # test and fold accuracy
    assert "Tiny curation" in html  # the project built on this run
    assert "?format=json" not in html  # no polling once finished


def test_run_page_polls_while_running(client, researcher, world):
    _login(client, researcher, "pw-researcher")
    run = TrainingRun.objects.create(
        dataset=world["dataset"],
        label_version=world["v1"],
        status=RunStatus.RUNNING,
        done=3,
        total=12,
        message="fold 1/2, epoch 2",
    )
    data = client.get(reverse("labeling-run", args=[run.pk]), {"format": "json"}).json()
    assert (data["status"], data["done"], data["total"]) == ("running", 3, 12)
    assert data["progress"] == pytest.approx(0.25)
    html = client.get(reverse("labeling-run", args=[run.pk])).content.decode()
    assert "?format=json" in html and "1500" in html
    assert "width: 25%" in html
    assert f'action="{reverse("labeling-project-start")}"' not in html


# --------------------------------------------------------------------------------------------
# Overview


def test_overview_shows_confusion_cells_pairs_and_strips(client, curator, world):
    _login(client, curator, "pw-curator")
    project = world["project"]
    response = client.get(reverse("labeling-project", args=[project.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    queue = reverse("labeling-queue", args=[project.pk])
    # five items given "top" are predicted "trouser"
    assert project.summary["confusion"][0][1] == 5
    assert f'{queue}?cell=0,1"' in html
    assert f'{queue}?given=0"' in html
    assert "?cell=0,0" not in html  # the diagonal is not a link
    assert "Open my queue" in html
    assert reverse("labeling-export", args=[project.pk, "csv"]) in html
    # class pairs link to bulk review and to the queue
    pair = project.summary["pairs"][0]
    assert reverse("labeling-pair", args=[project.pk, pair["given"], pair["suggested"]]) in html
    assert f"?pair={pair['given']},{pair['suggested']}" in html
    # strips: thumbnails of queued items, pixelated
    flagged = QueueEntry.objects.filter(project=project).first()
    assert reverse("labeling-item-image", args=[project.pk, flagged.item_id]) in html
    assert "image-rendering: pixelated" in html
    # counts and agreement before any decision
    assert "No decisions yet." in html
    assert reverse("labeling-projection", args=[project.pk]) in html
    assert reverse("labeling-select", args=[project.pk]) in html
    # a curator who does not own the project cannot apply the corrections
    assert reverse("labeling-apply", args=[project.pk]) not in html


def test_overview_for_the_owner_offers_to_apply(client, researcher, world):
    _login(client, researcher, "pw-researcher")
    project = world["project"]
    html = client.get(reverse("labeling-project", args=[project.pk])).content.decode()
    assert reverse("labeling-apply", args=[project.pk]) in html


def test_overview_polls_while_the_project_builds(client, researcher, world):
    _login(client, researcher, "pw-researcher")
    project = curation_project_create(
        run=world["run"], name="Pending one", owner=researcher, enqueue=False
    )
    html = client.get(reverse("labeling-project", args=[project.pk])).content.decode()
    assert reverse("labeling-project-status", args=[project.pk]) in html
    assert "Open my queue" not in html


def test_projection_json_has_one_point_per_item(client, curator, world):
    _login(client, curator, "pw-curator")
    data = client.get(reverse("labeling-projection", args=[world["project"].pk])).json()
    assert len(data["item_ids"]) == N_ITEMS
    for key in ("x", "y", "label", "flagged", "queued"):
        assert len(data[key]) == N_ITEMS
    assert all(0 <= v <= 1 for v in data["x"] + data["y"])
    assert data["class_names"] == CLASSES
    assert "t-SNE" in data["method"]
    assert sum(data["flagged"]) == world["project"].summary["flagged"]


def test_lasso_selection_adds_entries_and_sets_the_session(client, curator, world):
    _login(client, curator, "pw-curator")
    project = world["project"]
    queued = set(QueueEntry.objects.filter(project=project).values_list("item_id", flat=True))
    fresh = [it.pk for it in world["items"] if it.pk not in queued][:3]
    old = next(iter(queued))
    before = QueueEntry.objects.filter(project=project).count()
    response = client.post(
        reverse("labeling-select", args=[project.pk]),
        data=json.dumps({"item_ids": [*fresh, old]}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["entries"] == 4
    assert body["queue"] == reverse("labeling-queue", args=[project.pk]) + "?selection=1"
    assert QueueEntry.objects.filter(project=project).count() == before + 3
    added = QueueEntry.objects.filter(project=project, item_id__in=fresh)
    assert {e.issue_type for e in added} == {"selected"}
    selection = client.session[SELECTION_KEY.format(project.pk)]
    assert set(selection) == set(
        QueueEntry.objects.filter(project=project, item_id__in=[*fresh, old]).values_list(
            "pk", flat=True
        )
    )


def test_lasso_selection_with_an_unknown_item_is_refused(client, curator, world):
    _login(client, curator, "pw-curator")
    project = world["project"]
    before = QueueEntry.objects.filter(project=project).count()
    fresh = world["items"][1].pk
    response = client.post(
        reverse("labeling-select", args=[project.pk]),
        data=json.dumps({"item_ids": [fresh, 987654]}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "987654" in response.json()["error"]
    assert QueueEntry.objects.filter(project=project).count() == before
    assert SELECTION_KEY.format(project.pk) not in client.session
    empty = client.post(
        reverse("labeling-select", args=[project.pk]),
        data=json.dumps({"item_ids": []}),
        content_type="application/json",
    )
    assert empty.status_code == 400 and empty.json()["error"]


# --------------------------------------------------------------------------------------------
# Bulk review of a class pair


def test_pair_page_lists_the_pair_and_relabels_the_checked_entries(client, curator, world):
    _login(client, curator, "pw-curator")
    project = world["project"]
    # "top" items that look like "trouser"
    url = reverse("labeling-pair", args=[project.pk, 0, 1])
    entries = list(QueueEntry.objects.filter(project=project, given_label=0, suggested_label=1))
    assert len(entries) == 5
    html = client.get(url).content.decode()
    for e in entries:
        assert f'name="entry" value="{e.pk}"' in html
    other = QueueEntry.objects.filter(project=project, given_label=1, suggested_label=2).first()
    assert other is not None and f'name="entry" value="{other.pk}"' not in html
    assert 'name="to_label" value="0"' in html and 'name="to_label" value="1"' in html
    assert 'name="action" value="keep"' in html

    chosen = entries[:3]
    response = client.post(
        url,
        {"entry": [str(e.pk) for e in chosen], "action": "relabel", "to_label": "1"},
        follow=True,
    )
    assert response.status_code == 200
    assert "3 decision(s) recorded." in response.content.decode()
    logged = Decision.objects.filter(project=project, curator=curator)
    assert logged.count() == 3
    assert {d.entry_id for d in logged} == {e.pk for e in chosen}
    assert {(d.action, d.from_label, d.to_label) for d in logged} == {("relabel", 0, 1)}
    assert all(d.shown.get("view") == "pair" for d in logged)
    # the page now shows the decisions
    html = response.content.decode()
    assert html.count('data-decided="1"') == 3


def test_pair_page_with_the_same_class_twice_is_404(client, curator, world):
    _login(client, curator, "pw-curator")
    url = reverse("labeling-pair", args=[world["project"].pk, 1, 1])
    assert client.get(url).status_code == 404


# --------------------------------------------------------------------------------------------
# Label versions


def test_versions_upload_of_an_export_creates_v2_and_keeps_v1(client, researcher, curator, world):
    project = world["project"]
    entries = list(QueueEntry.objects.filter(project=project, given_label=0, suggested_label=1))
    _login(client, curator, "pw-curator")
    client.post(
        reverse("labeling-pair", args=[project.pk, 0, 1]),
        {"entry": [str(e.pk) for e in entries], "action": "relabel", "to_label": "1"},
    )
    exported = client.get(reverse("labeling-export", args=[project.pk, "csv"]))
    assert exported.status_code == 200
    csv_bytes = b"".join(exported.streaming_content) if exported.streaming else exported.content
    assert csv_bytes.count(b"relabelled") == 5

    v1 = world["v1"]
    before = version_labels(v1)
    client.logout()
    _login(client, researcher, "pw-researcher")
    url = reverse("labeling-versions", args=[world["dataset"].pk])
    response = client.post(
        url,
        {"version": v1.pk, "file": SimpleUploadedFile("fixes.csv", csv_bytes, "text/csv")},
        follow=True,
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Imported as labels v2." in html
    v2 = LabelVersion.objects.get(dataset=world["dataset"], number=2)
    assert v2.parent == v1 and v2.source == "upload" and v2.changed == 5
    after = version_labels(v2)
    assert all(after[e.item_id] == 1 for e in entries)
    assert version_labels(v1) == before  # the parent is unchanged
    assert reverse("labeling-version-csv", args=[v2.pk]) in html
    assert "fixes.csv" in html
    # the run on v1 shows its accuracy; v2 has no run yet
    assert "81.3&nbsp;%" in html


def test_versions_upload_of_a_bad_file_creates_nothing(client, researcher, world):
    _login(client, researcher, "pw-researcher")
    url = reverse("labeling-versions", args=[world["dataset"].pk])
    labels_before = ItemLabel.objects.count()
    bad = b"item_id,new_label,outcome\r\n999999,1,relabelled\r\n"
    response = client.post(
        url,
        {"version": world["v1"].pk, "file": SimpleUploadedFile("bad.csv", bad, "text/csv")},
        follow=True,
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "row 2: item 999999 is not in" in html  # the error message, shown on the page
    assert LabelVersion.objects.filter(dataset=world["dataset"]).count() == 1
    assert ItemLabel.objects.count() == labels_before


def test_versions_page_shows_the_accuracy_difference_data(client, researcher, world):
    _login(client, researcher, "pw-researcher")
    html = client.get(reverse("labeling-versions", args=[world["dataset"].pk])).content.decode()
    assert 'data-acc="0.812500"' in html
    assert 'data-version="1"' in html
    assert 'enctype="multipart/form-data"' in html


# --------------------------------------------------------------------------------------------
# Access


def test_an_outsider_gets_404_everywhere(client, outsider, world):
    _login(client, outsider, "pw-outsider")
    pk = world["project"].pk
    for url in (
        reverse("labeling-project", args=[pk]),
        reverse("labeling-projection", args=[pk]),
        reverse("labeling-pair", args=[pk, 0, 1]),
        reverse("labeling-export", args=[pk, "csv"]),
        reverse("labeling-export", args=[pk, "json"]),
    ):
        assert client.get(url).status_code == 404, url
    response = client.post(
        reverse("labeling-select", args=[pk]),
        data=json.dumps({"item_ids": [world["items"][1].pk]}),
        content_type="application/json",
    )
    assert response.status_code == 404
    assert not Decision.objects.exists()
    # and the outsider's home lists no project
    assert "Tiny curation" not in client.get(reverse("labeling-home")).content.decode()
