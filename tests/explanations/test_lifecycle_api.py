"""Deleting models and creating datasets, through the services and the API."""

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from explanations.models import ClassifierModel, Dataset, Prediction
from explanations.services import DatasetNameTaken, ModelInUse, dataset_create, model_delete


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_model_used_by_a_study_cannot_be_deleted(hive_study):
    model = hive_study.model
    with pytest.raises(ModelInUse, match="used by a study"):
        model_delete(model=model)
    assert ClassifierModel.objects.filter(pk=model.pk).exists()


def test_deleting_a_model_removes_its_predictions_and_stored_weights(tiny_world, settings):
    model, _ = tiny_world
    weights = Path(settings.MEDIA_ROOT) / "models" / "w.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"x")
    ClassifierModel.objects.filter(pk=model.pk).update(weights_path=str(weights))
    model.refresh_from_db()
    assert Prediction.objects.filter(model=model).count() == 3
    model_delete(model=model)
    assert not ClassifierModel.objects.exists() and not Prediction.objects.exists()
    assert not weights.exists()


def test_model_delete_api_is_for_owners_and_says_409_when_in_use(hive_study, researcher):
    model = hive_study.model
    other = get_user_model().objects.create_user("other", is_staff=True)
    ClassifierModel.objects.filter(pk=model.pk).update(owner=researcher)
    assert api(other).delete(f"/api/models/{model.pk}/").status_code == 404  # not visible
    ClassifierModel.objects.filter(pk=model.pk).update(owner=None)
    assert api(other).delete(f"/api/models/{model.pk}/").status_code == 403  # shared: not owner
    ClassifierModel.objects.filter(pk=model.pk).update(owner=researcher)
    response = api(researcher).delete(f"/api/models/{model.pk}/")
    assert response.status_code == 409 and "used by a study" in response.json()["detail"]


def test_dataset_create_service_and_api(researcher):
    dataset = dataset_create(name="Birds", class_names=["wren", "robin"], owner=researcher)
    assert dataset.class_names == ["wren", "robin"]
    with pytest.raises(DatasetNameTaken):
        dataset_create(name="Birds")
    with pytest.raises(ValueError, match="unique"):
        dataset_create(name="Dup", class_names=["a", "a"])
    client = api(researcher)
    created = client.post(
        "/api/datasets/", {"name": "Cats", "class_names": ["tabby"]}, format="json"
    )
    assert created.status_code == 201 and created.json()["class_names"] == ["tabby"]
    assert Dataset.objects.get(name="Cats").owner == researcher
    assert client.post("/api/datasets/", {"name": "Cats"}, format="json").status_code == 409
    bad = client.post("/api/datasets/", {"name": "X", "class_names": ["a", "a"]}, format="json")
    assert bad.status_code == 400 and "unique" in bad.json()["detail"]
    assert Dataset.objects.filter(name="X").count() == 0
