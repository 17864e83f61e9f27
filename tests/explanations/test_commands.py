"""The management commands ``model_register``, ``dataset_import`` and ``explain``.

They are thin adapters: what they print on success, that a service's refusal becomes a
``CommandError`` carrying the service's message (a non-zero exit), and that ``--help``
documents every option with an example.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError

from explanations.models import (
    ClassifierModel,
    Dataset,
    DatasetImportJob,
    ExplanationJob,
    JobStatus,
    ModelKind,
)
from explanations.services import dataset_import_job_run, explanation_job_run, model_register
from explanations.services import datasets as dataset_services
from explanations.services import jobs as job_services
from tests.explanations.test_byo_rejections import zip_bytes
from tests.explanations.test_byo_roundtrip import (
    FACTORY,
    UNIT_RANGE,
    TinyCNN,
    colour_state_dict,
    png,
    quiet_torchscript,
    square_image,
    write_classes,
    write_image_folder,
    write_weights,
)

NAMES = ["red", "green", "blue", "yellow"]


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), no_color=True)
    return out.getvalue()


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    return {
        "weights": write_weights(tmp_path / "tiny.safetensors", NAMES),
        "classes": write_classes(tmp_path / "classes.txt", NAMES),
    }


@pytest.fixture
def model(db, media, files):
    return model_register(
        name="Tiny colours",
        kind=ModelKind.FACTORY,
        architecture=FACTORY,
        weights_path=files["weights"],
        class_names=files["classes"],
        input_size=32,
        normalization=UNIT_RANGE,
    )


@pytest.fixture
def dataset(db, media, tmp_path):
    run("dataset_import", "--name", "Squares", "--folder", str(write_image_folder(tmp_path / "sq")))
    return Dataset.objects.get(name="Squares")


# --- --help ------------------------------------------------------------------------------------

OPTIONS = {
    "model_register": [
        "--name",
        "--architecture",
        "--factory",
        "--torchscript",
        "--weights",
        "--classes",
        "--input-size",
        "--resize",
        "--normalization",
        "--mean",
        "--std",
        "--target-layer",
        "--owner",
    ],
    "dataset_import": [
        "--name",
        "--folder",
        "--manifest",
        "--zip",
        "--classes",
        "--description",
        "--owner",
        "--background",
    ],
    "explain": ["--model", "--dataset", "--method", "--top-k", "--wait", "--poll", "--timeout"],
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_help_documents_every_option_with_an_example(name):
    command = load_command_class("explanations", name)
    parser = command.create_parser("manage.py", name)
    text = parser.format_help()
    documented = {a.option_strings[-1]: a.help for a in parser._actions if a.option_strings}
    for option in OPTIONS[name]:
        assert option in text
        assert documented[option] and len(documented[option]) > 20, option
    assert "Example" in text
    assert f"python manage.py {name} --" in text


def test_explain_help_says_wait_needs_a_worker():
    text = load_command_class("explanations", "explain").create_parser("manage.py", "explain")
    text = text.format_help()
    assert "needs a worker consuming queue gpu" in text
    assert "celery -A studyplatform worker -Q gpu" in text


# --- model_register ------------------------------------------------------------------------


@pytest.mark.django_db
def test_model_register_prints_the_model_id_checksum_and_target_layer(media, files, researcher):
    output = run(
        "model_register",
        "--name",
        "Tiny colours",
        "--factory",
        FACTORY,
        "--weights",
        str(files["weights"]),
        "--classes",
        str(files["classes"]),
        "--input-size",
        "32",
        "--resize",
        "resize",
        "--mean",
        "0",
        "0",
        "0",
        "--std",
        "255",
        "255",
        "255",
        "--owner",
        "researcher",
    )
    model = ClassifierModel.objects.get()
    assert f"Registered model #{model.pk} 'Tiny colours'" in output
    assert f"id:           {model.pk}" in output
    assert f"sha256:       {model.weights_sha256}" in output
    assert "target layer: conv2" in output
    assert "classes:      4" in output
    assert (model.kind, model.architecture, model.owner) == (ModelKind.FACTORY, FACTORY, researcher)
    assert (model.input_size, model.resize_policy) == (32, "resize")
    assert (model.normalization_mean, model.normalization_std) == ([0.0] * 3, [255.0] * 3)


@quiet_torchscript
@pytest.mark.django_db
def test_model_register_torchscript_says_there_is_no_target_layer(media, tmp_path):
    import torch

    net = TinyCNN(3)
    net.load_state_dict(colour_state_dict(NAMES[:3]))
    torch.jit.script(net.eval()).save(str(tmp_path / "scripted.pt"))
    output = run(
        "model_register",
        "--name",
        "Scripted",
        "--torchscript",
        "--weights",
        str(tmp_path / "scripted.pt"),
        "--classes",
        str(write_classes(tmp_path / "c.json", NAMES[:3])),
        "--normalization",
        "efficientnet-lite",
    )
    assert "target layer: none (TorchScript: predictions only, no Grad-CAM)" in output
    assert ClassifierModel.objects.get().kind == ModelKind.TORCHSCRIPT


@pytest.mark.django_db
def test_model_register_failure_is_a_command_error_with_the_service_message(media, files, tmp_path):
    data = files["weights"].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CommandError, match=r"^cut\.safetensors: not a readable safetensors file"):
        run(
            "model_register",
            "--name",
            "Cut",
            "--factory",
            FACTORY,
            "--weights",
            str(tmp_path / "cut.safetensors"),
            "--classes",
            str(files["classes"]),
        )
    assert not ClassifierModel.objects.exists()
    assert not (media / "models").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-size", "4"], "input_size must be 8..2048 pixels, got 4"),
        (["--resize", "stretch"], "unknown resize policy 'stretch'"),
        (["--target-layer", "conv9"], "target layer 'conv9' does not exist in the model"),
        (["--normalization", "imagenett"], "unknown normalisation preset 'imagenett'"),
        (["--owner", "nobody"], "--owner: no user named 'nobody'"),
        (
            ["--normalization", "imagenet", "--mean", "0", "0", "0", "--std", "1", "1", "1"],
            "use either --normalization or --mean/--std, not both",
        ),
        (["--mean", "0", "0", "0"], "--mean and --std go together"),
    ],
)
def test_model_register_refusals(media, files, extra, message):
    base = ["--name", "Tiny", "--factory", FACTORY]
    base += ["--weights", str(files["weights"]), "--classes", str(files["classes"])]
    if not {"--mean", "--normalization"} & set(extra):
        base += ["--mean", "0", "0", "0", "--std", "255", "255", "255"]
    with pytest.raises(CommandError) as info:
        run("model_register", *base, *extra)
    assert message in str(info.value)
    assert not ClassifierModel.objects.exists()
    assert not (media / "models").exists()


@pytest.mark.django_db
def test_model_register_wants_a_txt_or_json_class_file(media, files, tmp_path):
    (tmp_path / "classes.csv").write_text("red,green,blue,yellow\n")
    with pytest.raises(CommandError, match=r"--classes classes\.csv: expected a \.txt or \.json"):
        run(
            "model_register",
            "--name",
            "Tiny",
            "--factory",
            FACTORY,
            "--weights",
            str(files["weights"]),
            "--classes",
            str(tmp_path / "classes.csv"),
        )


@pytest.mark.django_db
def test_model_register_needs_exactly_one_source(files):
    with pytest.raises(CommandError, match="not allowed with argument"):
        run(
            "model_register",
            "--name",
            "Tiny",
            "--factory",
            FACTORY,
            "--torchscript",
            "--weights",
            str(files["weights"]),
            "--classes",
            str(files["classes"]),
        )


# --- dataset_import ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_dataset_import_inline_prints_progress_and_every_skipped_file(media, tmp_path, researcher):
    root = write_image_folder(tmp_path / "squares", per_class=4)  # 12 images
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "blue" / "copy.png").write_bytes((root / "blue" / "blue-0.png").read_bytes())

    output = run(
        "dataset_import",
        "--name",
        "Squares",
        "--folder",
        str(root),
        "--description",
        "Coloured squares",
        "--owner",
        "researcher",
    )

    dataset = Dataset.objects.get(name="Squares")
    assert (dataset.description, dataset.owner) == ("Coloured squares", researcher)
    assert dataset.class_names == ["blue", "green", "red"]
    assert dataset.items.count() == 12
    lines = output.splitlines()
    assert (
        lines[0] == f"Importing 14 files from folder {root} into dataset 'Squares' (#{dataset.pk})"
    )
    assert "  10/14 files" in lines and "  14/14 files" in lines
    assert (
        f"Dataset 'Squares' (#{dataset.pk}): 14 files, 12 imported, 1 duplicates, 1 failed; "
        "the dataset now has 12 items"
    ) in lines
    assert "Skipped files (2):" in lines
    assert (
        "  blue/copy.png: duplicate: the same name or the same content is already in the dataset"
        in lines
    )
    broken = [line for line in lines if line.startswith("  red/broken.png: ")]
    assert broken == ["  red/broken.png: not a recognised image format"]


@pytest.mark.django_db
def test_dataset_import_manifest_with_classes_reports_a_label_outside_them(media, tmp_path):
    (tmp_path / "a.png").write_bytes(png(square_image("red", 1)))
    (tmp_path / "b.png").write_bytes(png(square_image("blue", 2)))
    (tmp_path / "m.csv").write_text("file,label\na.png,red\nb.png,purple\n")
    classes = write_classes(tmp_path / "space.txt", ["red", "green", "blue"])

    output = run(
        "dataset_import",
        "--name",
        "M",
        "--manifest",
        str(tmp_path / "m.csv"),
        "--classes",
        str(classes),
    )

    dataset = Dataset.objects.get(name="M")
    assert dataset.class_names == ["red", "green", "blue"]
    assert list(dataset.items.values_list("name", "label_index")) == [("a.png", 0)]
    assert "  b.png: label 'purple' is not one of the dataset's 3 classes" in output.splitlines()


@pytest.mark.django_db
def test_dataset_import_twice_skips_everything_as_duplicates(media, tmp_path):
    root = write_image_folder(tmp_path / "squares")
    run("dataset_import", "--name", "Squares", "--folder", str(root))
    output = run("dataset_import", "--name", "Squares", "--folder", str(root))
    assert "9 files, 0 imported, 9 duplicates, 0 failed; the dataset now has 9 items" in output


@pytest.mark.django_db
def test_dataset_import_of_an_unreadable_source_fails_and_creates_no_dataset(media, tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.png,red\n")
    with pytest.raises(CommandError, match=r"no 'file' column \(columns: \['label', 'path'\]\)"):
        run("dataset_import", "--name", "M", "--manifest", str(tmp_path / "m.csv"))
    with pytest.raises(CommandError, match="not a directory"):
        run("dataset_import", "--name", "M", "--folder", str(tmp_path / "nowhere"))
    with pytest.raises(CommandError, match="No such file"):
        run("dataset_import", "--name", "M", "--zip", str(tmp_path / "nowhere.zip"))
    assert not Dataset.objects.exists()


@pytest.mark.django_db
def test_dataset_import_classes_must_match_an_existing_label_space(media, tmp_path):
    Dataset.objects.create(name="M", class_names=["red", "green"])
    with pytest.raises(CommandError, match=r"already has the label space \['red', 'green'\]"):
        run(
            "dataset_import",
            "--name",
            "M",
            "--folder",
            str(write_image_folder(tmp_path / "sq")),
            "--classes",
            str(write_classes(tmp_path / "c.txt", ["green", "red"])),
        )
    with pytest.raises(CommandError, match=r"--classes: class names must be unique"):
        run(
            "dataset_import",
            "--name",
            "M",
            "--folder",
            str(tmp_path / "sq"),
            "--classes",
            str(write_classes(tmp_path / "d.txt", ["red", "red"])),
        )


@pytest.mark.django_db
def test_dataset_import_background_queues_a_job_and_prints_its_id(
    media, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(dataset_services, "_import_enqueue", sent.append)
    path = tmp_path / "squares.zip"
    path.write_bytes(zip_bytes({f"red/{n}.png": png(square_image("red", n)) for n in range(3)}))

    with django_capture_on_commit_callbacks(execute=True):
        output = run("dataset_import", "--name", "Zipped", "--zip", str(path), "--background")

    job = DatasetImportJob.objects.get()
    assert sent == [job.pk]
    assert (job.source_format, job.source_path, job.status) == ("zip", str(path), JobStatus.PENDING)
    assert f"Queued import job #{job.pk} into dataset 'Zipped' (#{job.dataset_id})" in output
    assert f"job id: {job.pk}" in output
    assert not job.dataset.items.exists()  # nothing imported until a worker runs it
    assert dataset_import_job_run(job_id=job.pk).status == JobStatus.SUCCEEDED
    assert job.dataset.items.count() == 3


@pytest.mark.django_db
def test_dataset_import_background_with_a_missing_file_creates_nothing(media, tmp_path):
    with pytest.raises(CommandError, match=r"nowhere\.zip: no such file or folder"):
        run("dataset_import", "--name", "Z", "--zip", str(tmp_path / "nowhere.zip"), "--background")
    assert not Dataset.objects.exists()
    assert not DatasetImportJob.objects.exists()


# --- explain -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_explain_creates_and_enqueues_a_job(
    model, dataset, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(
        job_services, "explanation_job_enqueue", lambda *, job_id: sent.append(job_id)
    )
    with django_capture_on_commit_callbacks(execute=True):
        output = run("explain", "--model", "Tiny colours", "--dataset", "Squares")
    job = ExplanationJob.objects.get()
    assert sent == [job.pk]
    assert (job.method, job.top_k, job.total_items, job.status) == ("gradcam", 4, 9, "pending")
    assert output.startswith(
        f"Created explanation job #{job.pk}: gradcam of 'Tiny colours' on 'Squares', top-4, 9 items"
    )


@pytest.mark.django_db
def test_explain_top_k_defaults_to_the_number_of_classes_when_fewer_than_four(
    media, dataset, tmp_path
):
    three = model_register(
        name="Three",
        kind=ModelKind.FACTORY,
        architecture=FACTORY,
        weights_path=write_weights(tmp_path / "three.safetensors", NAMES[:3]),
        class_names=NAMES[:3],
        input_size=32,
        normalization=UNIT_RANGE,
    )
    run("explain", "--model", three.name, "--dataset", "Squares")
    assert ExplanationJob.objects.get().top_k == 3


def worker_instead_of_sleep(monkeypatch):
    """``--wait`` sleeps between polls; here each sleep lets "the worker" run the job."""
    from explanations.management.commands import explain

    def sleep(self, seconds):
        explanation_job_run(job_id=ExplanationJob.objects.latest("pk").pk)

    monkeypatch.setattr(explain.Command, "_sleep", sleep)


@pytest.mark.django_db
def test_explain_wait_prints_progress_until_the_job_succeeds(model, dataset, monkeypatch):
    worker_instead_of_sleep(monkeypatch)
    output = run(
        "explain", "--model", "Tiny colours", "--dataset", "Squares", "--top-k", "2", "--wait"
    )
    job = ExplanationJob.objects.get()
    assert job.status == JobStatus.SUCCEEDED
    lines = output.splitlines()
    assert f"  [....................] job #{job.pk}: pending, 0/9 items done, 0 failed" in lines
    done = next(line for line in lines if "succeeded, 9/9" in line)
    assert done.startswith(
        f"  [####################] job #{job.pk}: succeeded, 9/9 items done, 0 failed, "
    )
    assert re.search(r", \d+\.\d\d items/s$", done)  # the rate, and no ETA once finished
    assert lines[-1] == f"Job #{job.pk} succeeded: 9 items done, 0 failed"


@pytest.mark.django_db
def test_explain_takes_method_parameters_batches_and_retries(model, dataset, monkeypatch):
    worker_instead_of_sleep(monkeypatch)
    run(
        "explain",
        "--model",
        "Tiny colours",
        "--dataset",
        "Squares",
        "--top-k",
        "2",
        "--batch-size",
        "4",
        "--wait",
    )
    job = ExplanationJob.objects.get()
    assert (job.batch_size, job.params, job.evaluate) == (4, {}, False)
    with pytest.raises(CommandError, match=r"gradcam does not accept parameter\(s\) \['sigma'\]"):
        run("explain", "--model", "Tiny colours", "--dataset", "Squares", "--param", "sigma=0.2")
    with pytest.raises(CommandError, match="use NAME=VALUE"):
        run("explain", "--model", "Tiny colours", "--dataset", "Squares", "--param", "sigma")
    assert f"job #{job.pk}: 0 failed item(s) queued again" in run("explain", "--retry", str(job.pk))


@quiet_torchscript
@pytest.mark.django_db
def test_explain_wait_on_a_job_that_fails_exits_with_its_error(
    media, dataset, tmp_path, monkeypatch
):
    import torch

    net = TinyCNN(3)
    net.load_state_dict(colour_state_dict(NAMES[:3]))
    torch.jit.script(net.eval()).save(str(tmp_path / "scripted.pt"))
    model_register(
        name="Scripted",
        kind=ModelKind.TORCHSCRIPT,
        weights_path=tmp_path / "scripted.pt",
        class_names=NAMES[:3],
        input_size=32,
        normalization=UNIT_RANGE,
    )
    worker_instead_of_sleep(monkeypatch)
    with pytest.raises(CommandError) as info:
        run("explain", "--model", "Scripted", "--dataset", "Squares", "--wait")
    job = ExplanationJob.objects.get()
    assert str(info.value) == (
        f"job #{job.pk} failed: cannot start: Grad-CAM hooks an nn.Conv2d layer of the model, "
        "and TorchScript models do not support layer hooks; register 'Scripted' as a factory + "
        "state dict to explain it with Grad-CAM"
    )


@pytest.mark.django_db
def test_explain_wait_gives_up_after_the_timeout_without_a_worker(model, dataset, monkeypatch):
    from explanations.management.commands import explain

    monkeypatch.setattr(explain.Command, "_sleep", lambda self, seconds: None)
    with pytest.raises(CommandError, match=r"is still pending after 0\.01 s \(is a worker"):
        run(
            "explain",
            "--model",
            "Tiny colours",
            "--dataset",
            "Squares",
            "--wait",
            "--timeout",
            "0.01",
        )
    assert ExplanationJob.objects.get().status == JobStatus.PENDING


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "Nope", "--dataset", "Squares"],
            "no model named 'Nope'; known: ['Tiny colours']",
        ),
        (
            ["--model", "Tiny colours", "--dataset", "Nope"],
            "no dataset named 'Nope'; known: ['Squares']",
        ),
        (
            ["--model", "Tiny colours", "--dataset", "Squares", "--top-k", "5"],
            "top_k must be in 1..4, got 5",
        ),
        (
            ["--model", "Tiny colours", "--dataset", "Squares", "--method", "telepathy"],
            "unknown explanation method 'telepathy'; enabled: ['concepts', 'gradcam', "
            "'guided_backprop', 'guided_gradcam', 'integrated_gradients', 'lime', 'occlusion', "
            "'posthoc_prototypes', 'prototypes', 'rise', 'saliency', 'smoothgrad']",
        ),
    ],
)
def test_explain_refusals(model, dataset, args, message):
    with pytest.raises(CommandError) as info:
        run("explain", *args)
    assert str(info.value) == message
    assert not ExplanationJob.objects.exists()


@pytest.mark.django_db
def test_explain_on_an_empty_dataset_is_refused(model):
    Dataset.objects.create(name="Empty")
    with pytest.raises(CommandError, match="^dataset 'Empty' has no items$"):
        run("explain", "--model", "Tiny colours", "--dataset", "Empty")
