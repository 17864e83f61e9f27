"""Everything a researcher can get wrong when bringing a model or a dataset, and what they see.

Model registration: every check of ``model_register`` fails with a message naming the
problem, and nothing is left behind (no ``ClassifierModel`` row, no file under
``MEDIA_ROOT/models/``). Dataset import: a broken file or row is reported with its reason and
the other files of the same import are still imported; a source that is unusable as a whole
(unsafe or oversized zip, manifest without a ``file`` column) fails the import with its reason
and imports nothing.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from explanations.importers import ImportFormatError, read_manifest, read_zip
from explanations.models import ClassifierModel, Dataset, Item, JobStatus, ModelKind, Region
from explanations.services import (
    ModelRegistrationError,
    dataset_import_job_create,
    dataset_import_job_run,
    dataset_import_listing,
    model_register,
)
from explanations.services import datasets as dataset_services
from tests.explanations.test_byo_roundtrip import (
    FACTORY,
    UNIT_RANGE,
    TinyCNN,
    colour_state_dict,
    png,
    quiet_torchscript,
    square_image,
    write_classes,
    write_weights,
)

THIS = "tests.explanations.test_byo_rejections"
NAMES = ["red", "green", "blue"]


# --- factories the registry imports by dotted path -------------------------------------------


def raising_factory(num_classes: int = 3) -> nn.Module:
    raise RuntimeError("this factory needs a GPU cluster")


def dict_factory(num_classes: int = 3):
    return {"conv": "not a module"}


class SystemPayload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TinyMLP(nn.Module):
    """Another architecture: its state dict has none of TinyCNN's keys."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 3)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def good(tmp_path) -> dict:
    """Arguments of a registration that succeeds; each test breaks one of them."""
    return {
        "name": "Tiny colours",
        "kind": ModelKind.FACTORY,
        "architecture": FACTORY,
        "weights_path": write_weights(tmp_path / "tiny.safetensors", NAMES),
        "class_names": write_classes(tmp_path / "classes.txt", NAMES),
        "input_size": 32,
        "normalization": UNIT_RANGE,
    }


def stored_model_files(media: Path) -> list[Path]:
    folder = media / "models"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def register_fails(media: Path, message: str, **kwargs) -> str:
    """Register, expect ModelRegistrationError with exactly ``message``; nothing is saved."""
    with pytest.raises(ModelRegistrationError) as info:
        model_register(**kwargs)
    assert ClassifierModel.objects.count() == 0
    assert stored_model_files(media) == []
    assert str(info.value) == message
    return str(info.value)


def scripted(path: Path, num_classes: int = 3) -> Path:
    net = TinyCNN(num_classes).eval()
    torch.jit.script(net).save(str(path))
    return path


# --- model_register ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_good_arguments_do_register(media, good):
    model = model_register(**good)
    assert ClassifierModel.objects.get() == model
    assert stored_model_files(media) == [Path(model.weights_path)]


@pytest.mark.django_db
def test_factory_path_that_does_not_import(media, good):
    good["architecture"] = "tests.explanations.no_such_module:tiny_cnn"
    register_fails(
        media,
        "factory 'tests.explanations.no_such_module:tiny_cnn': cannot import "
        "'tests.explanations.no_such_module' (ModuleNotFoundError: No module named "
        "'tests.explanations.no_such_module')",
        **good,
    )


@pytest.mark.django_db
def test_factory_module_without_that_function(media, good):
    good["architecture"] = f"{THIS}:no_such_function"
    register_fails(
        media,
        f"factory '{THIS}:no_such_function': '{THIS}' has no function 'no_such_function'",
        **good,
    )


@pytest.mark.django_db
def test_factory_that_raises(media, good):
    good["architecture"] = f"{THIS}:raising_factory"
    register_fails(
        media,
        f"factory '{THIS}:raising_factory' raised RuntimeError: this factory needs a GPU cluster",
        **good,
    )


@pytest.mark.django_db
def test_factory_returning_a_non_module(media, good):
    good["architecture"] = f"{THIS}:dict_factory"
    register_fails(
        media, f"factory '{THIS}:dict_factory' returned dict, not a torch.nn.Module", **good
    )


@pytest.mark.django_db
def test_factory_kind_without_a_dotted_path(media, good):
    good["architecture"] = ""
    register_fails(
        media, "a factory model needs its dotted path, e.g. 'mymodels:get_model'", **good
    )


@pytest.mark.django_db
def test_state_dict_of_another_architecture_lists_missing_and_unexpected_keys(
    media, good, tmp_path
):
    save_file(TinyMLP().state_dict(), str(tmp_path / "mlp.safetensors"))
    good["weights_path"] = tmp_path / "mlp.safetensors"
    register_fails(
        media,
        "mlp.safetensors: state dict does not match the architecture: missing keys (6): "
        "['conv1.bias', 'conv1.weight', 'conv2.bias', 'conv2.weight', 'head.bias']; "
        "unexpected keys (2): ['fc.bias', 'fc.weight']",
        **good,
    )


@pytest.mark.django_db
def test_pickle_that_would_run_code_is_refused_and_does_not_run(media, good, tmp_path):
    marker = tmp_path / "pwned"
    state = colour_state_dict(NAMES)
    torch.save({**state, "payload": SystemPayload(marker)}, tmp_path / "evil.pt")
    good["weights_path"] = tmp_path / "evil.pt"
    with pytest.raises(ModelRegistrationError) as info:
        model_register(**good)
    assert not marker.exists(), "the pickle's code ran"
    message = str(info.value)
    assert message.startswith("evil.pt: refused to load: the file contains Python objects")
    assert "could execute code (weights_only=True)" in message
    assert "system" in message  # names what was refused
    assert ClassifierModel.objects.count() == 0
    assert stored_model_files(media) == []


@pytest.mark.django_db
def test_truncated_safetensors_file(media, good, tmp_path):
    data = Path(good["weights_path"]).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    good["weights_path"] = tmp_path / "cut.safetensors"
    with pytest.raises(
        ModelRegistrationError, match=r"^cut\.safetensors: not a readable safetensors file \("
    ):
        model_register(**good)
    assert ClassifierModel.objects.count() == 0
    assert stored_model_files(media) == []


@pytest.mark.django_db
def test_missing_weights_file(media, good, tmp_path):
    good["weights_path"] = tmp_path / "nowhere.safetensors"
    register_fails(media, "nowhere.safetensors: weights file not found", **good)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("dup.txt", "red\ngreen\nred\n", "class names must be unique; repeated: ['red']"),
        ("dup.json", '["a", "b", "a", "b"]', "class names must be unique; repeated: ['a', 'b']"),
        ("empty.txt", "", "class_names is empty"),
        ("blank.txt", "\n  \n\n", "class_names is empty"),
        ("empty.json", "[]", "class_names is empty"),
        ("object.json", '{"0": "red"}', "object.json: expected a JSON list of class names"),
        (
            "broken.json",
            '["red",',
            "broken.json: not valid JSON (Expecting value: line 1 column 8 (char 7))",
        ),
    ],
)
def test_bad_class_names_file(media, good, tmp_path, file_name, content, message):
    (tmp_path / file_name).write_text(content)
    good["class_names"] = tmp_path / file_name
    register_fails(media, message, **good)


@pytest.mark.django_db
def test_class_names_list_with_a_blank_name(media, good):
    good["class_names"] = ["red", " ", "blue"]
    register_fails(media, "class names must not be blank", **good)


@pytest.mark.django_db
def test_fewer_class_names_than_the_checkpoints_logits_is_a_shape_mismatch(media, good):
    """The factory is built with num_classes = number of names, so the head does not fit."""
    good["class_names"] = ["red", "green"]
    register_fails(
        media,
        "tiny.safetensors: state dict does not match the architecture: shape mismatches (2): "
        "['head.bias: checkpoint (3,) vs model (2,)', "
        "'head.weight: checkpoint (3, 4) vs model (2, 4)']",
        **good,
    )


@quiet_torchscript
@pytest.mark.django_db
def test_wrong_number_of_class_names_for_the_logits(media, good, tmp_path):
    """A TorchScript model's output width is fixed: the forward pass check catches it."""
    good.update(
        kind=ModelKind.TORCHSCRIPT,
        architecture="",
        weights_path=scripted(tmp_path / "scripted.pt"),
        class_names=["red", "green", "blue", "yellow"],
    )
    register_fails(
        media,
        "a forward pass gave logits of shape (1, 3), expected (1, 4) for 4 class names",
        **good,
    )


@pytest.mark.django_db
def test_unknown_target_layer(media, good):
    good["target_layer"] = "conv9"
    register_fails(media, "target layer 'conv9' does not exist in the model", **good)


@quiet_torchscript
@pytest.mark.django_db
def test_torchscript_with_a_target_layer(media, good, tmp_path):
    good.update(
        kind=ModelKind.TORCHSCRIPT,
        architecture="",
        weights_path=scripted(tmp_path / "scripted.pt"),
        target_layer="conv2",
    )
    register_fails(
        media,
        "TorchScript models do not support layer hooks, so CAM methods cannot use a target "
        "layer; register the model as a factory + state dict to use Grad-CAM",
        **good,
    )


@quiet_torchscript
@pytest.mark.django_db
def test_file_that_is_not_torchscript(media, good):
    good.update(kind=ModelKind.TORCHSCRIPT, architecture="")
    with pytest.raises(
        ModelRegistrationError, match=r"^tiny\.safetensors: not a TorchScript archive \("
    ):
        model_register(**good)
    assert ClassifierModel.objects.count() == 0
    assert stored_model_files(media) == []


@pytest.mark.django_db
@pytest.mark.parametrize("size", [0, 4, 7, 2049, 100_000])
def test_bad_input_size(media, good, size):
    good["input_size"] = size
    register_fails(media, f"input_size must be 8..2048 pixels, got {size}", **good)


@pytest.mark.django_db
def test_unknown_resize_policy(media, good):
    good["resize_policy"] = "stretch"
    register_fails(
        media, "unknown resize policy 'stretch'; use one of ['center-crop', 'resize']", **good
    )


@pytest.mark.django_db
def test_unknown_kind(media, good):
    good["kind"] = "onnx"
    register_fails(
        media,
        "unknown model kind 'onnx'; use one of ['builtin', 'factory', 'torchscript', 'protopnet', 'cbm']",
        **good,
    )


@pytest.mark.django_db
def test_unknown_builtin_architecture(media, good):
    good.update(kind=ModelKind.BUILTIN, architecture="resnet-9000")
    register_fails(
        media, "unknown architecture 'resnet-9000'; known: ['efficientnet-lite0']", **good
    )


@pytest.mark.django_db
def test_unknown_normalisation_preset(media, good):
    good["normalization"] = "imagenett"
    register_fails(
        media,
        "unknown normalisation preset 'imagenett'; known: ['efficientnet-lite', 'imagenet']",
        **good,
    )


@pytest.mark.django_db
def test_name_already_registered_keeps_the_first_and_stores_nothing_new(media, good):
    first = model_register(**good)
    before = stored_model_files(media)
    with pytest.raises(
        ModelRegistrationError, match="^a model named 'Tiny colours' is already registered$"
    ):
        model_register(**good)
    assert list(ClassifierModel.objects.all()) == [first]
    assert stored_model_files(media) == before


# --- dataset rows that fail on their own ---------------------------------------------------


def write_manifest(root: Path, bad_row: str, files: dict[str, bytes]) -> Path:
    """A manifest: good-1, the bad row, good-2; the images are 48 x 40."""
    root.mkdir(exist_ok=True)
    (root / "good-1.png").write_bytes(png(square_image("red", 1)))
    (root / "good-2.png").write_bytes(png(square_image("green", 2)))
    (root / "bad.png").write_bytes(png(square_image("blue", 3)))
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "manifest.csv").write_text(
        "file,label,x0,y0,x1,y1,box_units,mask\n"
        "good-1.png,red,,,,,,\n"
        f"{bad_row}\n"
        "good-2.png,green,,,,,,\n"
    )
    return root / "manifest.csv"


def mask_png(shape, value=255) -> bytes:
    mask = np.zeros(shape, dtype=np.uint8)
    if value:
        mask[2:6, 3:9] = value
    return png(mask)


ROW_CASES = {
    "box outside the image": (
        "bad.png,blue,10,5,60,20,px,",
        {},
        "bad.png",
        "bad.png: box (10, 5, 60, 20) px does not fit the 48x40 image "
        "(need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)",
    ),
    "box with x0 > x1": (
        "bad.png,blue,30,5,10,20,px,",
        {},
        "bad.png",
        "bad.png: box (30, 5, 10, 20) px does not fit the 48x40 image "
        "(need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)",
    ),
    "normalised box above 1": (
        "bad.png,blue,0.1,0.1,1.5,0.5,norm,",
        {},
        "bad.png",
        "bad.png: normalised box (0.1, 0.1, 1.5, 0.5) has values outside [0, 1]",
    ),
    "box that is not numbers": (
        "bad.png,blue,1,2,three,4,px,",
        {},
        "bad.png",
        "row 3: box x0, y0, x1, y1 must all be numbers, got ['1', '2', 'three', '4']",
    ),
    "unknown box units": (
        "bad.png,blue,1,2,3,4,inch,",
        {},
        "bad.png",
        "row 3: box_units must be 'px' or 'norm', got 'inch'",
    ),
    "mask of the wrong size": (
        "bad.png,blue,,,,,,small-mask.png",
        {"small-mask.png": mask_png((10, 10))},
        "bad.png",
        "bad.png: mask is 10x10, the image is 48x40",
    ),
    "empty mask": (
        "bad.png,blue,,,,,,empty-mask.png",
        {"empty-mask.png": mask_png((40, 48), value=0)},
        "bad.png",
        "bad.png: mask is empty (no nonzero pixel)",
    ),
    "mask file missing": (
        "bad.png,blue,,,,,,nowhere.png",
        {},
        "bad.png",
        "row 3: mask file 'nowhere.png' not found",
    ),
    "mask that is not an image": (
        "bad.png,blue,,,,,,notes.png",
        {"notes.png": b"not an image"},
        "bad.png",
        "bad.png: mask is not a readable image (cannot identify image file <_io.BytesIO object at ",
    ),
    "label not in the dataset's classes": (
        "bad.png,purple,,,,,,",
        {},
        "bad.png",
        "label 'purple' is not one of the dataset's 3 classes",
    ),
    "file missing": (
        "missing.png,blue,,,,,,",
        {},
        "missing.png",
        "row 3: file 'missing.png' not found next to the manifest",
    ),
    "file outside the manifest's folder": (
        "../outside.png,blue,,,,,,",
        {},
        "../outside.png",
        "row 3: file '../outside.png' not found next to the manifest",
    ),
    "file that is not an image": (
        "text.png,blue,,,,,,",
        {"text.png": b"hello, I am text"},
        "text.png",
        "text.png: ",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(ROW_CASES), ids=list(ROW_CASES))
def test_broken_row_is_reported_and_the_other_files_are_imported(media, tmp_path, case):
    bad_row, files, name, message = ROW_CASES[case]
    (tmp_path / "outside.png").write_bytes(png(square_image("blue", 9)))
    manifest = write_manifest(tmp_path / "set", bad_row, files)
    dataset = Dataset.objects.create(name="Squares", class_names=NAMES)

    report = dataset_import_listing(
        dataset=dataset, listing=read_manifest(manifest, class_names=dataset.class_names)
    )

    assert report.imported == ["good-1.png", "good-2.png"]
    assert report.duplicates == []
    assert [n for n, _ in report.failed] == [name]
    assert report.failed[0][1].startswith(message)
    assert sorted(dataset.items.values_list("name", flat=True)) == ["good-1.png", "good-2.png"]
    assert not Region.objects.exists()  # nothing of the failed item was stored


@pytest.mark.django_db
def test_broken_rows_are_listed_in_the_background_job_report(media, tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_services, "_import_enqueue", lambda job_id: None)
    bad_row, files, name, message = ROW_CASES["mask of the wrong size"]
    manifest = write_manifest(tmp_path / "set", bad_row, files)
    dataset = Dataset.objects.create(name="Squares", class_names=NAMES)
    job = dataset_import_job_create(dataset=dataset, source_format="manifest", source_path=manifest)

    job = dataset_import_job_run(job_id=job.pk)

    assert job.status == JobStatus.SUCCEEDED
    assert (job.total_files, job.processed_files) == (3, 3)
    assert job.report == {
        "imported": 2,
        "duplicates": [],
        "failed": [{"file": name, "reason": message}],
    }


# --- sources that fail as a whole ------------------------------------------------------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def run_import_job(tmp_path, monkeypatch, source_format: str, path: Path):
    monkeypatch.setattr(dataset_services, "_import_enqueue", lambda job_id: None)
    dataset = Dataset.objects.create(name="Squares")
    job = dataset_import_job_create(dataset=dataset, source_format=source_format, source_path=path)
    job = dataset_import_job_run(job_id=job.pk)
    dataset.refresh_from_db()
    return dataset, job


@pytest.mark.django_db
def test_zip_with_a_parent_directory_member_is_refused_as_a_whole(media, tmp_path, monkeypatch):
    path = tmp_path / "evil.zip"
    path.write_bytes(
        zip_bytes(
            {
                "red/a.png": png(square_image("red", 1)),
                "../evil.png": png(square_image("blue", 2)),
            }
        )
    )
    dataset, job = run_import_job(tmp_path, monkeypatch, "zip", path)
    assert job.status == JobStatus.FAILED
    assert job.error == "unsafe path in archive: '../evil.png'"
    assert not dataset.items.exists()
    assert not (tmp_path / "evil.png").exists() and not (media.parent / "evil.png").exists()


@pytest.mark.django_db
def test_zip_with_an_absolute_member_is_refused(media):
    data = zip_bytes({"/etc/evil.png": png(square_image("red", 1))})
    with pytest.raises(ImportFormatError, match=r"^unsafe path in archive: '/etc/evil\.png'$"):
        read_zip(data, max_bytes=10**9)


@pytest.mark.django_db
def test_zip_above_the_unpacked_size_limit_is_refused(media, settings, tmp_path, monkeypatch):
    members = {f"red/{n}.png": png(square_image("red", n)) for n in range(3)}
    total = sum(len(d) for d in members.values())
    settings.STUDYPLATFORM_MAX_ZIP_BYTES = total - 1
    path = tmp_path / "big.zip"
    path.write_bytes(zip_bytes(members))
    dataset, job = run_import_job(tmp_path, monkeypatch, "zip", path)
    assert job.status == JobStatus.FAILED
    assert job.error == f"the archive unpacks to {total} bytes, above the limit of {total - 1}"
    assert not dataset.items.exists()


@pytest.mark.django_db
def test_manifest_without_a_file_column_is_refused(media, tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(png(square_image("red", 1)))
    path = tmp_path / "manifest.csv"
    path.write_text("path,label\na.png,red\n")
    dataset, job = run_import_job(tmp_path, monkeypatch, "manifest", path)
    assert job.status == JobStatus.FAILED
    assert job.error == "manifest.csv: no 'file' column (columns: ['label', 'path'])"
    assert not dataset.items.exists()


@pytest.mark.django_db
def test_file_that_is_not_a_zip_is_refused(media, tmp_path, monkeypatch):
    path = tmp_path / "photos.zip"
    path.write_bytes(b"PK but not really")
    dataset, job = run_import_job(tmp_path, monkeypatch, "zip", path)
    assert job.status == JobStatus.FAILED
    assert job.error == "not a zip archive (File is not a zip file)"


# --- zips: one bad member does not sink the others ---------------------------------------------


@pytest.mark.django_db
def test_zip_member_with_a_bad_crc_fails_alone(media, tmp_path, monkeypatch):
    """Regression: a corrupt member raised BadZipFile out of the import and left the job
    "running" for ever."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("red/a.png", png(square_image("red", 1)))
        archive.writestr("green/b.png", png(square_image("green", 2)))
    data = bytearray(buf.getvalue())
    at = data.find(b"IDAT")  # inside the first (stored, uncompressed) member
    data[at + 8] ^= 0xFF
    path = tmp_path / "crc.zip"
    path.write_bytes(bytes(data))

    dataset, job = run_import_job(tmp_path, monkeypatch, "zip", path)

    assert job.status == JobStatus.SUCCEEDED
    assert job.report == {
        "imported": 1,
        "duplicates": [],
        "failed": [
            {
                "file": "red/a.png",
                "reason": "red/a.png: cannot read the file (Bad CRC-32 for file 'red/a.png')",
            }
        ],
    }
    assert list(dataset.items.values_list("name", flat=True)) == ["green/b.png"]


@pytest.mark.django_db
def test_one_class_zip_is_an_image_folder(media, tmp_path, monkeypatch):
    """Regression: ``red/a.png, red/b.png`` was taken for loose files in a top folder and
    refused with "neither class folders nor a manifest"."""
    path = tmp_path / "red.zip"
    path.write_bytes(zip_bytes({f"red/{n}.png": png(square_image("red", n)) for n in range(2)}))
    dataset, job = run_import_job(tmp_path, monkeypatch, "zip", path)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert sorted(dataset.items.values_list("name", "label_name")) == [
        ("red/0.png", "red"),
        ("red/1.png", "red"),
    ]


@pytest.mark.django_db
def test_zip_inside_one_top_folder_still_strips_it(media, tmp_path, monkeypatch):
    path = tmp_path / "top.zip"
    path.write_bytes(
        zip_bytes(
            {
                "photos/red/a.png": png(square_image("red", 1)),
                "photos/blue/b.png": png(square_image("blue", 2)),
            }
        )
    )
    dataset, job = run_import_job(tmp_path, monkeypatch, "zip", path)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert dataset.class_names == ["blue", "red"]
    assert sorted(dataset.items.values_list("name", flat=True)) == ["blue/b.png", "red/a.png"]


# --- progress ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_progress_is_called_once_per_file_including_skipped_ones(media, tmp_path):
    """Regression: only imported files were counted, so an import job's progress stalled on
    failures and duplicates (and restarted at each batch of 64)."""
    manifest = write_manifest(tmp_path / "set", "missing.png,blue,,,,,,", {})
    dataset = Dataset.objects.create(name="Squares", class_names=NAMES)
    calls: list[int] = []
    listing = read_manifest(manifest, class_names=NAMES)
    dataset_import_listing(dataset=dataset, listing=listing, progress=calls.append)
    assert calls == [1, 2, 3]
    calls.clear()
    again = dataset_import_listing(
        dataset=dataset, listing=read_manifest(manifest, class_names=NAMES), progress=calls.append
    )
    assert again.duplicates == ["good-1.png", "good-2.png"]
    assert calls == [1, 2, 3]
    assert Item.objects.count() == 2
