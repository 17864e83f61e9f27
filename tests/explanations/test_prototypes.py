"""ProtoPNet and post-hoc prototypes (explanations.prototypes) on tiny synthetic images.

Three classes of 12 x 12 images (a bright horizontal bar, vertical bar or diagonal at a random
offset, plus noise); a ProtoPNet of width 4 with 8-dimensional prototypes, 2 per class, trains
in well under a second on one thread.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from explanations.prototypes.posthoc import (
    PatchBank,
    layer_features,
    nearest_patches,
    receptive_field,
)
from explanations.prototypes.protopnet import (
    ProtoPNet,
    ProtoPNetConfig,
    build_protopnet,
    explain,
    protopnet_load,
    protopnet_predict,
    protopnet_save,
    push_prototypes,
    train_joint,
    train_last_layer,
    train_protopnet,
)
from labeling.training import SmallCNN, WeightsError, _to_input, state_dict_save

SIZE = 12
K = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def synthetic(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, SIZE, SIZE)).astype(np.uint8)
    labels = np.arange(n) % K
    for i, c in enumerate(labels):
        o = int(rng.integers(2, SIZE - 2))
        if c == 0:
            images[i, o, 1:-1] = 250
        elif c == 1:
            images[i, 1:-1, o] = 250
        else:
            idx = np.arange(SIZE)
            images[i, idx, (idx + o) % SIZE] = 250
    return images, labels.astype(np.int64)


CONFIG = ProtoPNetConfig(
    joint_epochs=2,
    last_epochs=3,
    batch_size=16,
    prototypes_per_class=2,
    width=4,
    prototype_dim=8,
    input_size=SIZE,
    last_lr=1e-2,
    push_batch_size=20,
)


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def trained(data, _one_thread):
    images, labels = data
    return train_protopnet(images, labels, K, CONFIG)


def _single_distance_maps(model: ProtoPNet, image: np.ndarray) -> torch.Tensor:
    x = _to_input(image[None], model.grey, model.mean, model.std)
    with torch.no_grad():
        return model.forward_details(x)["distance_maps"][0]


# --------------------------------------------------------------------------- ProtoPNet


def test_push_projects_each_prototype_onto_a_patch_of_its_class(trained, data):
    model, record = trained
    images, labels = data
    classes = model.prototype_class.numpy()
    assert model.num_prototypes == K * CONFIG.prototypes_per_class
    np.testing.assert_array_equal(record.prototype_class, classes)
    np.testing.assert_array_equal(record.source_label, classes)
    np.testing.assert_array_equal(labels[record.train_index], classes)
    np.testing.assert_array_equal(
        model.prototype_source.numpy(), np.stack([record.train_index, record.h, record.w], 1)
    )
    for j in range(model.num_prototypes):
        maps = _single_distance_maps(model, images[record.train_index[j]])
        assert float(maps[j, record.h[j], record.w[j]]) <= 1e-5
        assert float(maps[j].min()) <= 1e-5
        # ... and the stored vector is that patch's latent vector
        x = _to_input(images[record.train_index[j]][None], True, model.mean, model.std)
        with torch.no_grad():
            z = model.latent(x)[0, :, record.h[j], record.w[j]]
        torch.testing.assert_close(model.prototype_vectors[j, :, 0, 0], z, atol=1e-5, rtol=0)
    assert np.all(record.distance_before >= 0)


def test_push_is_nearest_patch_of_own_class(data):
    images, labels = data
    model = build_protopnet(K, CONFIG).eval()  # the push runs in eval mode (BN statistics)
    before = model.prototype_vectors.detach().clone()
    x = _to_input(images, True, model.mean, model.std)
    with torch.no_grad():
        maps = model.distances(model.latent(x))  # (N, P, H, W), prototypes before the push
    record = push_prototypes(model, images, labels)
    for j in range(model.num_prototypes):
        own = labels == int(model.prototype_class[j])
        dj = maps[:, j].clone()
        dj[torch.from_numpy(~own)] = float("inf")
        assert float(dj.min()) == pytest.approx(float(record.distance_before[j]), abs=1e-5)
        i, h, w = record.train_index[j], record.h[j], record.w[j]
        assert float(dj[i, h, w]) == pytest.approx(float(dj.min()), abs=1e-5)
    assert not torch.equal(before, model.prototype_vectors)


def test_class_evidence_equals_logits(trained, data):
    model, _ = trained
    images, _ = data
    for image in images[:6]:
        e = explain(model, image, top_k=model.num_prototypes)
        np.testing.assert_allclose(e.class_evidence, e.logits, rtol=1e-5, atol=1e-5)
        assert e.predicted == int(np.argmax(e.logits)) == e.explained_class
        assert e.kind == "prototype"
        contributions = [p.contribution for p in e.prototypes]
        assert contributions == sorted(contributions, reverse=True)
        assert sum(contributions) == pytest.approx(float(e.logits[e.predicted]), abs=1e-4)
        for p in e.prototypes:
            assert p.contribution == pytest.approx(p.similarity * p.weight, rel=1e-5, abs=1e-6)
            assert p.similarity == pytest.approx(np.log((p.distance + 1) / (p.distance + 1e-4)))
            assert p.activation_map.shape == (SIZE, SIZE)
            assert p.activation_map.dtype == np.float32
            assert p.source_index >= 0 and p.source_box is not None
            x0, y0, x1, y1 = p.test_box
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE


def test_explain_any_class_and_top_k(trained, data):
    model, _ = trained
    images, _ = data
    e = explain(model, images[0], class_index=2, top_k=2)
    assert e.explained_class == 2 and len(e.prototypes) == 2
    assert all(
        p.weight == pytest.approx(float(model.last_layer.weight[2, p.prototype].detach()))
        for p in e.prototypes
    )
    # RGB input of a grey model: the mean of the channels, same explanation
    rgb = np.repeat(images[0][..., None], 3, axis=-1)
    np.testing.assert_allclose(
        explain(model, rgb).logits, explain(model, images[0]).logits, atol=1e-5
    )


def test_last_layer_initial_pattern():
    model = build_protopnet(K, CONFIG)
    w = model.last_layer.weight.detach().numpy()
    assert model.last_layer.bias is None
    m = CONFIG.prototypes_per_class
    for k in range(K):
        for j in range(model.num_prototypes):
            assert w[k, j] == (1.0 if j // m == k else -0.5)
    np.testing.assert_array_equal(
        model.prototype_class_identity.numpy().argmax(1), np.arange(K * m) // m
    )
    assert (model.prototype_source == -1).all()


def test_last_layer_training_freezes_everything_else(trained, data):
    images, labels = data
    model = build_protopnet(K, CONFIG)
    train_joint(model, images, labels, CONFIG)
    push_prototypes(model, images, labels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_last_layer(model, images, labels, CONFIG)
    after = model.state_dict()
    for key in before:
        if key == "last_layer.weight":
            assert not torch.equal(before[key], after[key])
        else:
            assert torch.equal(before[key], after[key]), key
    # the staged calls equal train_protopnet (same config, same seed)
    reference, _ = trained
    for key, value in reference.state_dict().items():
        assert torch.equal(value, after[key]), key


def test_l1_penalty_shrinks_wrong_class_connections(data):
    images, labels = data
    cfg = ProtoPNetConfig(**{**CONFIG.as_dict(), "lambda_l1": 1.0, "last_epochs": 10})
    model = build_protopnet(K, cfg)
    train_joint(model, images, labels, cfg)
    push_prototypes(model, images, labels)
    train_last_layer(model, images, labels, cfg)
    wrong = 1 - model.prototype_class_identity.t()
    assert float((model.last_layer.weight.detach().abs() * wrong).max()) < 0.5


def test_warm_stage_leaves_the_backbone_alone(data):
    images, labels = data
    cfg = ProtoPNetConfig(**{**CONFIG.as_dict(), "warm_epochs": 1, "joint_epochs": 0})
    model = build_protopnet(K, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_joint(model, images, labels, cfg)
    after = model.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        if key.startswith("features.") or key == "last_layer.weight":
            assert not changed, key
        if key in ("prototype_vectors", "add_on.conv1.weight"):
            assert changed, key


def test_training_is_deterministic(trained, data):
    images, labels = data
    model_a, record_a = trained
    model_b, record_b = train_protopnet(images, labels, K, CONFIG)
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key
    np.testing.assert_array_equal(record_a.train_index, record_b.train_index)
    other = ProtoPNetConfig(**{**CONFIG.as_dict(), "seed": 1})
    model_c, _ = train_protopnet(images, labels, K, other)
    assert not torch.equal(model_a.prototype_vectors, model_c.prototype_vectors)


def test_progress_and_predict(data):
    images, labels = data
    calls = []
    model, _ = train_protopnet(images, labels, K, CONFIG, progress=lambda *a: calls.append(a))
    steps = (CONFIG.joint_epochs + CONFIG.last_epochs) * 3  # 48 items / 16
    assert calls[-1][:2] == (steps, steps)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    probs, sims = protopnet_predict(model, images)
    assert probs.shape == (len(images), K) and sims.shape == (len(images), model.num_prototypes)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (sims >= 0).all() and (sims <= np.log(1e4) + 1e-4).all()


def test_safetensors_round_trip_and_pickle_refused(trained, data, tmp_path):
    model, _ = trained
    images, _ = data
    path = protopnet_save(model, tmp_path / "protopnet.safetensors")
    loaded = protopnet_load(path)
    assert loaded.init_kwargs() == model.init_kwargs()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    p1, _ = protopnet_predict(model, images)
    p2, _ = protopnet_predict(loaded, images)
    np.testing.assert_array_equal(p1, p2)
    assert explain(loaded, images[0]).prototypes[0].source_index >= 0

    pickled = tmp_path / "model.pt"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(WeightsError, match="never loaded"):
        protopnet_load(pickled)
    with pytest.raises(WeightsError, match="not found"):
        protopnet_load(tmp_path / "missing.safetensors")
    other = state_dict_save(SmallCNN(K, input_size=SIZE), tmp_path / "cnn.safetensors")
    with pytest.raises(WeightsError, match="not a ProtoPNet"):
        protopnet_load(other)


def test_bad_inputs_raise_clear_errors(trained, data):
    model, _ = trained
    images, labels = data
    with pytest.raises(ValueError, match="uint8"):
        train_protopnet(images.astype(np.float32), labels, K, CONFIG)
    with pytest.raises(ValueError, match="labels must have shape"):
        train_protopnet(images, labels[:-1], K, CONFIG)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        train_protopnet(images, labels + 1, K, CONFIG)
    with pytest.raises(ValueError, match="every class"):
        train_protopnet(images[labels < 2], labels[labels < 2], K, CONFIG)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        train_protopnet(images, labels * 0, 1, CONFIG)
    with pytest.raises(ValueError, match="input_size"):
        train_protopnet(images, labels, K, ProtoPNetConfig(input_size=28))
    with pytest.raises(ValueError, match="N == 0"):
        train_protopnet(images[:0], labels[:0], K, CONFIG)
    with pytest.raises(ValueError, match="joint_epochs must be >= 0"):
        ProtoPNetConfig(joint_epochs=-1)
    with pytest.raises(ValueError, match="one"):
        explain(model, images[:2])
    with pytest.raises(ValueError, match="uint8"):
        explain(model, images[0].astype(np.float32))
    with pytest.raises(ValueError, match="class_index"):
        explain(model, images[0], class_index=K)
    with pytest.raises(ValueError, match="top_k"):
        explain(model, images[0], top_k=0)
    with pytest.raises(ValueError, match="must be a ProtoPNet"):
        explain(SmallCNN(K, input_size=SIZE), images[0])
    with pytest.raises(ValueError, match="prototypes_per_class"):
        ProtoPNet(K, 0)


# --------------------------------------------------------------------------- post-hoc


@pytest.fixture(scope="module")
def cnn(_one_thread):
    torch.manual_seed(0)
    return SmallCNN(K, input_size=SIZE).eval()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_posthoc_training_image_finds_itself(cnn, data, metric):
    images, _ = data
    bank = PatchBank(cnn, "features.conv2", images, metric=metric)
    for i in (0, 7, 31):
        e = bank.query(images[i], k=4)
        first = e.neighbours[0]
        assert (first.train_index, first.h, first.w) == (i, *e.query)
        assert first.distance <= 1e-5
        assert e.neighbours[1].distance > 1e-3
        assert [n.distance for n in e.neighbours] == sorted(n.distance for n in e.neighbours)
        assert len({n.train_index for n in e.neighbours}) == 4  # per_image
        assert e.kind == first.kind == "post-hoc"
        assert e.box_method == "receptive-field"
        assert first.box == e.query_box


def test_posthoc_explicit_query_and_all_patches(cnn, data):
    images, _ = data
    e = nearest_patches(
        cnn, "features.pool2", images, images[5], k=3, query=(1, 2), per_image=False
    )
    assert e.query == (1, 2) and e.feature_shape == (32, 3, 3)
    assert (e.neighbours[0].train_index, e.neighbours[0].h, e.neighbours[0].w) == (5, 1, 2)
    # float inputs work for any model, no uint8 convenience needed
    x = _to_input(images, True, cnn.mean, cnn.std)
    e2 = nearest_patches(cnn, "features.pool2", x, x[5], k=3, query=(1, 2), per_image=False)
    assert [(n.train_index, n.h, n.w) for n in e2.neighbours] == [
        (n.train_index, n.h, n.w) for n in e.neighbours
    ]
    features = layer_features(cnn, "features.pool2", x)
    assert features.shape == (len(images), 32, 3, 3)


def test_receptive_field_of_small_cnn():
    model = SmallCNN(10)
    x = torch.zeros(1, 1, 28, 28)
    rf = receptive_field(model, "features.pool2", x)
    assert rf.size == (10, 10) and rf.jump == (4, 4) and rf.feature_size == (7, 7)
    # cell (1, 4): input rows 1..10, columns 13..22 (conv 3 / pool 2 / conv 3 / pool 2)
    assert rf.box(1, 4) == (13, 1, 23, 11)
    assert rf.box(0, 0) == (0, 0, 7, 7)  # rows / columns -3 .. 6, clipped to the image
    assert receptive_field(model, "features.conv1", x).size == (3, 3)
    proto = ProtoPNet(10)
    rf = receptive_field(proto, "add_on", x)
    assert rf.size == (18, 18) and rf.jump == (4, 4)


class _Branchy(nn.Module):
    """Two parallel convolutions concatenated: not a chain, so boxes are approximate."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 5, padding=2)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(torch.cat([self.a(x), self.b(x)], dim=1))


def test_posthoc_falls_back_to_scaled_cell_boxes(data):
    torch.manual_seed(0)
    model = _Branchy()
    x = torch.rand(6, 1, SIZE, SIZE)
    assert receptive_field(model, "pool", x[:1]) is None
    e = nearest_patches(model, "pool", x, x[2], k=2, query=(1, 3))
    assert e.box_method == "cell"
    assert e.query_box == (6, 2, 8, 4)  # cell (1, 3) of 6 x 6 on 12 x 12
    assert e.neighbours[0].train_index == 2 and e.neighbours[0].distance <= 1e-5


def test_posthoc_bad_inputs(cnn, data):
    images, _ = data
    with pytest.raises(ValueError, match="not found"):
        nearest_patches(cnn, "features.nope", images, images[0])
    with pytest.raises(ValueError, match="metric"):
        nearest_patches(cnn, "features.conv2", images, images[0], metric="manhattan")
    with pytest.raises(ValueError, match=r"must output \(N, C, H, W\)"):
        nearest_patches(cnn, "classifier", images, images[0])
    bank = PatchBank(cnn, "features.conv2", images)
    with pytest.raises(ValueError, match="k must be"):
        bank.query(images[0], k=0)
    with pytest.raises(ValueError, match="outside"):
        bank.query(images[0], query=(99, 0))
    with pytest.raises(ValueError, match="one image"):
        bank.query(images[:2])
    with pytest.raises(ValueError, match="shape"):
        bank.query(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        PatchBank(cnn, "features.conv2", images[:0])
    with pytest.raises(ValueError, match="preprocess="):
        nearest_patches(_Branchy(), "pool", images, images[0])
    with pytest.raises(ValueError, match="non-empty"):
        nearest_patches(cnn, "", images, images[0])


def test_prototype_modules_import_no_django():
    code = (
        "import sys; import explanations.prototypes.protopnet, explanations.prototypes.posthoc; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
