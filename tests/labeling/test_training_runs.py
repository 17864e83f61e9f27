"""Training runs end to end on a tiny dataset, the Grad-CAM the queue shows, IDX import and the
commands (label_train, curate, dataset_import --idx)."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from PIL import Image

from explanations.models import ClassifierModel, Dataset
from labeling.curation import curation_project_build, curation_project_create
from labeling.models import ItemLabel, RunStatus, TrainingRun
from labeling.services import (
    LabelingError,
    run_arrays,
    training_run_create,
    training_run_execute,
)

TINY = {"folds": 2, "epochs": 1, "seed": 0}


@pytest.fixture
def trained_run(small_dataset, researcher):
    run = training_run_create(
        dataset=small_dataset, config=TINY, test_split="", user=researcher, enqueue=False
    )
    return training_run_execute(run_id=run.pk)


def test_a_run_stores_out_of_sample_arrays_and_registers_its_model(trained_run):
    run = trained_run
    assert run.status == RunStatus.SUCCEEDED, run.error
    arrays = run_arrays(run)
    assert arrays["item_ids"].shape == (30,)
    assert arrays["pred_probs"].shape == (30, 3) and arrays["pred_probs"].dtype == np.float32
    np.testing.assert_allclose(arrays["pred_probs"].sum(1), 1, atol=1e-5)
    assert arrays["embeddings"].shape[0] == 30
    assert len(run.fold_accuracy) == 2 and run.test_accuracy is None
    model = run.classifier
    assert model.kind == "factory" and model.architecture == "labeling.training.small_cnn"
    assert model.target_layer == "features.conv2" and model.class_names == ["ant", "bee", "cat"]
    assert model.weights_sha256 == run.weights_sha256
    assert run.weights.name.endswith(".safetensors")


def test_the_queue_shows_gradcam_for_the_given_and_the_model_class(trained_run, researcher, client):
    project = curation_project_create(
        run=trained_run, name="g", owner=researcher, scope="all", enqueue=False
    )
    project = curation_project_build(project_id=project.pk)
    entry = project.entries.order_by("rank").first()
    client.force_login(researcher)
    url = f"/label/projects/{project.pk}/entries/{entry.pk}/gradcam/1.png"
    r = client.get(url)
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(b"".join(r.streaming_content)))
    assert image.size == (224, 224) and image.mode == "RGB"  # 28 px shown at 8x
    assert default_storage.exists(f"labeling/gradcam/run-{trained_run.pk}/{entry.item_id}-1.png")
    assert (
        client.get(f"/label/projects/{project.pk}/entries/{entry.pk}/gradcam/3.png").status_code
        == 404
    )


def test_a_corrupt_image_fails_the_run_with_its_reason_and_registers_nothing(
    small_dataset, researcher
):
    item = small_dataset.items.order_by("pk")[4]
    item.image.save("broken.png", ContentFile(b"not a png"), save=True)
    run = training_run_create(dataset=small_dataset, config=TINY, user=researcher, enqueue=False)
    run = training_run_execute(run_id=run.pk)
    assert run.status == RunStatus.FAILED and "train-00004" in run.error
    assert not ClassifierModel.objects.exists()
    # a finished run is not run again
    assert training_run_execute(run_id=run.pk).status == RunStatus.FAILED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config": {"learning_rate": 1}}, "unknown training option"),
        ({"train_split": "nope"}, "need at least 20"),
    ],
)
def test_bad_run_requests_are_refused_before_anything_is_queued(small_dataset, kwargs, message):
    with pytest.raises(LabelingError, match=message):
        training_run_create(dataset=small_dataset, enqueue=False, **kwargs)
    assert not TrainingRun.objects.exists()


def _idx(path, array: np.ndarray, *, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (12, 28, 28)), compress=True)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(12) % 10, compress=True)
    _idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (4, 28, 28)), compress=False)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([9, 0, 0, 1]), compress=False)
    return tmp_path


def test_dataset_import_reads_idx_files_into_items_and_label_version_1(idx_dir, db):
    out = io.StringIO()
    call_command("dataset_import", "--name", "fm", "--idx", str(idx_dir), stdout=out)
    dataset = Dataset.objects.get(name="fm")
    assert dataset.class_names[9] == "Ankle boot" and dataset.items.count() == 16
    test0 = dataset.items.get(name="test-00000")
    assert (test0.split, test0.label_index, test0.label_name) == ("test", 9, "Ankle boot")
    with test0.image.open("rb") as fh:
        pixels = np.asarray(Image.open(fh))
    assert pixels.shape == (28, 28, 3) and (pixels[..., 0] == pixels[..., 2]).all()
    version = dataset.label_versions.get(number=1)
    assert ItemLabel.objects.filter(version=version).count() == 16
    # importing again adds nothing
    call_command("dataset_import", "--name", "fm", "--idx", str(idx_dir), stdout=out)
    assert dataset.items.count() == 16 and "16 duplicates skipped" in out.getvalue()


def test_a_broken_idx_directory_creates_no_dataset(idx_dir, db):
    data = (idx_dir / "t10k-images-idx3-ubyte").read_bytes()
    (idx_dir / "t10k-images-idx3-ubyte").write_bytes(data[:-10])
    with pytest.raises(CommandError, match="cannot read IDX"):
        call_command("dataset_import", "--name", "fm", "--idx", str(idx_dir))
    assert not Dataset.objects.exists()


def test_label_train_and_curate_commands(small_dataset, researcher, curator):
    out = io.StringIO()
    call_command(
        "label_train",
        small_dataset.name,
        "--folds",
        "2",
        "--epochs",
        "1",
        "--test-split",
        "",
        stdout=out,
    )
    text = out.getvalue()
    assert "held-out accuracy per fold" in text and "registered model" in text
    run = TrainingRun.objects.get()
    out = io.StringIO()
    call_command(
        "curate",
        str(run.pk),
        "--owner",
        "researcher",
        "--curators",
        "curator",
        "--scope",
        "all",
        stdout=out,
    )
    assert "30 in the queue" in out.getvalue()
    with pytest.raises(CommandError, match="no user"):
        call_command("curate", str(run.pk), "--owner", "researcher", "--curators", "ghost")
    out = io.StringIO()
    call_command(
        "curate",
        str(run.pk),
        "--owner",
        "researcher",
        "--curators",
        "ghost,curator",
        "--overlap",
        "2",
        "--create-curators",
        stdout=out,
    )
    assert "created curator 'ghost', password" in out.getvalue()
    ghost = get_user_model().objects.get(username="ghost")
    assert not ghost.is_staff and ghost.has_usable_password()
    with pytest.raises(CommandError, match="no dataset"):
        call_command("label_train", "ghost")
