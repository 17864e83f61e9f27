"""Bring your own model and dataset, end to end, with a model defined right here.

A tiny CNN (conv -> relu -> conv -> global average pool -> linear) whose weights are set by
hand so that it classifies images by their dominant colour: after the identity convolutions
the pooled features are the mean (R, G, B) of the input in [0, 1], and the head scores class
``k`` with colour ``c_k`` as ``10 * (2 c_k . x - |c_k|^2)``, i.e. the negative squared distance
to ``c_k`` up to a term shared by all classes. Grad-CAM on ``conv2`` for class ``k`` is then
``ReLU(sum_j 20 c_kj A_j) / (h w)``: the map of a red class is the red channel, so it is
bright on the red square and dark on the grey background, which we can check.

It is registered as a factory + safetensors state dict, an ImageFolder of 9 generated images
is imported, a Grad-CAM job runs through the service, and a HIVE study is built from it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from explanations.importers import read_folder, read_manifest
from explanations.modelio import file_sha256, pixels_to_input
from explanations.models import (
    Explanation,
    ExplanationJobItem,
    JobItemStatus,
    JobStatus,
    ModelKind,
    Prediction,
    RegionKind,
)
from explanations.services import (
    classifier_load,
    dataset_import_listing,
    explanation_array_load,
    explanation_job_create,
    explanation_job_run,
    explanation_overlay_ensure,
    item_model_view,
    model_register,
)
from explanations.services import jobs as job_services
from studies.models import TaskType
from studies.services import study_create_hive

FACTORY = "tests.explanations.test_byo_roundtrip:tiny_cnn"

#: torch warns that TorchScript is deprecated; it is still what researchers bring.
quiet_torchscript = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

#: Class name -> colour in [0, 1]; the dataset has images of the first three only.
COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}
#: Inputs in [0, 1]: (pixel - 0) / 255.
UNIT_RANGE = {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
INPUT_SIZE = 32
BACKGROUND = 30  # dark grey


class TinyCNN(nn.Module):
    """conv(3 -> 4, 3x3) -> ReLU -> conv(4 -> 4, 3x3) -> global average pool -> linear."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.conv2(self.relu(self.conv1(x)))).flatten(1))


def tiny_cnn(num_classes: int = 3) -> nn.Module:
    """The factory the platform imports by its dotted path (``FACTORY``)."""
    return TinyCNN(num_classes)


def colour_state_dict(class_names: list[str]) -> dict[str, torch.Tensor]:
    """Hand-set weights: identity convolutions (centre tap), a nearest-colour head."""
    net = TinyCNN(len(class_names))
    with torch.no_grad():
        for conv in (net.conv1, net.conv2):
            conv.weight.zero_()
            conv.bias.zero_()
            for channel in range(3):
                conv.weight[channel, channel, 1, 1] = 1.0
        net.conv2.weight[3, 3, 1, 1] = 1.0
        for k, name in enumerate(class_names):
            c = torch.tensor(COLOURS[name])
            net.head.weight[k] = torch.cat([20.0 * c, torch.zeros(1)])
            net.head.bias[k] = -10.0 * float(c @ c)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def write_weights(path: Path, class_names: list[str]) -> Path:
    save_file(colour_state_dict(class_names), str(path))
    return path


def write_classes(path: Path, class_names: list[str]) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(class_names))
    else:
        path.write_text("\n".join(class_names) + "\n")
    return path


def square_image(colour: str, seed: int, width: int = 48, height: int = 40) -> np.ndarray:
    """A dark grey photo with a coloured square inside its central crop, plus a little noise."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), BACKGROUND, dtype=np.int16)
    side = 14 + 2 * (seed % 3)
    x0 = 8 + 5 * (seed % 4)
    y0 = 4 + 4 * (seed % 3)
    pixels[y0 : y0 + side, x0 : x0 + side] = np.array(COLOURS[colour]) * 220 + 20
    pixels += rng.integers(-8, 9, size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_image_folder(root: Path, per_class: int = 3) -> Path:
    """root/<red|green|blue>/<n>.png: 3 classes, ``per_class`` images each."""
    for offset, colour in enumerate(("red", "green", "blue")):
        (root / colour).mkdir(parents=True)
        for n in range(per_class):
            seed = 10 * offset + n
            (root / colour / f"{colour}-{n}.png").write_bytes(png(square_image(colour, seed)))
    return root


@pytest.fixture
def media(settings, tmp_path) -> Path:
    """A private MEDIA_ROOT, so the files under it are this test's alone."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def factory_model(db, media, tmp_path):
    """The tiny CNN registered as a factory with four classes (HIVE needs four candidates)."""
    names = list(COLOURS)
    return model_register(
        name="Tiny colours",
        kind=ModelKind.FACTORY,
        architecture=FACTORY,
        weights_path=write_weights(tmp_path / "tiny.safetensors", names),
        class_names=write_classes(tmp_path / "classes.txt", names),
        input_size=INPUT_SIZE,
        normalization=UNIT_RANGE,
    )


@pytest.fixture
def folder_dataset(db, media, tmp_path):
    from explanations.models import Dataset

    dataset = Dataset.objects.create(name="Colour squares")
    report = dataset_import_listing(
        dataset=dataset, listing=read_folder(write_image_folder(tmp_path / "squares"))
    )
    assert report.failed == [] and report.duplicates == []
    return dataset


def job_run_through_services(model, dataset, monkeypatch, capture, top_k=4):
    """Create the job (its enqueue after commit is recorded, not sent) and run it inline."""
    sent = []
    monkeypatch.setattr(
        job_services, "explanation_job_enqueue", lambda *, job_id: sent.append(job_id)
    )
    with capture(execute=True):
        job = explanation_job_create(model=model, dataset=dataset, top_k=top_k)
    assert sent == [job.pk]  # enqueued once, after the commit
    return explanation_job_run(job_id=job.pk)


# --- registration ------------------------------------------------------------------------


def test_factory_model_registers_with_checksum_suggested_layer_and_stored_copy(
    factory_model, media, tmp_path
):
    model = factory_model
    assert model.kind == ModelKind.FACTORY
    assert model.architecture == FACTORY
    assert model.class_names == ["red", "green", "blue", "yellow"]
    assert model.target_layer == "conv2"  # the last nn.Conv2d
    assert model.weights_sha256 == file_sha256(tmp_path / "tiny.safetensors")
    stored = Path(model.weights_path)
    assert stored == media / "models" / f"{model.weights_sha256}.safetensors"
    assert stored.read_bytes() == (tmp_path / "tiny.safetensors").read_bytes()
    assert (model.normalization_mean, model.normalization_std) == ([0.0] * 3, [255.0] * 3)


def test_hand_set_weights_classify_by_dominant_colour(factory_model):
    net = classifier_load(factory_model)
    for k, colour in enumerate(factory_model.class_names[:3]):
        view = np.asarray(
            Image.fromarray(square_image(colour, seed=k)).resize((INPUT_SIZE, INPUT_SIZE))
        )
        x = pixels_to_input(view, UNIT_RANGE["mean"], UNIT_RANGE["std"])
        with torch.no_grad():
            assert int(net(x).argmax()) == k


# --- the round trip ----------------------------------------------------------------------


def test_image_folder_import_takes_the_sorted_folder_names_as_label_space(folder_dataset):
    assert folder_dataset.class_names == ["blue", "green", "red"]
    items = list(folder_dataset.items.order_by("name"))
    assert len(items) == 9
    assert {(i.name.split("/")[0], i.label_name) for i in items} == {
        ("blue", "blue"),
        ("green", "green"),
        ("red", "red"),
    }
    assert all(i.label_index == ["blue", "green", "red"].index(i.label_name) for i in items)
    assert {(i.width, i.height) for i in items} == {(48, 40)}


def test_round_trip_predicts_every_item_and_stores_gradcam_maps_on_disk(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    job = job_run_through_services(
        factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
    )

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.total_items, job.done_items, job.failed_items) == (9, 9, 0)
    assert set(job.job_items.values_list("status", flat=True)) == {JobItemStatus.DONE}
    predictions = list(Prediction.objects.filter(model=factory_model).select_related("item"))
    assert len(predictions) == 9
    for prediction in predictions:
        # model classes are red, green, blue, yellow; dataset labels are matched by name
        assert prediction.topk[0]["name"] == prediction.item.label_name
        assert prediction.is_correct is True
        assert len(prediction.topk) == 4  # min(PREDICTION_TOP_K, num_classes)
        assert prediction.probability > 0.5

    explanations = list(Explanation.objects.filter(model=factory_model, method="gradcam"))
    assert len(explanations) == 9 * 4  # top-4 = every class; the truth is among them
    for explanation in explanations:
        assert Path(explanation.array.path).is_file()
        assert not explanation.overlay  # drawn on first request, not on the worker's time
        explanation = explanation_overlay_ensure(explanation)
        assert Path(explanation.overlay.path).is_file()
        saliency = explanation_array_load(explanation)
        assert saliency.shape == (INPUT_SIZE, INPUT_SIZE) and saliency.dtype == np.float32
        assert saliency.min() >= 0.0
        assert explanation.params["layer"] == "conv2"
        with Image.open(explanation.overlay.path) as overlay:
            assert overlay.size == (INPUT_SIZE, INPUT_SIZE)


def test_gradcam_of_the_true_class_is_bright_on_the_coloured_square(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    job_run_through_services(
        factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
    )
    for item in folder_dataset.items.all():
        truth = item.label_for(factory_model)
        view = item_model_view(item=item, model=factory_model)
        square = view[..., truth] > 128  # the coloured square, as the model sees it
        assert 0.1 < square.mean() < 0.7
        saliency = explanation_array_load(
            Explanation.objects.get(model=factory_model, item=item, target_index=truth)
        )
        assert saliency[square].mean() > 3 * saliency[~square].mean(), item.name


def test_hive_study_from_the_round_trip_has_both_tasks_for_every_labelled_item(
    factory_model, folder_dataset, researcher, monkeypatch, django_capture_on_commit_callbacks
):
    job_run_through_services(
        factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
    )
    study = study_create_hive(
        title="Tiny colours HIVE",
        owner=researcher,
        model=factory_model,
        dataset=folder_dataset,
        seed=3,
    )
    trials = list(study.trials.select_related("item"))
    assert len(trials) == 18
    for task in (TaskType.AGREEMENT, TaskType.DISTINCTION):
        of_task = [t for t in trials if t.task_type == task]
        assert sorted(t.item.name for t in of_task) == sorted(
            folder_dataset.items.values_list("name", flat=True)
        )
        assert all(t.model_correct for t in of_task)
    distinction = [t for t in trials if t.task_type == TaskType.DISTINCTION]
    assert all(sorted(t.option_classes.values()) == [0, 1, 2, 3] for t in distinction)


def test_a_three_class_model_gets_three_way_distinction_trials_with_chance_one_third(
    db, media, tmp_path, folder_dataset, researcher, monkeypatch, django_capture_on_commit_callbacks
):
    """HIVE shows four candidates; a model with three classes can only offer three, so its
    distinction trials are 3-way and their chance level is 1/3."""
    from analysis.datasets import trial_chance

    names = ["red", "green", "blue"]
    model = model_register(
        name="Tiny colours, 3 classes",
        kind=ModelKind.FACTORY,
        architecture=FACTORY,
        weights_path=write_weights(tmp_path / "three.safetensors", names),
        class_names=names,
        input_size=INPUT_SIZE,
        normalization=UNIT_RANGE,
    )
    job = job_run_through_services(
        model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks, top_k=3
    )
    assert job.status == JobStatus.SUCCEEDED and job.done_items == 9
    study = study_create_hive(title="Three", owner=researcher, model=model, dataset=folder_dataset)
    distinction = list(study.trials.filter(task_type=TaskType.DISTINCTION))
    assert len(distinction) == 9
    assert all(sorted(t.option_classes.values()) == [0, 1, 2] for t in distinction)
    assert {trial_chance(t) for t in distinction} == {1 / 3}


# --- TorchScript ---------------------------------------------------------------------------


@pytest.fixture
def torchscript_model(db, media, tmp_path):
    names = ["red", "green", "blue"]
    net = TinyCNN(3)
    net.load_state_dict(colour_state_dict(names))
    torch.jit.script(net.eval()).save(str(tmp_path / "scripted.pt"))
    return model_register(
        name="Tiny colours (TorchScript)",
        kind=ModelKind.TORCHSCRIPT,
        weights_path=tmp_path / "scripted.pt",
        class_names=write_classes(tmp_path / "classes.json", names),
        input_size=INPUT_SIZE,
        normalization=UNIT_RANGE,
    )


@quiet_torchscript
def test_torchscript_model_registers_without_a_target_layer_and_predicts(
    torchscript_model, folder_dataset
):
    assert torchscript_model.kind == ModelKind.TORCHSCRIPT
    assert torchscript_model.target_layer == ""
    assert torchscript_model.architecture == ""
    net = classifier_load(torchscript_model)
    assert isinstance(net, torch.jit.ScriptModule)
    for item in folder_dataset.items.all():
        view = item_model_view(item=item, model=torchscript_model)
        x = pixels_to_input(view, UNIT_RANGE["mean"], UNIT_RANGE["std"])
        with torch.no_grad():
            predicted = int(net(x).argmax())
        assert torchscript_model.class_name(predicted) == item.label_name


@quiet_torchscript
def test_gradcam_job_on_a_torchscript_model_cannot_start_and_says_why(
    torchscript_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks
):
    job = job_run_through_services(
        torchscript_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks, top_k=3
    )
    assert job.status == JobStatus.FAILED
    assert job.error == (
        "cannot start: Grad-CAM hooks an nn.Conv2d layer of the model, and TorchScript models "
        "do not support layer hooks; register 'Tiny colours (TorchScript)' as a factory + "
        "state dict to explain it with Grad-CAM"
    )
    assert job.finished_at is not None
    assert job.done_items == 0
    assert ExplanationJobItem.objects.filter(job=job, status=JobItemStatus.PENDING).count() == 9
    assert not Prediction.objects.filter(model=torchscript_model).exists()


# --- manifest with regions ------------------------------------------------------------------


def test_manifest_import_stores_normalised_boxes_in_pixels_and_masks_as_binary_png(
    db, media, tmp_path
):
    from explanations.models import Dataset

    root = tmp_path / "manifest"
    root.mkdir()
    (root / "a.png").write_bytes(png(square_image("red", 1)))  # 48 x 40
    (root / "b.png").write_bytes(png(square_image("blue", 2)))
    mask = np.zeros((40, 48), dtype=np.uint8)
    mask[10:20, 12:30] = 7  # any nonzero value is "inside"
    (root / "b-mask.png").write_bytes(png(mask))
    (root / "manifest.csv").write_text(
        "file,label,split,x0,y0,x1,y1,box_units,mask\n"
        "a.png,red,train,0.25,0.1,0.75,0.5,norm,\n"
        "b.png,blue,val,,,,,,b-mask.png\n"
    )
    dataset = Dataset.objects.create(name="With regions")
    report = dataset_import_listing(dataset=dataset, listing=read_manifest(root / "manifest.csv"))

    assert report.imported == ["a.png", "b.png"] and report.failed == []
    assert dataset.class_names == ["blue", "red"]
    a, b = dataset.items.get(name="a.png"), dataset.items.get(name="b.png")
    assert (a.split, b.split) == ("train", "val")
    box = a.regions.get()
    assert box.kind == RegionKind.BOX
    assert (box.x0, box.y0, box.x1, box.y1) == (12.0, 4.0, 36.0, 20.0)  # of 48 x 40 pixels
    region = b.regions.get()
    assert region.kind == RegionKind.MASK
    with Image.open(region.mask.path) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "L", (48, 40))
        stored = np.asarray(img)
    assert set(np.unique(stored)) == {0, 255}
    np.testing.assert_array_equal(stored == 255, mask > 0)
