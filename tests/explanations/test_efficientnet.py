"""The bundled demo end to end: real EfficientNet-Lite0 weights, real photos, real Grad-CAM.

The heavy work (register the model, import the 10 demo photos, run one Grad-CAM job over them)
is done once per module in ``demo``; the data is committed to the test database and deleted
again when the module finishes. Tests that change anything do so inside their own (rolled back)
transaction.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from django.conf import settings
from PIL import Image

from explanations import rendering
from explanations.demo import (
    DEMO_DATASET_NAME,
    DEMO_MODEL_NAME,
    DEMO_PHOTOS,
    demo_dataset_import,
    demo_model_register,
)
from explanations.explainers.heatmap.gradcam import GradCam
from explanations.imageio import encode_png
from explanations.modelio import pixels_to_input
from explanations.models import (
    ClassifierModel,
    Dataset,
    Explanation,
    ExplanationJob,
    ExplanationJobItem,
    JobItemStatus,
    JobStatus,
    Prediction,
)
from explanations.services import (
    ImageSource,
    classifier_load,
    dataset_import,
    explanation_array_load,
    explanation_job_create,
    explanation_job_run,
    explanation_overlay_ensure,
    explanation_targets,
    item_model_view,
)

pytestmark = pytest.mark.slow

ESPRESSO = 967
TOP_K = 4

#: The espresso cup in skimage.data.coffee() (600 x 400), checked by eye on the photo with a
#: 50-pixel grid: rim x 172-408, top of the rim y 17, bottom of the handle y 295 (the saucer
#: and the spoon's bowl, below and right of it, are not the cup). Half-open pixel ranges.
CUP_X_PHOTO = (170, 410)
CUP_Y_PHOTO = (15, 300)


def cup_box_in_model_view(size: int = 224) -> tuple[slice, slice]:
    """The cup box in the model's view: the central 400 x 400 square of the 600 x 400 photo
    (x offset 100) resized to size x size, i.e. coordinates scaled by size / 400."""
    scale = size / 400
    x0, x1 = (round((x - 100) * scale) for x in CUP_X_PHOTO)
    y0, y1 = (round(y * scale) for y in CUP_Y_PHOTO)
    return slice(y0, y1), slice(x0, x1)


def enqueue_patched():
    return mock.patch("explanations.services.jobs.explanation_job_enqueue")


@pytest.fixture(scope="module")
def demo(django_db_setup, django_db_blocker):
    """Demo model + dataset + one finished Grad-CAM job (top-4), committed for this module.

    Whatever this fixture created is deleted afterwards (cascading to items, jobs, predictions
    and explanations), even if it failed half-way, so later modules see an empty database.
    """
    with django_db_blocker.unblock():
        assert not ClassifierModel.objects.filter(name=DEMO_MODEL_NAME).exists()
        assert not Dataset.objects.filter(name=DEMO_DATASET_NAME).exists()
        try:
            model = demo_model_register()
            dataset, report = demo_dataset_import()
            with enqueue_patched() as enqueue:
                job = explanation_job_create(
                    model=model, dataset=dataset, method="gradcam", top_k=TOP_K
                )
            enqueued = list(enqueue.call_args_list)
            job = explanation_job_run(job_id=job.pk)
            yield SimpleNamespace(
                model=model, dataset=dataset, report=report, job=job, enqueued=enqueued
            )
        finally:
            Dataset.objects.filter(name=DEMO_DATASET_NAME).delete()
            ClassifierModel.objects.filter(name=DEMO_MODEL_NAME).delete()


@pytest.fixture
def coffee_input(demo):
    item = demo.dataset.items.get(name="coffee")
    net = classifier_load(demo.model)
    view = item_model_view(item=item, model=demo.model)
    inputs = pixels_to_input(view, demo.model.normalization_mean, demo.model.normalization_std)
    return SimpleNamespace(item=item, net=net, view=view, inputs=inputs)


# --- the demo itself -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_demo_import_imports_all_ten_photos(demo):
    assert demo.report.imported == [photo.name for photo in DEMO_PHOTOS]
    assert demo.report.failed == [] and demo.report.duplicates == []
    assert demo.dataset.name == DEMO_DATASET_NAME
    coffee = demo.dataset.items.get(name="coffee")
    assert (coffee.width, coffee.height) == (600, 400)
    assert (coffee.label_index, coffee.label_name) == (ESPRESSO, "espresso")


@pytest.mark.django_db
def test_demo_register_and_import_are_idempotent(demo):
    assert demo_model_register().pk == demo.model.pk
    dataset, report = demo_dataset_import()
    assert dataset.pk == demo.dataset.pk
    assert report.imported == []
    assert report.duplicates == [photo.name for photo in DEMO_PHOTOS]
    assert ClassifierModel.objects.filter(name=DEMO_MODEL_NAME).count() == 1
    assert dataset.items.count() == 10


@pytest.mark.django_db
def test_efficientnet_classifies_the_coffee_photo_as_espresso(demo, coffee_input):
    assert coffee_input.view.shape == (224, 224, 3)
    with torch.no_grad():
        probabilities = torch.softmax(coffee_input.net(coffee_input.inputs), dim=1)[0]
    top_p, top_i = probabilities.max(dim=0)
    assert int(top_i) == ESPRESSO
    assert demo.model.class_name(ESPRESSO) == "espresso"
    assert float(top_p) > 0.8
    # the job stored the same prediction
    stored = Prediction.objects.get(model=demo.model, item=coffee_input.item)
    assert stored.predicted_index == ESPRESSO
    assert stored.probability == pytest.approx(float(top_p), abs=1e-5)
    assert stored.is_correct is True


@pytest.mark.django_db
def test_gradcam_for_espresso_puts_most_of_its_mass_on_the_cup(demo, coffee_input):
    """Measure: fraction of the total Grad-CAM mass (sum of the non-negative map over all
    224 x 224 pixels of the model's view) that falls inside the cup box.

    The model sees the central 400 x 400 square of the 600 x 400 photo (x 100-500) resized to
    224 x 224. The cup (espresso, rim and handle; not the saucer) spans x 170-410, y 15-300 in
    the photo (checked by eye on a 50-pixel grid), i.e. x 70-310, y 15-300 in the crop, i.e.
    x 39-174, y 8-168 in the 224 x 224 view (scale 224 / 400). The box covers 43.0 % of the
    view, so a map spread evenly would put 43 % of its mass there.

    Grad-CAM on ``_conv_head`` is a 7 x 7 map (32-pixel cells) upsampled bilinearly, so it
    spills onto the saucer around the cup and the mass fraction cannot get close to 1.
    Measured (torch 2.13, CPU): mass fraction 0.586 = 1.36 x the area fraction; mean map value
    inside / outside the box 1.87; the hottest 10 % of pixels all (100 %) lie in the box; the
    peak is at (111, 111), the espresso's surface. Thresholds leave a margin below each.
    """
    rows, cols = cup_box_in_model_view()
    assert (cols.start, cols.stop, rows.start, rows.stop) == (39, 174, 8, 168)
    box = np.zeros((224, 224), dtype=bool)
    box[rows, cols] = True

    explainer = GradCam(coffee_input.net, target_layer=demo.model.target_layer)
    cam = explainer.explain(coffee_input.inputs, [ESPRESSO]).attributions[0]
    assert cam.shape == (224, 224)
    assert cam.min() >= 0 and cam.max() > 0

    mass_fraction = float(cam[box].sum() / cam.sum())
    area_fraction = float(box.mean())
    assert area_fraction == pytest.approx(0.4305, abs=1e-4)
    assert mass_fraction >= 0.52
    assert mass_fraction / area_fraction >= 1.2
    assert cam[box].mean() / cam[~box].mean() >= 1.5
    hottest = cam >= np.quantile(cam, 0.9)
    assert box[hottest].mean() >= 0.95
    assert box[np.unravel_index(cam.argmax(), cam.shape)]

    # the job stored the very same map for the espresso target
    stored = Explanation.objects.get(
        model=demo.model, item=coffee_input.item, target_index=ESPRESSO
    )
    np.testing.assert_allclose(explanation_array_load(stored), cam, rtol=1e-4, atol=1e-6)


# --- the explanation job -------------------------------------------------------------------------


@pytest.mark.django_db
def test_job_is_enqueued_once_after_commit_and_succeeds_on_every_item(demo):
    job = ExplanationJob.objects.get(pk=demo.job.pk)
    assert demo.enqueued == [mock.call(job_id=job.pk)]
    assert job.status == JobStatus.SUCCEEDED
    assert (job.total_items, job.done_items, job.failed_items) == (10, 10, 0)
    assert job.error == ""
    assert job.progress == 1.0
    assert job.started_at is not None and job.finished_at >= job.started_at
    statuses = list(job.job_items.values_list("status", "attempts"))
    assert statuses == [(JobItemStatus.DONE, 1)] * 10


@pytest.mark.django_db
def test_job_stores_a_top5_prediction_for_every_item(demo):
    for item in demo.dataset.items.all():
        prediction = Prediction.objects.get(model=demo.model, item=item)
        probabilities = [entry["probability"] for entry in prediction.topk]
        assert len(prediction.topk) == 5
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1.0 + 1e-6
        assert prediction.predicted_index == prediction.topk[0]["index"]
        assert prediction.probability == probabilities[0]
        assert [e["name"] for e in prediction.topk] == [
            demo.model.class_name(e["index"]) for e in prediction.topk
        ]


@pytest.mark.django_db
def test_job_explains_the_top4_and_the_true_class_when_it_is_outside_them(demo):
    total = 0
    extra = []
    for item in demo.dataset.items.all():
        prediction = Prediction.objects.get(model=demo.model, item=item)
        top4 = prediction.topk_indices()[:TOP_K]
        expected = list(top4)
        if item.label_index is not None and item.label_index not in top4:
            expected.append(item.label_index)
            extra.append(item.name)
        assert explanation_targets(prediction=prediction, item=item, top_k=TOP_K) == expected
        stored = Explanation.objects.filter(model=demo.model, item=item, method="gradcam")
        by_target = {e.target_index: e for e in stored}
        assert sorted(by_target) == sorted(expected), item.name
        for rank, target in enumerate(top4):
            assert by_target[target].target_rank == rank
        for target in expected[TOP_K:]:
            ranks = prediction.topk_indices()
            assert by_target[target].target_rank == (
                ranks.index(target) if target in ranks else None
            )
        total += len(expected)
    assert Explanation.objects.filter(model=demo.model).count() == total
    assert total == 10 * TOP_K + len(extra)


@pytest.mark.django_db
def test_job_also_explains_a_true_class_far_outside_the_top5(demo):
    """No demo photo's true class falls outside the top-4, so label the coffee photo "tabby
    cat" (281): its Grad-CAM is stored as a fifth explanation, with no rank."""
    dataset = Dataset.objects.create(name="Mislabelled")
    photo = next(p for p in DEMO_PHOTOS if p.name == "coffee")
    dataset_import(
        dataset=dataset,
        sources=[ImageSource(name="coffee", data=encode_png(photo.load()), label_index=281)],
    )
    with enqueue_patched():
        job = explanation_job_create(model=demo.model, dataset=dataset, top_k=TOP_K)

    job = explanation_job_run(job_id=job.pk)

    assert (job.status, job.done_items) == (JobStatus.SUCCEEDED, 1)
    item = dataset.items.get()
    prediction = Prediction.objects.get(model=demo.model, item=item)
    assert prediction.is_correct is False
    top5 = prediction.topk_indices()
    assert 281 not in top5
    stored = {e.target_index: e.target_rank for e in Explanation.objects.filter(item=item)}
    assert stored == {**{t: rank for rank, t in enumerate(top5[:TOP_K])}, 281: None}


@pytest.mark.django_db
def test_job_artifacts_are_nonnegative_float32_maps_and_224px_png_overlays(demo):
    explanations = Explanation.objects.filter(model=demo.model).select_related("item")
    assert explanations.exists()
    views = {}
    for explanation in explanations:
        array = explanation_array_load(explanation)
        assert array.shape == (224, 224)
        assert array.dtype == np.float32
        assert array.min() >= 0
        assert float(array.max()) == pytest.approx(explanation.max_value)
        assert explanation.params == {
            "layer": "_conv_head",
            "relu_attributions": True,
            "upsample": "bilinear",
        }
        explanation = explanation_overlay_ensure(explanation)
        with explanation.overlay.open("rb") as fh:
            overlay_img = Image.open(io.BytesIO(fh.read()))
            overlay_img.load()
        assert (overlay_img.format, overlay_img.mode, overlay_img.size) == (
            "PNG",
            "RGB",
            (224, 224),
        )
        item = explanation.item
        if item.pk not in views:
            views[item.pk] = item_model_view(item=item, model=demo.model)
        expected = rendering.overlay(views[item.pk], rendering.normalize_each(array[None])[0])
        np.testing.assert_array_equal(np.asarray(overlay_img), expected)


@pytest.mark.django_db
def test_finished_job_is_not_run_again(demo):
    before = Explanation.objects.filter(model=demo.model).count()
    job = explanation_job_run(job_id=demo.job.pk)
    assert job.status == JobStatus.SUCCEEDED
    assert list(job.job_items.values_list("attempts", flat=True)) == [1] * 10
    assert Explanation.objects.filter(model=demo.model).count() == before


@pytest.mark.django_db
def test_rerunning_a_job_with_all_items_pending_again_is_idempotent(demo):
    rows_before = sorted(
        Explanation.objects.filter(model=demo.model).values_list("pk", "target_index", "array")
    )
    predictions_before = Prediction.objects.filter(model=demo.model).count()
    ExplanationJob.objects.filter(pk=demo.job.pk).update(
        status=JobStatus.PENDING, done_items=0, failed_items=0, finished_at=None
    )
    ExplanationJobItem.objects.filter(job_id=demo.job.pk).update(status=JobItemStatus.PENDING)

    job = explanation_job_run(job_id=demo.job.pk)

    assert job.status == JobStatus.SUCCEEDED
    assert (job.done_items, job.failed_items) == (10, 0)
    assert list(job.job_items.values_list("attempts", flat=True)) == [2] * 10
    rows_after = sorted(
        Explanation.objects.filter(model=demo.model).values_list("pk", "target_index", "array")
    )
    assert rows_after == rows_before
    assert Prediction.objects.filter(model=demo.model).count() == predictions_before


# --- failures inside a job -----------------------------------------------------------------------


def _photo_sources(names: list[str]) -> list[ImageSource]:
    photos = {photo.name: photo for photo in DEMO_PHOTOS}
    return [
        ImageSource(name=n, data=encode_png(photos[n].load()), label_index=photos[n].label_index)
        for n in names
    ]


def _corrupt_on_disk(item) -> None:
    """Truncate the stored photo and drop any cached model view of its content (the demo
    dataset holds the same photos, and a view cached by content would still be served)."""
    path = item.image.path
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
    views = Path(settings.MEDIA_ROOT) / "views"
    for cached in views.rglob(f"{item.sha256}-*.npy") if views.exists() else []:
        cached.unlink()


@pytest.mark.django_db
def test_item_whose_stored_image_was_corrupted_fails_and_the_others_succeed(demo):
    dataset = Dataset.objects.create(name="Corrupted on disk")
    report = dataset_import(
        dataset=dataset, sources=_photo_sources(["coffee", "rocket", "chelsea"])
    )
    assert report.imported == ["coffee", "rocket", "chelsea"]
    _corrupt_on_disk(dataset.items.get(name="rocket"))
    with enqueue_patched():
        job = explanation_job_create(model=demo.model, dataset=dataset, top_k=TOP_K)

    job = explanation_job_run(job_id=job.pk)

    assert job.status == JobStatus.SUCCEEDED
    assert (job.total_items, job.done_items, job.failed_items) == (3, 2, 1)
    states = {ji.item.name: ji for ji in job.job_items.select_related("item")}
    assert states["coffee"].status == states["chelsea"].status == JobItemStatus.DONE
    failed = states["rocket"]
    assert failed.status == JobItemStatus.FAILED
    assert failed.error.startswith(
        "ImageDecodeError: rocket: cannot decode image: truncated or corrupt"
    )
    assert job.error.startswith("rocket: ImageDecodeError: rocket: ")
    rocket = dataset.items.get(name="rocket")
    assert not Prediction.objects.filter(item=rocket).exists()
    assert not Explanation.objects.filter(item=rocket).exists()
    for name in ("coffee", "chelsea"):
        assert Explanation.objects.filter(item__dataset=dataset, item__name=name).count() >= TOP_K


@pytest.mark.django_db
def test_job_whose_only_item_is_corrupted_fails(demo):
    dataset = Dataset.objects.create(name="Only a corrupted photo")
    dataset_import(dataset=dataset, sources=_photo_sources(["clock"]))
    _corrupt_on_disk(dataset.items.get())
    with enqueue_patched():
        job = explanation_job_create(model=demo.model, dataset=dataset, top_k=1)

    job = explanation_job_run(job_id=job.pk)

    assert job.status == JobStatus.FAILED
    assert (job.done_items, job.failed_items) == (0, 1)
    assert "clock: ImageDecodeError" in job.error
