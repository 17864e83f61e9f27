"""The researcher REST API under /api/: schema and docs, token authentication, pagination,
per-object permissions, model registration, jobs, dataset imports and study results.

Roles: ``owner`` (``researcher``, owns the study and the objects of ``owned``), ``other``
(``co_researcher``: staff, another researcher, owns nothing), ``superuser`` and
``anonymous``. Shared objects (no owner: the ``tiny_world`` model and dataset) are visible to
every logged-in user; owned ones to their owner and superusers; everything else is 404.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from openapi_spec_validator import validate
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from safetensors.torch import save_file
from torch import nn

from analysis.results import study_results
from explanations.models import (
    ClassifierModel,
    Dataset,
    DatasetImportJob,
    ExplanationJob,
    Item,
    JobStatus,
    Prediction,
)
from explanations.services import dataset_import_job_run
from studies.bots import DjangoClientTransport, bot_run
from tests.conftest import CLASS_NAMES, png_bytes

# --- a tiny model whose factory this module provides (tests.test_api:tiny_factory) ----------


class TinyNet(nn.Module):
    """conv(3 -> 4) -> global average pool -> linear(4 -> num_classes)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def tiny_factory(num_classes: int = 3) -> nn.Module:
    return TinyNet(num_classes)


def safetensors_bytes(tmp_path: Path, num_classes: int = 3) -> bytes:
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_file(TinyNet(num_classes).state_dict(), str(path))
    return path.read_bytes()


class SystemPayload:
    """Unpickling this calls os.system("touch <marker>")."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- the cast ---------------------------------------------------------------------------------

ROLES = ("owner", "other", "superuser", "anonymous")


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", password="pw-root")


def token_client(user) -> APIClient:
    """A client that authenticates with ``Authorization: Token <key>`` only (no session)."""
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def clients(researcher, co_researcher, superuser) -> dict[str, APIClient]:
    return {
        "owner": token_client(researcher),
        "other": token_client(co_researcher),
        "superuser": token_client(superuser),
        "anonymous": APIClient(),
    }


@pytest.fixture
def owned(tiny_world, hive_study, researcher, media):
    """A model, a dataset with one predicted item, a job and an import owned by
    ``researcher``, beside the shared ``tiny_world`` and the owner's ``hive_study``."""
    shared_model, shared_dataset = tiny_world
    model = ClassifierModel.objects.create(
        name="mine",
        architecture="efficientnet-lite0",
        weights_path="/nonexistent",
        weights_sha256="1" * 64,
        class_names=CLASS_NAMES,
        input_size=16,
        normalization_mean=[0, 0, 0],
        normalization_std=[1, 1, 1],
        target_layer="conv",
        owner=researcher,
    )
    dataset = Dataset.objects.create(name="my photos", owner=researcher)
    item = Item.objects.create(
        dataset=dataset,
        name="a.png",
        image="items/a.png",
        sha256="a" * 64,
        width=4,
        height=4,
        label_index=2,
    )
    Prediction.objects.create(
        model=model,
        item=item,
        topk=[{"index": 2, "name": "camel", "probability": 0.9}],
        predicted_index=2,
        probability=0.9,
    )
    job = ExplanationJob.objects.create(model=model, dataset=dataset, method="gradcam")
    shared_job = ExplanationJob.objects.create(
        model=shared_model, dataset=shared_dataset, method="gradcam"
    )
    import_job = DatasetImportJob.objects.create(
        dataset=dataset, source_format="zip", source_path="/nonexistent.zip"
    )
    return SimpleNamespace(
        model=model,
        dataset=dataset,
        item=item,
        job=job,
        import_job=import_job,
        study=hive_study,
        shared_model=shared_model,
        shared_dataset=shared_dataset,
        shared_job=shared_job,
    )


# --- schema and docs --------------------------------------------------------------------------


def test_the_schema_is_a_valid_openapi_3_document_listing_every_endpoint(db):
    response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    document = json.loads(response.content)
    validate(document)
    assert document["openapi"].startswith("3.")
    for path in [
        "/api/auth/token/",
        "/api/models/",
        "/api/models/{id}/",
        "/api/models/{id}/predictions/",
        "/api/datasets/",
        "/api/datasets/{id}/",
        "/api/datasets/{id}/items/",
        "/api/datasets/{id}/items/{item_id}/",
        "/api/datasets/{id}/imports/",
        "/api/imports/{id}/",
        "/api/jobs/",
        "/api/jobs/{id}/",
        "/api/studies/",
        "/api/studies/{slug}/",
        "/api/studies/{slug}/results/",
        "/api/studies/{slug}/responses.csv",
        "/api/p/{token}/",
    ]:
        assert path in document["paths"], path
    assert set(document["paths"]["/api/datasets/{id}/items/"]) == {"get", "post"}
    assert document["components"]["securitySchemes"]["tokenAuth"]["in"] == "header"


def test_the_docs_page_renders_from_local_static_files_only(db):
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "SwaggerUIBundle" in page and '"/api/schema/"' in page
    assert not re.search(r"https?://|//cdn", page)  # offline: no CDN, no external host
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) >= 3
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset


# --- authentication, pagination, errors -------------------------------------------------------


def test_a_token_from_username_and_password_authenticates_api_calls(researcher):
    anonymous = APIClient()
    refused = anonymous.post(
        "/api/auth/token/", {"username": "researcher", "password": "wrong"}, format="json"
    )
    assert refused.status_code == 400 and "detail" in refused.json()
    response = anonymous.post(
        "/api/auth/token/", {"username": "researcher", "password": "pw-researcher"}, format="json"
    )
    assert response.status_code == 200
    key = response.json()["token"]
    assert Token.objects.get(user=researcher).key == key

    assert anonymous.get("/api/models/").status_code == 403
    with_token = APIClient(HTTP_AUTHORIZATION=f"Token {key}")
    assert with_token.get("/api/models/").status_code == 200
    bad = APIClient(HTTP_AUTHORIZATION="Token not-a-key").get("/api/models/")
    assert bad.status_code == 403 and bad.json() == {"detail": "Invalid token."}


def test_lists_are_paginated_by_50_with_page_links(owned, clients):
    Item.objects.bulk_create(
        Item(
            dataset=owned.dataset,
            name=f"extra-{n}.png",
            image=f"items/extra-{n}.png",
            sha256=f"{n:064d}",
            width=1,
            height=1,
        )
        for n in range(54)
    )
    url = f"/api/datasets/{owned.dataset.pk}/items/"
    first = clients["owner"].get(url).json()
    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 55 and len(first["results"]) == 50
    assert first["previous"] is None and "page=2" in first["next"]
    second = clients["owner"].get(url, {"page": 2}).json()
    assert len(second["results"]) == 5 and second["next"] is None
    ids = [i["id"] for i in first["results"] + second["results"]]
    assert ids == sorted(ids) and len(set(ids)) == 55
    assert clients["owner"].get(url, {"page": 9}).status_code == 404


def test_errors_are_json_objects_with_a_detail(owned, clients):
    invalid = clients["owner"].post("/api/jobs/", {}, format="json")
    assert invalid.status_code == 400
    body = invalid.json()
    assert body["model"] and body["dataset"]  # per-field messages stay
    assert body["detail"].startswith("model: ")
    missing = clients["owner"].get("/api/models/987654/")
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}
    wrong_method = clients["owner"].delete(f"/api/jobs/{owned.job.pk}/")
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


def test_the_participant_api_ignores_api_credentials(hive_study):
    client = Client()
    token = client.get(f"/s/{hive_study.slug}/")["Location"].strip("/").split("/")[1]
    response = client.get(f"/api/p/{token}/", HTTP_AUTHORIZATION="Token not-a-key")
    assert response.status_code == 200 and response.json()["stage"] == "consent"


# --- per-object permissions -------------------------------------------------------------------

# fmt: off
OWNED_EXPECTED = {
    #                                                         owner other superuser anonymous
    "model":         ("/api/models/{model}/",                  (200,  404,  200,      403)),
    "predictions":   ("/api/models/{model}/predictions/",      (200,  404,  200,      403)),
    "dataset":       ("/api/datasets/{dataset}/",              (200,  404,  200,      403)),
    "items":         ("/api/datasets/{dataset}/items/",        (200,  404,  200,      403)),
    "item":          ("/api/datasets/{dataset}/items/{item}/", (200,  404,  200,      403)),
    "import":        ("/api/imports/{import_job}/",            (200,  404,  200,      403)),
    "job":           ("/api/jobs/{job}/",                      (200,  404,  200,      403)),
    "study":         ("/api/studies/{study}/",                 (200,  404,  200,      403)),
    "results":       ("/api/studies/{study}/results/",         (200,  404,  200,      403)),
    "responses_csv": ("/api/studies/{study}/responses.csv",    (200,  404,  200,      403)),
    "shared_model":  ("/api/models/{shared_model}/",           (200,  200,  200,      403)),
    "shared_job":    ("/api/jobs/{shared_job}/",               (200,  200,  200,      403)),
}
# fmt: on


@pytest.mark.parametrize("endpoint", list(OWNED_EXPECTED))
def test_owned_objects_are_visible_to_their_owner_and_superusers_only(owned, clients, endpoint):
    template, statuses = OWNED_EXPECTED[endpoint]
    url = template.format(
        model=owned.model.pk,
        dataset=owned.dataset.pk,
        item=owned.item.pk,
        import_job=owned.import_job.pk,
        job=owned.job.pk,
        study=owned.study.slug,
        shared_model=owned.shared_model.pk,
        shared_job=owned.shared_job.pk,
    )
    actual = {role: clients[role].get(url).status_code for role in ROLES}
    assert actual == dict(zip(ROLES, statuses, strict=True))


def _names(client: APIClient, url: str, key: str) -> set:
    return {row[key] for row in client.get(url).json()["results"]}


def test_lists_show_shared_objects_and_your_own(owned, clients):
    every = {
        "owner": ({"tiny", "mine"}, {"tiny photos", "my photos"}),
        "other": ({"tiny"}, {"tiny photos"}),
        "superuser": ({"tiny", "mine"}, {"tiny photos", "my photos"}),
    }
    for role, (models, datasets) in every.items():
        assert _names(clients[role], "/api/models/", "name") == models, role
        assert _names(clients[role], "/api/datasets/", "name") == datasets, role
    jobs = {role: _names(clients[role], "/api/jobs/", "id") for role in every}
    assert jobs["owner"] == jobs["superuser"] == {owned.job.pk, owned.shared_job.pk}
    assert jobs["other"] == {owned.shared_job.pk}
    studies = {role: _names(clients[role], "/api/studies/", "slug") for role in every}
    assert studies == {"owner": {owned.study.slug}, "other": set(), "superuser": {owned.study.slug}}
    mine = clients["owner"].get(f"/api/datasets/{owned.dataset.pk}/").json()
    assert (mine["item_count"], mine["owner"], mine["class_names"]) == (1, "researcher", [])


def test_predictions_list_top_k_with_the_truth_per_item(owned, clients):
    body = (
        clients["owner"]
        .get(f"/api/models/{owned.model.pk}/predictions/", {"dataset": owned.dataset.pk})
        .json()
    )
    assert body["count"] == 1
    row = body["results"][0]
    assert (row["item"], row["predicted_name"], row["true_index"], row["is_correct"]) == (
        owned.item.pk,
        "camel",
        2,
        True,
    )
    assert row["topk"] == [{"index": 2, "name": "camel", "probability": 0.9}]
    # the shared model has predictions on the shared dataset only
    shared = clients["other"].get(f"/api/models/{owned.shared_model.pk}/predictions/").json()
    assert {r["item_name"] for r in shared["results"]} == {"right", "wrong", "unlabelled"}
    # a dataset you cannot see is 404, a malformed id 400
    hidden = clients["other"].get(
        f"/api/models/{owned.shared_model.pk}/predictions/", {"dataset": owned.dataset.pk}
    )
    assert hidden.status_code == 404
    assert (
        clients["owner"]
        .get(f"/api/models/{owned.model.pk}/predictions/", {"dataset": "x"})
        .status_code
        == 400
    )


def _png_upload(name: str, seed: int) -> SimpleUploadedFile:
    pixels = np.full((5, 6, 3), seed, dtype=np.uint8)
    return SimpleUploadedFile(name, png_bytes(pixels), content_type="image/png")


def test_only_the_owner_or_a_superuser_adds_images_to_an_owned_dataset(owned, clients, outsider):
    url = f"/api/datasets/{owned.dataset.pk}/items/"
    assert clients["other"].post(url, {"file": _png_upload("o.png", 1)}).status_code == 404
    assert clients["anonymous"].post(url, {"file": _png_upload("x.png", 2)}).status_code == 403
    assert clients["owner"].post(url, {"file": _png_upload("mine.png", 3)}).status_code == 201
    assert clients["superuser"].post(url, {"file": _png_upload("root.png", 4)}).status_code == 201
    # a shared dataset is visible to a plain user, who still may not add to it
    shared = f"/api/datasets/{owned.shared_dataset.pk}/items/"
    refused = token_client(outsider).post(shared, {"file": _png_upload("p.png", 5)})
    assert refused.status_code == 403 and "owner" in refused.json()["detail"]
    names = set(Item.objects.values_list("name", flat=True))
    assert {"mine.png", "root.png"} <= names and not names & {"o.png", "x.png", "p.png"}


def test_creating_a_job_needs_both_model_and_dataset_visible(owned, clients):
    with mock.patch("explanations.services.jobs.explanation_job_enqueue"):
        hidden_model = clients["other"].post(
            "/api/jobs/",
            {"model": owned.model.pk, "dataset": owned.shared_dataset.pk},
            format="json",
        )
        hidden_dataset = clients["other"].post(
            "/api/jobs/",
            {"model": owned.shared_model.pk, "dataset": owned.dataset.pk},
            format="json",
        )
    assert hidden_model.status_code == 400 and "model" in hidden_model.json()
    assert hidden_dataset.status_code == 400 and "dataset" in hidden_dataset.json()
    assert ExplanationJob.objects.count() == 2  # the fixture's two, nothing new


# --- model registration -----------------------------------------------------------------------


def _register(client: APIClient, weights: bytes, filename: str, **fields):
    payload = {
        "name": "tiny-api",
        "kind": "factory",
        "architecture": "tests.test_api:tiny_factory",
        "class_names": json.dumps(["ant", "bee", "cat"]),
        "input_size": 16,
        "normalization": "imagenet",
        "weights": SimpleUploadedFile(filename, weights),
        **fields,
    }
    payload = {key: value for key, value in payload.items() if value is not None}
    return client.post("/api/models/", payload, format="multipart")


def test_a_model_registers_over_the_api_with_its_factory_and_safetensors(
    clients, researcher, media, tmp_path
):
    response = _register(clients["owner"], safetensors_bytes(tmp_path), "tiny.safetensors")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["class_names"] == ["ant", "bee", "cat"] and body["num_classes"] == 3
    assert (body["kind"], body["target_layer"], body["owner"]) == (
        "factory",
        "features",
        "researcher",
    )
    model = ClassifierModel.objects.get(pk=body["id"])
    assert model.owner == researcher
    assert Path(model.weights_path).parent == media / "models"
    assert Path(model.weights_path).name == f"{model.weights_sha256}.safetensors"
    # visible to its owner only
    assert clients["other"].get(f"/api/models/{model.pk}/").status_code == 404


def test_class_names_can_come_from_a_file_and_normalisation_as_mean_and_std(
    clients, media, tmp_path
):
    response = _register(
        clients["owner"],
        safetensors_bytes(tmp_path),
        "tiny.safetensors",
        class_names=None,
        classes_file=SimpleUploadedFile("classes.txt", b"ant\nbee\n\ncat\n"),
        normalization=None,
        normalization_mean=json.dumps([1, 2, 3]),
        normalization_std=json.dumps([4, 5, 6]),
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["class_names"] == ["ant", "bee", "cat"]
    assert (body["normalization_mean"], body["normalization_std"]) == ([1, 2, 3], [4, 5, 6])


def test_a_checkpoint_whose_pickle_runs_code_is_400_and_leaves_nothing(clients, media, tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"features.weight": torch.ones(2), "payload": SystemPayload(marker)}, buf)
    response = _register(clients["owner"], buf.getvalue(), "evil.pt")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("evil.pt: refused to load") and "could execute code" in detail
    assert not marker.exists()
    assert not ClassifierModel.objects.exists()
    assert not (media / "models").exists() or not any((media / "models").iterdir())


def test_registration_problems_are_400_with_the_message(clients, media, tmp_path):
    weights = safetensors_bytes(tmp_path)
    wrong_count = _register(
        clients["owner"], weights, "tiny.safetensors", class_names=json.dumps(["a", "b"])
    )
    assert wrong_count.status_code == 400
    assert "shape" in wrong_count.json()["detail"]  # strict state-dict match
    neither = _register(clients["owner"], weights, "tiny.safetensors", class_names=None)
    assert neither.status_code == 400
    assert "exactly one of class_names and classes_file" in neither.json()["detail"]
    assert not ClassifierModel.objects.exists()


# --- explanation jobs -------------------------------------------------------------------------


def test_creating_a_job_enqueues_it_once_the_transaction_commits(
    tiny_world, clients, django_capture_on_commit_callbacks
):
    model, dataset = tiny_world
    with (
        mock.patch("explanations.services.jobs.explanation_job_enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = clients["other"].post(
            "/api/jobs/", {"model": model.pk, "dataset": dataset.pk, "top_k": 3}, format="json"
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["total_items"], body["top_k"]) == (JobStatus.PENDING, 3, 3)
    enqueue.assert_called_once_with(job_id=body["id"])
    assert clients["other"].get(f"/api/jobs/{body['id']}/").json()["progress"] == 0.0


def test_a_job_the_service_refuses_is_400_with_its_message(tiny_world, clients):
    model, dataset = tiny_world
    response = clients["owner"].post(
        "/api/jobs/", {"model": model.pk, "dataset": dataset.pk, "top_k": 7}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "top_k must be in 1..6, got 7"}


# --- dataset imports --------------------------------------------------------------------------


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("cat/one.png", png_bytes(np.full((4, 4, 3), 10, dtype=np.uint8)))
        archive.writestr("dog/two.png", png_bytes(np.full((4, 4, 3), 200, dtype=np.uint8)))
    return buf.getvalue()


def test_a_zip_import_is_queued_then_reports_its_progress(owned, clients, media):
    url = f"/api/datasets/{owned.dataset.pk}/imports/"
    assert (
        clients["other"].post(url, {"file": SimpleUploadedFile("d.zip", _zip_bytes())}).status_code
        == 404
    )
    response = clients["owner"].post(url, {"file": SimpleUploadedFile("d.zip", _zip_bytes())})
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["source_format"], body["dataset"]) == (
        "pending",
        "zip",
        owned.dataset.pk,
    )
    job = DatasetImportJob.objects.get(pk=body["id"])
    assert Path(job.source_path).parent == (media / "uploads").resolve()

    dataset_import_job_run(job_id=job.pk)  # what the worker does
    done = clients["owner"].get(f"/api/imports/{job.pk}/").json()
    assert (done["status"], done["total_files"], done["processed_files"]) == ("succeeded", 2, 2)
    assert done["report"]["imported"] == 2
    dataset = clients["owner"].get(f"/api/datasets/{owned.dataset.pk}/").json()
    assert dataset["item_count"] == 3 and dataset["class_names"] == ["cat", "dog"]


def test_an_upload_that_is_not_a_zip_is_400_and_not_stored(owned, clients, media):
    response = clients["owner"].post(
        f"/api/datasets/{owned.dataset.pk}/imports/",
        {"file": SimpleUploadedFile("d.zip", b"not a zip")},
    )
    assert response.status_code == 400 and response.json()["detail"] == "d.zip: not a zip archive"
    assert not (media / "uploads").exists()
    assert DatasetImportJob.objects.count() == 1  # the fixture's


# --- studies and results ----------------------------------------------------------------------


@pytest.fixture
def answered_study(hive_study):
    for seed, policy in enumerate(["uniform", "trusting"]):
        bot_run(
            transport=DjangoClientTransport(Client()),
            start_path=f"/s/{hive_study.slug}/?SIMULATION_KEY={hive_study.simulation_key}&BOT_POLICY={policy}",
            policy=policy,
            seed=seed,
        )
    return hive_study


def test_results_json_matches_the_analysis_table(answered_study, clients):
    url = f"/api/studies/{answered_study.slug}/results/"
    body = clients["owner"].get(url).json()
    expected = study_results(answered_study)
    assert (body["study"], body["simulated"]) == (answered_study.slug, "include")
    assert (body["n_participants"], body["n_simulated"]) == (2, 2)
    rows = expected.table.to_dict("records")
    assert len(body["rows"]) == len(rows) > 0
    for actual, wanted in zip(body["rows"], rows, strict=True):
        assert set(actual) == set(wanted)
        for key, value in wanted.items():
            if isinstance(value, float) and np.isnan(value):
                assert actual[key] is None, key
            elif isinstance(value, float):
                assert actual[key] == pytest.approx(value, rel=1e-12), key
            else:
                assert actual[key] == value, key
    excluded = clients["owner"].get(url, {"simulated": "exclude"}).json()
    assert (excluded["rows"], excluded["n_participants"]) == ([], 0)
    bad = clients["owner"].get(url, {"simulated": "sometimes"})
    assert bad.status_code == 400 and "simulated" in bad.json()


def test_the_csv_export_has_one_row_per_response(answered_study, clients):
    response = clients["owner"].get(f"/api/studies/{answered_study.slug}/responses.csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    lines = response.content.decode().strip().splitlines()
    expected = study_results(answered_study).responses
    assert lines[0].split(",") == list(expected.columns)
    assert len(lines) == 1 + len(expected) == 1 + 4  # 2 bots x 2 trials


def test_the_study_detail_gives_counts_and_the_participant_link(answered_study, clients):
    body = clients["owner"].get(f"/api/studies/{answered_study.slug}/").json()
    assert (body["n_participants"], body["n_completed"], body["status"]) == (2, 2, "open")
    assert body["n_trials"] == answered_study.trials.count()
    assert body["start_url"] == f"http://testserver/s/{answered_study.slug}/"
    assert "simulation_key" not in body
