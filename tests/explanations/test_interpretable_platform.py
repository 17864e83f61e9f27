"""ProtoPNet and concept-bottleneck models trained, registered and explained by the platform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explanations.models import ClassifierModel, Explanation, Item, Prediction
from explanations.services import explanation_array_load
from explanations.services.registry import classifier_load, item_model_view
from tests import interpretable_world as world


@pytest.fixture
def shapes(db):
    return world.shapes_dataset()


def test_protopnet_run_registers_a_model_whose_prototypes_explain_test_items(shapes, tmp_path):
    run = world.train(shapes, "protopnet", tmp_path)
    model = run.classifier
    assert model.kind == "protopnet" and model.target_layer == "add_on"
    assert model.details["architecture"] == "protopnet"
    assert model.details["test_items"] == 18
    assert run.test_accuracy == model.details["test_accuracy"]
    assert run.test_accuracy >= 0.8  # three easy shapes
    # every pushed prototype's source is a training item of the prototype's own class
    push = model.details["push"]
    sources = model.details["prototype_items"]
    for train_index, cls in zip(push["train_index"], push["prototype_class"], strict=True):
        item = Item.objects.get(pk=sources[str(train_index)])
        assert item.split == "train" and item.label_index == cls

    world.explain(model, shapes, "prototypes")
    assert Prediction.objects.filter(model=model).count() == 18
    net = classifier_load(model)
    e = Explanation.objects.filter(model=model, method="prototypes").first()
    d = e.details
    assert d["kind"] == "prototypes" and d["target"] == e.target_index
    assert len(d["prototypes"]) == 3
    # the class evidence equals the logit of the platform's own forward pass
    view = item_model_view(item=e.item, model=model)
    from explanations.modelio import pixels_to_input

    x = pixels_to_input(view, model.normalization_mean, model.normalization_std)
    with torch.no_grad():
        logits = net(x)[0].numpy()
    assert d["class_evidence"] == pytest.approx(float(logits[e.target_index]), abs=1e-4)
    assert d["logit"] == pytest.approx(float(logits[e.target_index]), abs=1e-4)
    contributions = [p["contribution"] for p in d["prototypes"]]
    assert contributions == sorted(contributions, reverse=True)
    top = d["prototypes"][0]
    assert top["contribution"] == pytest.approx(top["similarity"] * top["weight"], abs=1e-5)
    # the stored map is the top prototype's activation, peaking at its best latent cell
    saliency = explanation_array_load(e)
    assert saliency.shape == (28, 28)
    cells = np.array(top["activation"])
    assert cells.max() == pytest.approx(top["similarity"], abs=1e-4)
    assert saliency.max() <= top["similarity"] + 1e-4


def test_cbm_run_with_an_uploaded_attribute_table(shapes, tmp_path):
    run = world.train(shapes, "cbm", tmp_path)
    model = run.classifier
    assert model.kind == "cbm"
    assert model.details["attributes"]["concepts"] == ["horizontal", "vertical", "corner"]
    assert run.test_accuracy >= 0.8
    world.explain(model, shapes, "concepts")
    e = Explanation.objects.filter(model=model, method="concepts").first()
    d = e.details
    assert d["concepts"] == ["horizontal", "vertical", "corner"]
    assert sum(d["contributions"]) + d["bias"] == pytest.approx(d["logit"], abs=1e-4)
    for a, w, c in zip(d["activations"], d["weights"], d["contributions"], strict=True):
        assert 0.0 <= a <= 1.0
        assert c == pytest.approx(a * w, abs=1e-5)
    assert e.params["map"] == "gradcam"
    assert explanation_array_load(e).min() >= 0.0


def test_a_bad_attribute_table_creates_no_run(shapes, tmp_path):
    from labeling.models import TrainingRun
    from labeling.services import LabelingError, training_run_create

    bad = tmp_path / "bad.csv"
    bad.write_text("class,horizontal\nbar,1\npillar,2\nblock,0\n")
    with pytest.raises(LabelingError, match="attribute table: .*0 or 1"):
        training_run_create(dataset=shapes, architecture="cbm", attributes=bad, enqueue=False)
    missing = tmp_path / "missing.csv"
    missing.write_text("class,horizontal,vertical\nbar,1,0\npillar,0,1\n")
    with pytest.raises(LabelingError, match="block"):
        training_run_create(dataset=shapes, architecture="cbm", attributes=missing, enqueue=False)
    with pytest.raises(LabelingError, match="needs an attribute table"):
        training_run_create(dataset=shapes, architecture="cbm", enqueue=False)
    with pytest.raises(LabelingError, match="unknown training option"):
        training_run_create(
            dataset=shapes, architecture="protopnet", config={"folds": 3}, enqueue=False
        )
    assert not TrainingRun.objects.exists()


def test_prototypes_and_concepts_refuse_a_model_of_another_kind(shapes, tmp_path):
    from explanations.explainers.base import ExplainerConfigError
    from explanations.explainers.interpretable import ConceptExplainer, PrototypeExplainer
    from explanations.models import ExplanationJob

    run = world.train(shapes, "cbm", tmp_path)
    with pytest.raises(
        ValueError,
        match=r"prototypes explain a protopnet model's own evidence.*"
        r"--architecture protopnet.*posthoc_prototypes",
    ):
        world.explanation_job_create(
            model=run.classifier, dataset=shapes, method="prototypes", top_k=2, split="test"
        )
    assert not ExplanationJob.objects.exists()  # refused before a job exists
    net = classifier_load(run.classifier)
    with pytest.raises(ExplainerConfigError, match="label_train DATASET --architecture protopnet"):
        PrototypeExplainer(net)
    with pytest.raises(ExplainerConfigError, match="not one"):
        ConceptExplainer(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)))


def test_a_pickled_checkpoint_is_never_registered_as_a_protopnet(tmp_path, db):
    from explanations.services.registry import ModelRegistrationError, model_register

    path = tmp_path / "evil.pt"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(ModelRegistrationError, match="not a protopnet model file"):
        model_register(name="evil", weights_path=path, class_names=["a", "b"], kind="protopnet")
    assert not ClassifierModel.objects.exists()


def test_boxed_and_activation_pictures_put_the_box_where_the_receptive_field_is():
    from explanations import rendering

    image = np.zeros((28, 28, 3), dtype=np.uint8)
    boxed = rendering.boxed_picture(image, (4, 8, 12, 20))
    assert boxed.shape == (112, 112, 3)  # 28 px enlarged 4x (at least 112 px a side)
    yellow = np.all(boxed == rendering.BOX_COLOUR, axis=2)
    rows, cols = np.nonzero(yellow)
    assert (cols.min(), rows.min(), cols.max(), rows.max()) == (16, 32, 47, 79)
    big = np.zeros((224, 224, 3), dtype=np.uint8)
    assert rendering.boxed_picture(big, None).shape == (224, 224, 3)  # large views unchanged
    cells = np.zeros((7, 7), dtype=np.float32)
    cells[1, 5] = 3.0
    shown = rendering.activation_picture(image, cells, None)
    assert shown.shape == (112, 112, 3)
    # the activation is strongest where the hot cell is (upper right), absent far from it
    # (cell (1, 5) of 7 covers pixels 4-8 x 20-24 of 28; the colour map runs blue -> red)
    hot = shown[5 * 4 : 7 * 4, 21 * 4 : 23 * 4].astype(int)
    cold = shown[20 * 4 :, : 8 * 4].astype(int)
    assert hot[..., 0].mean() > 50 and hot[..., 2].mean() < 20
    assert cold[..., 0].mean() < 5 and cold[..., 2].mean() > 50
    crop = rendering.box_crop(image + 7, (26, 26, 40, 40), 64)  # clipped to the image
    assert crop.shape == (64, 64, 3) and (crop == 7).all()


def test_label_train_refuses_options_of_another_architecture(shapes):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--folds applies to --architecture cnn only"):
        call_command("label_train", "shapes", "--architecture", "protopnet", "--folds", "2")
    with pytest.raises(CommandError, match="--last-epochs applies to --architecture protopnet"):
        call_command("label_train", "shapes", "--architecture", "cbm", "--last-epochs", "2")
    with pytest.raises(CommandError, match="needs an attribute table"):
        call_command("label_train", "shapes", "--architecture", "cbm")


def test_a_researcher_starts_a_concept_run_from_the_page_with_an_uploaded_table(
    shapes, researcher, client
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from labeling.models import TrainingRun

    client.force_login(researcher)
    home = client.get("/label/").content.decode()
    assert 'name="architecture"' in home and "Concept-bottleneck model" in home
    table = SimpleUploadedFile("t.csv", world.ATTRIBUTES_CSV.encode(), content_type="text/csv")
    reply = client.post(
        "/label/runs/start/",
        {"dataset": shapes.pk, "architecture": "cbm", "epochs": "2", "attributes": table},
    )
    run = TrainingRun.objects.get()
    assert reply.status_code == 302 and reply["Location"].endswith(f"/label/runs/{run.pk}/")
    assert run.architecture == "cbm" and run.config == {"epochs": 2}
    assert run.attributes["concepts"] == ["horizontal", "vertical", "corner"]
    page = client.get(f"/label/runs/{run.pk}/").content.decode()
    assert "Concept-bottleneck model" in page and "horizontal, vertical, corner" in page
    assert "Create a curation project" not in page
    bad = SimpleUploadedFile("t.csv", b"class,x\nbar,7\n", content_type="text/csv")
    client.post(
        "/label/runs/start/", {"dataset": shapes.pk, "architecture": "cbm", "attributes": bad}
    )
    assert TrainingRun.objects.count() == 1  # refused, nothing created


def test_posthoc_prototypes_of_any_cnn_come_from_training_items_of_the_target_class(
    shapes, tmp_path
):
    from explanations.prototypes.posthoc import nearest_patches

    run = world.train(shapes, "cbm", tmp_path)  # any CNN: the CBM's backbone
    model = run.classifier
    job = world.explanation_job_create(
        model=model,
        dataset=shapes,
        method="posthoc_prototypes",
        top_k=2,
        split="test",
        params={"bank_per_class": 5},
    )
    job = world.explanation_job_run(job_id=job.pk)
    assert job.status == "succeeded", job.error
    e = Explanation.objects.filter(model=model, method="posthoc_prototypes").first()
    d = e.details
    assert d["post_hoc"] is True and d["kind"] == "posthoc_prototypes"
    assert d["layer"] == model.target_layer and len(d["prototypes"]) == 3
    train_items = list(shapes.items.filter(split="train").order_by("id"))
    bank = [it for c in range(3) for it in [i for i in train_items if i.label_index == c][:5]]
    for p in d["prototypes"]:
        src = Item.objects.get(pk=p["source_item"])
        assert src in bank and src.label_index == e.target_index  # the target's own class
        assert 0.0 <= p["similarity"] <= 1.0 + 1e-6
    # the same neighbours as the library function on the same training patches of the class
    net = classifier_load(model)
    from explanations.modelio import pixels_to_input

    def x(item):
        view = item_model_view(item=item, model=model)
        return pixels_to_input(view, model.normalization_mean, model.normalization_std)

    own = [it for it in bank if it.label_index == e.target_index]
    expected = nearest_patches(
        net, model.target_layer, torch.cat([x(i) for i in own]), x(e.item), k=3
    )
    assert [own[n.train_index].pk for n in expected.neighbours] == [
        p["source_item"] for p in d["prototypes"]
    ]
    assert d["prototypes"][0]["distance"] == pytest.approx(
        expected.neighbours[0].distance, abs=1e-5
    )


def test_posthoc_prototypes_without_training_items_fail_with_the_reason(shapes, tmp_path):
    run = world.train(shapes, "cbm", tmp_path)
    job = world.explanation_job_create(
        model=run.classifier,
        dataset=shapes,
        method="posthoc_prototypes",
        top_k=2,
        split="test",
        params={"bank_split": "validation"},
    )
    job = world.explanation_job_run(job_id=job.pk)
    assert job.status == "failed"
    assert "none in split 'validation'" in job.error


def test_the_training_patches_are_built_once_per_job_not_per_batch(shapes, tmp_path, monkeypatch):
    from explanations.prototypes import posthoc

    run = world.train(shapes, "cbm", tmp_path)
    built = []
    real_init = posthoc.PatchBank.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(posthoc.PatchBank, "__init__", counting_init)
    job = world.explanation_job_create(
        model=run.classifier,
        dataset=shapes,
        method="posthoc_prototypes",
        top_k=2,
        split="test",
        params={"bank_per_class": 4},
    )
    ids = list(job.job_items.order_by("id").values_list("item_id", flat=True))
    for batch in (ids[:6], ids[6:12], ids[12:]):  # three batch tasks of one job
        world.explanation_job_run(job_id=job.pk, item_ids=batch)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.done_items == 18
    assert len(built) == 1


def test_explain_refuses_an_empty_split_or_limit_and_creates_no_job(shapes):
    from django.core.management import CommandError, call_command

    from explanations.models import ClassifierModel, ExplanationJob

    model = ClassifierModel.objects.create(
        name="m",
        kind="factory",
        architecture="labeling.training:small_cnn",
        weights_path="/nonexistent",
        weights_sha256="0" * 64,
        class_names=world.CLASSES,
        input_size=28,
        normalization_mean=[0, 0, 0],
        normalization_std=[1, 1, 1],
    )
    base = ["explain", "--model", model.name, "--dataset", "shapes", "--method", "gradcam"]
    with pytest.raises(CommandError, match="has no items in split 'validation'"):
        call_command(*base, "--split", "validation")
    with pytest.raises(CommandError, match="limit must be >= 1, got 0"):
        call_command(*base, "--limit", "0")
    assert not ExplanationJob.objects.exists()
    call_command(*base, "--split", "test", "--limit", "5")
    job = ExplanationJob.objects.get()
    items = list(job.job_items.values_list("item__name", flat=True))
    assert job.total_items == 5 and items == [f"test-{i:03d}" for i in range(5)]
