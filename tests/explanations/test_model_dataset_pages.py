"""Researcher pages for models and datasets: /r/models/..., /r/datasets/..., /r/items/....

Rules (as for /r/jobs/: ``staff_member_required``): any staff user gets the page, ownership
does not matter; everyone else, logged in or not, is redirected (302) to the admin login; an
unknown id is 404 for staff; a form posted without its CSRF token is 403.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils.html import escape
from PIL import Image

from explanations.models import (
    ClassifierModel,
    Dataset,
    DatasetImportJob,
    Item,
    JobStatus,
    Prediction,
    Region,
    RegionKind,
)
from explanations.services import dataset_import_job_run
from explanations.services import datasets as dataset_services
from tests.explanations.test_byo_rejections import zip_bytes
from tests.explanations.test_byo_roundtrip import (
    FACTORY,
    colour_state_dict,
    png,
    square_image,
    write_classes,
    write_weights,
)

MODEL_CLASSES = ["cat", "dog", "fox"]


def login(user, password) -> Client:
    client = Client()
    assert client.login(username=user.username, password=password)
    return client


@pytest.fixture
def staff(researcher) -> Client:
    return login(researcher, "pw-researcher")


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def item_create(dataset, name, label=None, *, size=(40, 30), split="") -> Item:
    rng = np.random.default_rng(len(name) * 31 + sum(map(ord, name)))
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    item = Item(
        dataset=dataset,
        name=name,
        sha256=name.ljust(64, "0")[:64],
        width=size[0],
        height=size[1],
        label_index=dataset.class_names.index(label) if label else None,
        label_name=label or "",
        split=split,
    )
    item.image.save(f"{name}.png", ContentFile(png(pixels)), save=False)
    item.save()
    return item


def predict(model, item, predicted: str) -> Prediction:
    index = model.class_names.index(predicted)
    others = [c for c in range(model.num_classes) if c != index]
    topk = [{"index": index, "name": predicted, "probability": 0.7}] + [
        {"index": c, "name": model.class_names[c], "probability": 0.1} for c in others
    ]
    return Prediction.objects.create(
        model=model, item=item, topk=topk, predicted_index=index, probability=0.7
    )


#: (item, true label, predicted): 6 scored (3 right), 1 unlabelled, 1 with a label the model
#: does not know ("wolf").
HAND_MADE = [
    ("c1", "cat", "cat"),
    ("c2", "cat", "dog"),
    ("c3", "cat", "dog"),
    ("d1", "dog", "dog"),
    ("d2", "dog", "cat"),
    ("f1", "fox", "fox"),
    ("u1", None, "fox"),
    ("w1", "wolf", "cat"),
]


@pytest.fixture
def world(db, media):
    """A model row (pages need no weights) and a dataset with hand-made predictions."""
    model = ClassifierModel.objects.create(
        name="Pets",
        kind="factory",
        architecture="pets.models:get_model",
        weights_path="/weights/pets.safetensors",
        weights_sha256="ab" * 32,
        class_names=MODEL_CLASSES,
        input_size=64,
        resize_policy="resize",
        normalization_mean=[123.675, 116.28, 103.53],
        normalization_std=[58.395, 57.12, 57.375],
        target_layer="layer4.1.conv2",
    )
    dataset = Dataset.objects.create(
        name="Pet photos", description="Hand-made", class_names=["cat", "dog", "fox", "wolf"]
    )
    items = {}
    for n, (name, label, predicted) in enumerate(HAND_MADE):
        items[name] = item_create(dataset, name, label, split="val" if n % 2 else "train")
        predict(model, items[name], predicted)
    Region.objects.create(item=items["c1"], kind=RegionKind.BOX, x0=1, y0=1, x1=5, y1=5)
    Region.objects.create(item=items["c2"], kind=RegionKind.BOX, x0=1, y0=1, x1=5, y1=5)
    return model, dataset, items


# --- who gets what -----------------------------------------------------------------------------

PAGES = [
    "/r/models/",
    "/r/models/{model}/",
    "/r/models/register/",
    "/r/datasets/",
    "/r/datasets/{dataset}/",
    "/r/datasets/import/",
    "/r/items/{item}/image.png",
    "/r/items/{item}/thumb.png",
]


@pytest.mark.parametrize("page", PAGES)
def test_staff_get_the_page_and_everyone_else_is_sent_to_the_login(
    world, page, researcher, co_researcher, outsider
):
    model, dataset, items = world
    url = page.format(model=model.pk, dataset=dataset.pk, item=items["c1"].pk)
    assert login(researcher, "pw-researcher").get(url).status_code == 200
    assert login(co_researcher, "pw-co").get(url).status_code == 200  # owner does not matter
    for client in (login(outsider, "pw-outsider"), Client()):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize(
    "url",
    ["/r/models/999/", "/r/datasets/999/", "/r/items/999/image.png", "/r/items/999/thumb.png"],
)
def test_unknown_ids_are_404_for_staff(world, staff, url):
    assert staff.get(url).status_code == 404


@pytest.mark.parametrize("url", ["/r/models/register/", "/r/datasets/import/"])
def test_forms_posted_without_the_csrf_token_are_403(world, researcher, url):
    client = Client(enforce_csrf_checks=True)
    client.force_login(researcher)
    assert client.post(url, {"name": "x"}).status_code == 403


def test_top_bar_links_studies_models_and_datasets_for_staff_only(world, staff, outsider):
    page = staff.get("/r/").content.decode()
    for href in ('href="/r/"', 'href="/r/models/"', 'href="/r/datasets/"'):
        assert href in page
    page = login(outsider, "pw-outsider").get("/r/").content.decode()
    assert 'href="/r/"' in page and "/r/models/" not in page and "/r/datasets/" not in page


# --- models ------------------------------------------------------------------------------------


def test_model_list_shows_every_model_with_its_facts(world, staff):
    page = staff.get("/r/models/").content.decode()
    model = world[0]
    assert f'href="/r/models/{model.pk}/"' in page
    assert "Pets" in page and "pets.models:get_model" in page and "layer4.1.conv2" in page
    assert 'href="/r/models/register/"' in page


def test_model_detail_shows_registration_facts(world, staff):
    model = world[0]
    page = staff.get(f"/r/models/{model.pk}/").content.decode()
    for text in (
        "Model: Pets",
        "pets.models:get_model",
        "Factory function + state dict",
        "ab" * 32,
        "64&times;64 pixels, resize the whole image",
        "mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375]",
        "<code>layer4.1.conv2</code>",
        "cat, dog, fox",
    ):
        assert text in page, text
    assert re.search(r"<th>Classes</th><td>3 ", page)


def test_model_detail_confusion_summary_counts_the_hand_made_predictions(world, staff):
    model = world[0]
    page = staff.get(f"/r/models/{model.pk}/").content.decode()
    assert "<strong>Accuracy 0.500</strong>" in page
    assert "3 of 6 labelled items predicted correctly, 3 wrong" in page
    assert "1 more with a label outside the model's classes (not scored)" in page
    rows = re.findall(
        r'<tr class="confusion"><td>(\w+)</td><td>&rarr;</td><td>(\w+)</td><td class="num">(\d+)</td>',
        page,
    )
    assert rows == [("cat", "dog", "2"), ("dog", "cat", "1")]


def test_model_detail_shows_the_latest_twelve_predictions_with_thumbnails(world, staff):
    model, dataset, items = world
    extra = [item_create(dataset, f"x{n}", "fox") for n in range(6)]
    for item in extra:
        predict(model, item, "fox")  # 14 predictions now; the two oldest are c1 and c2
    page = staff.get(f"/r/models/{model.pk}/").content.decode()
    shown = re.findall(r'<img src="/r/items/(\d+)/thumb.png"', page)
    assert len(shown) == 12
    assert str(items["c1"].pk) not in shown and str(items["c2"].pk) not in shown
    assert shown[0] == str(extra[-1].pk)  # newest first
    assert "label wolf is not a model class" in page  # w1: scored neither right nor wrong
    assert "(12 of 14)" in page
    assert "<strong>Accuracy 0.750</strong>" in page  # 9 of 12 with the six right foxes


def test_model_detail_without_predictions_says_how_to_get_some(db, media, staff):
    model = ClassifierModel.objects.create(
        name="Fresh",
        kind="torchscript",
        weights_path="/w.pt",
        weights_sha256="0" * 64,
        class_names=["a", "b"],
        normalization_mean=[0, 0, 0],
        normalization_std=[1, 1, 1],
    )
    page = staff.get(f"/r/models/{model.pk}/").content.decode()
    assert "No prediction on a labelled item yet" in page
    assert "none: TorchScript models support no layer hooks, so no Grad-CAM" in page


# --- the register form ---------------------------------------------------------------------


def register_post(client, tmp_path, weights: Path, **overrides):
    data = {
        "name": "Colours",
        "kind": "factory",
        "architecture": FACTORY,
        "input_size": "32",
        "resize_policy": "center-crop",
        "normalization": "custom",
        "mean": "0 0 0",
        "std": "255 255 255",
        "target_layer": "",
        "weights": SimpleUploadedFile(weights.name, weights.read_bytes()),
        "classes": SimpleUploadedFile(
            "classes.txt",
            write_classes(tmp_path / "classes.txt", ["red", "green", "blue"]).read_bytes(),
        ),
    }
    data.update(overrides)
    return client.post("/r/models/register/", data)


def test_register_form_registers_and_redirects_to_the_model(
    world, staff, researcher, tmp_path, media
):
    weights = write_weights(tmp_path / "colours.safetensors", ["red", "green", "blue"])
    response = register_post(staff, tmp_path, weights)
    model = ClassifierModel.objects.get(name="Colours")
    assert response.status_code == 302
    assert response["Location"] == f"/r/models/{model.pk}/"
    assert model.owner == researcher
    assert model.target_layer == "conv2"
    assert model.normalization_std == [255.0] * 3
    assert Path(model.weights_path) == media / "models" / f"{model.weights_sha256}.safetensors"


def test_register_form_shows_the_error_on_a_bad_checkpoint_keeps_values_and_creates_nothing(
    world, staff, tmp_path, media
):
    bad = tmp_path / "weights.pt"
    torch.save(colour_state_dict(["red", "green", "blue"]), bad)
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    response = register_post(staff, tmp_path, bad, target_layer="conv2")

    assert response.status_code == 200
    page = response.content.decode()
    assert '<div class="error" role="alert"><p>weights.pt: truncated or corrupt checkpoint' in page
    assert escape(FACTORY) in page  # entered values are kept
    assert 'value="Colours"' in page and 'value="conv2"' in page and 'value="0 0 0"' in page
    assert list(ClassifierModel.objects.values_list("name", flat=True)) == ["Pets"]
    assert not (media / "models").exists()


def test_register_form_shows_service_messages_for_other_refusals(world, staff, tmp_path, media):
    weights = write_weights(tmp_path / "colours.safetensors", ["red", "green", "blue"])
    page = register_post(staff, tmp_path, weights, input_size="4").content.decode()
    assert "input_size must be 8..2048 pixels, got 4" in page
    page = register_post(staff, tmp_path, weights, architecture="tests.nowhere:f").content.decode()
    assert escape("factory 'tests.nowhere:f': cannot import 'tests.nowhere'") in page
    page = register_post(staff, tmp_path, weights, mean="1 2").content.decode()
    assert "mean: three numbers (R G B), got 2" in page
    page = register_post(
        staff, tmp_path, weights, classes=SimpleUploadedFile("classes.csv", b"a,b,c")
    ).content.decode()
    assert "classes.csv: expected a .txt or .json file" in page
    assert ClassifierModel.objects.count() == 1
    assert not (media / "models").exists()


# --- datasets ------------------------------------------------------------------------------


def test_dataset_list_shows_counts(world, staff):
    dataset = world[1]
    page = staff.get("/r/datasets/").content.decode()
    assert f'href="/r/datasets/{dataset.pk}/"' in page
    assert re.search(
        r'Pet photos</a>.*?<td class="num">8</td><td class="num">7</td><td class="num">4</td>',
        page,
        re.S,
    )


def test_dataset_detail_shows_classes_splits_regions_and_thumbnails(world, staff):
    dataset = world[1]
    page = staff.get(f"/r/datasets/{dataset.pk}/").content.decode()
    classes = re.findall(
        r'<td class="muted">(\d+)</td><td>(\w+)</td><td class="num">(\d+)</td>', page
    )
    assert classes == [("0", "cat", "3"), ("1", "dog", "2"), ("2", "fox", "1"), ("3", "wolf", "1")]
    assert re.search(r'unlabelled</td><td class="num">1</td>', page)
    assert (
        '<td>train</td><td class="num">4</td>' in page
        and '<td>val</td><td class="num">4</td>' in page
    )
    assert "8 items &middot; 4 classes &middot; 2 regions (2 boxes)" in page
    assert len(re.findall(r'src="/r/items/\d+/thumb.png"', page)) == 8
    assert 'http-equiv="refresh"' not in page  # nothing is importing


def test_dataset_items_are_paginated_48_per_page(db, media, staff):
    dataset = Dataset.objects.create(name="Many", class_names=["a"])
    for n in range(50):
        item_create(dataset, f"i{n:02d}", "a", size=(8, 6))
    first = staff.get(f"/r/datasets/{dataset.pk}/").content.decode()
    second = staff.get(f"/r/datasets/{dataset.pk}/?page=2").content.decode()
    assert len(re.findall(r'src="/r/items/\d+/thumb.png"', first)) == 48
    assert len(re.findall(r'src="/r/items/\d+/thumb.png"', second)) == 2
    assert "1-48 of 50" in first and "49-50 of 50" in second
    assert 'href="?page=2"' in first


def test_item_image_and_thumbnail(world, staff, db, media):
    dataset = world[1]
    big = item_create(dataset, "big", "cat", size=(600, 300))
    full = staff.get(f"/r/items/{big.pk}/image.png")
    assert full["Content-Type"] == "image/png"
    assert b"".join(full.streaming_content) == big.image.open("rb").read()
    thumb = staff.get(f"/r/items/{big.pk}/thumb.png")
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert (img.format, img.size) == ("PNG", (224, 112))
    small = staff.get(f"/r/items/{world[2]['c1'].pk}/thumb.png")
    with Image.open(io.BytesIO(small.content)) as img:
        assert img.size == (40, 30)  # never enlarged


# --- the import form -------------------------------------------------------------------------


def squares_zip() -> bytes:
    return zip_bytes(
        {
            **{f"red/{n}.png": png(square_image("red", n)) for n in range(3)},
            **{f"blue/{n}.png": png(square_image("blue", n)) for n in range(2)},
            "blue/broken.png": b"\x89PNG broken",
        }
    )


def test_import_form_queues_a_job_and_the_dataset_page_shows_its_progress(
    db, media, staff, researcher, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(dataset_services, "_import_enqueue", sent.append)
    archive = squares_zip()  # once: a zip records its members' times, so two builds can differ
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            "/r/datasets/import/",
            {
                "name": "Squares",
                "description": "Coloured squares",
                "archive": SimpleUploadedFile("squares.zip", archive),
            },
        )
    dataset = Dataset.objects.get(name="Squares")
    job = DatasetImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/r/datasets/{dataset.pk}/"
    assert sent == [job.pk]
    assert (dataset.owner, dataset.description) == (researcher, "Coloured squares")
    assert job.source_format == "zip" and job.status == JobStatus.PENDING
    stored = Path(job.source_path)
    assert stored.parent == (media / "uploads").resolve() and stored.suffix == ".zip"
    assert stored.read_bytes() == archive

    pending = staff.get(response["Location"]).content.decode()
    assert '<meta http-equiv="refresh" content="2">' in pending
    assert "<strong>Pending</strong>" in pending and '<div class="progress">' in pending

    dataset_import_job_run(job_id=job.pk)  # what the worker does
    done = staff.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in done
    assert "<strong>Succeeded</strong> &middot; 6 of 6 files" in done
    assert '<span style="width: 100%">' in done
    assert "5 imported, 0 duplicates, 1 failed" in done
    assert "<code>blue/broken.png</code>" in done
    assert len(re.findall(r'src="/r/items/\d+/thumb.png"', done)) == 5


def test_import_form_into_an_existing_dataset_keeps_it(
    world, staff, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(dataset_services, "_import_enqueue", lambda job_id: None)
    dataset = world[1]
    response = staff.post(
        "/r/datasets/import/",
        {"name": "Pet photos", "archive": SimpleUploadedFile("more.zip", squares_zip())},
    )
    assert response["Location"] == f"/r/datasets/{dataset.pk}/"
    assert Dataset.objects.count() == 1
    assert DatasetImportJob.objects.get().dataset == dataset
    page = staff.get(f"/r/datasets/import/?name={dataset.name}").content.decode()
    assert 'value="Pet photos"' in page


def test_import_form_refuses_a_file_that_is_not_a_zip(db, media, staff, monkeypatch):
    monkeypatch.setattr(dataset_services, "_import_enqueue", lambda job_id: None)
    response = staff.post(
        "/r/datasets/import/",
        {"name": "Nope", "archive": SimpleUploadedFile("photos.zip", b"not a zip")},
    )
    assert response.status_code == 200
    assert "photos.zip: not a zip archive" in response.content.decode()
    assert not Dataset.objects.exists() and not DatasetImportJob.objects.exists()
    assert not (media / "uploads").exists()


def test_import_form_refuses_an_archive_above_the_limit(db, media, staff, settings):
    settings.STUDYPLATFORM_MAX_ZIP_BYTES = 100
    response = staff.post(
        "/r/datasets/import/",
        {"name": "Big", "archive": SimpleUploadedFile("big.zip", squares_zip())},
    )
    assert "above 100" in response.content.decode()
    assert not DatasetImportJob.objects.exists()


def test_failed_import_job_shows_its_error(db, media, staff, tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_services, "_import_enqueue", lambda job_id: None)
    dataset = Dataset.objects.create(name="Evil")
    path = tmp_path / "evil.zip"
    path.write_bytes(zip_bytes({"../evil.png": png(square_image("red", 1))}))
    job = dataset_services.dataset_import_job_create(
        dataset=dataset, source_format="zip", source_path=path
    )
    dataset_import_job_run(job_id=job.pk)
    page = staff.get(f"/r/datasets/{dataset.pk}/").content.decode()
    assert "<strong>Failed</strong>" in page
    assert '<pre class="error">unsafe path in archive: &#x27;../evil.png&#x27;</pre>' in page
