"""explanations.concepts on tiny synthetic data (no database, no Fashion-MNIST): the concept
bottleneck's exact logit decomposition, attribute-table validation, the three training modes,
safetensors I/O, determinism; TCAV recovering a planted concept direction."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from explanations.concepts.cbm import (
    FASHION_MNIST_ATTRIBUTES,
    AttributeTable,
    CBMConfig,
    ConceptBottleneckModel,
    attribute_table_load,
    attribute_table_save,
    cbm_load,
    cbm_save,
    concept_accuracy,
    evaluate,
    explain,
    predict_concepts,
    train_cbm,
)
from explanations.concepts.tcav import LinearCAVClassifier, tcav_scores, texture_concepts
from labeling.idx import FASHION_MNIST_CLASSES
from labeling.training import WeightsError


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# 4 classes = the bright quadrant of an 8 x 8 image; concepts: top row, left column, and a
# redundant "bottom" (= not top), so the table has 3 concepts and unique class codes.
QUAD = AttributeTable(
    classes=("top-left", "top-right", "bottom-left", "bottom-right"),
    concepts=("top", "left", "bottom"),
    matrix=np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]]),
)

TINY = dict(epochs=8, head_epochs=8, batch_size=32, lr=1e-2, head_lr=0.1, width=4)
TINY.update(embedding_dim=16, input_size=8)


def quadrants(n: int, seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 60, (n, size, size), dtype=np.uint8)
    h = size // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, r * h : (r + 1) * h, q * h : (q + 1) * h] += 150
    return images, labels.astype(np.int64)


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def data():
    return quadrants(192)


@pytest.fixture(scope="module")
def joint(data):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_cbm(*data, QUAD, CBMConfig(mode="joint", **TINY))
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- CBM


def test_contributions_plus_bias_equal_the_logit(joint, data):
    images, _ = data
    x = torch.from_numpy(((images[:6].astype(np.float32) / 255 - joint.mean) / joint.std)[:, None])
    with torch.no_grad():
        logits = joint(x)
    for i in range(6):
        for t in range(4):
            e = explain(joint, images[i], target=t)
            assert e.contributions.sum() + e.bias == pytest.approx(e.logit, abs=1e-5)
            assert e.logit == pytest.approx(float(logits[i, t]), abs=1e-5)
            np.testing.assert_allclose(e.contributions, e.weights * e.activations)
    # an untrained model with large random head weights: still exact
    torch.manual_seed(3)
    raw = ConceptBottleneckModel(["a", "b", "c", "d"], ["x", "y"], input_size=8, width=2)
    with torch.no_grad():
        raw.head.weight.mul_(50)
        raw.head.bias.fill_(-7.25)
    e = explain(raw.eval(), images[0], target=1)
    assert e.contributions.sum() + e.bias == pytest.approx(e.logit, abs=1e-5)


def test_explanation_fields_and_text(joint, data):
    images, labels = data
    e = explain(joint, images[0])
    assert e.target == e.predicted == 0 and e.target_name == "top-left"
    assert 0 < e.probability <= 1
    assert [t.contribution for t in e.top_positive] == sorted(
        (c for c in e.contributions if c > 0), reverse=True
    )
    assert [t.contribution for t in e.top_negative] == sorted(c for c in e.contributions if c < 0)
    assert e.text.startswith("top-left = ")
    assert e.text.endswith(" bias")
    # the listed terms are the largest by magnitude, in that order
    sizes = [abs(t.contribution) for t in e.listed]
    assert sizes == sorted(sizes, reverse=True) and len(e.listed) == 3

    short = explain(joint, images[0], max_concepts=1)
    assert len(short.listed) == 1 and short.listed[0] == e.listed[0]
    assert "(2 other concepts)" in short.text
    rest = sum(t.contribution for t in e.listed[1:])
    assert short.text.count("bias") == 1 and f"{abs(rest):.2f} (2 other" in short.text
    assert "\u2026" in explain(joint, images[0], max_concepts=2, show_rest=False).text
    # a learnt "top-left" logit rests on top and left
    assert {t.concept for t in e.top_positive} >= {"top", "left"}
    assert e.as_dict()["text"] == e.text


def test_equation_format_with_hand_set_weights():
    model = ConceptBottleneckModel(["footwear", "ankle_high", "has_sleeves"], ["Bag", "Ankle boot"])
    model.eval()
    with torch.no_grad():
        model.head.weight[1] = torch.tensor([1.2, 0.9, -0.7])
        model.head.bias[1] = 0.3
        model.concept_net.classifier.weight.zero_()
        model.concept_net.classifier.bias.fill_(20.0)  # activations ~1
    e = explain(model, np.zeros((28, 28), np.uint8), target=1, decimals=1)
    assert e.text == "Ankle boot = +1.2 footwear + 0.9 ankle_high \u2212 0.7 has_sleeves + 0.3 bias"
    assert [t.concept for t in e.top_negative] == ["has_sleeves"]


def test_explain_rejects_bad_arguments(joint, data):
    images, _ = data
    with pytest.raises(ValueError, match="target"):
        explain(joint, images[0], target=4)
    with pytest.raises(ValueError, match="max_concepts"):
        explain(joint, images[0], max_concepts=0)
    with pytest.raises(ValueError, match="uint8"):
        explain(joint, images[0].astype(np.float32))
    # a normalised tensor is accepted as is
    x = torch.from_numpy((images[0].astype(np.float32) / 255 - joint.mean) / joint.std)[None]
    assert explain(joint, x).logit == pytest.approx(explain(joint, images[0]).logit, abs=1e-6)


@pytest.mark.parametrize("mode", ["joint", "sequential", "independent"])
def test_training_modes_learn_concepts_and_classes(mode, joint, data):
    images, labels = data
    test_x, test_y = quadrants(64, seed=1)
    model = (
        joint if mode == "joint" else train_cbm(images, labels, QUAD, CBMConfig(mode=mode, **TINY))
    )
    result = evaluate(model, test_x, test_y, QUAD)
    assert result["class_accuracy"] >= 0.9, result
    assert result["mean_concept_accuracy"] >= 0.9, result
    assert set(result["concept_accuracy"]) == {"top", "left", "bottom"}
    per = concept_accuracy(model, test_x, QUAD.concept_labels(test_y))
    assert per == result["concept_accuracy"]
    acts, probs = predict_concepts(model, test_x)
    assert acts.shape == (64, 3) and probs.shape == (64, 4)
    assert ((acts >= 0) & (acts <= 1)).all()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_sequential_head_sees_only_the_frozen_concept_net(data):
    images, labels = data
    cfg = CBMConfig(mode="sequential", **TINY)
    seq = train_cbm(images, labels, QUAD, cfg)
    ind = train_cbm(images, labels, QUAD, CBMConfig(mode="independent", **TINY))
    # same seed, same x -> c stage: identical concept networks, different heads
    assert state_equal(seq.concept_net, ind.concept_net)
    assert not torch.equal(seq.head.weight, ind.head.weight)


def test_training_is_deterministic_and_seeded(data):
    images, labels = data
    cfg = CBMConfig(mode="joint", **{**TINY, "epochs": 2})
    a = train_cbm(images, labels, QUAD, cfg)
    b = train_cbm(images, labels, QUAD, cfg)
    c = train_cbm(images, labels, QUAD, CBMConfig(mode="joint", seed=1, **{**TINY, "epochs": 2}))
    assert state_equal(a, b)
    assert not state_equal(a, c)


def test_per_image_concept_labels_and_progress(data):
    images, labels = data
    calls = []
    cfg = CBMConfig(mode="sequential", **{**TINY, "epochs": 1, "head_epochs": 1})
    train_cbm(
        images,
        labels,
        QUAD,
        cfg,
        concept_labels=QUAD.concept_labels(labels),
        progress=lambda d, t, m: calls.append((d, t, m)),
    )
    assert calls[-1][0] == calls[-1][1] == 2 * 6
    assert any("x->c" in m for *_, m in calls) and any("c->y" in m for *_, m in calls)
    with pytest.raises(ValueError, match="concept_labels"):
        train_cbm(images, labels, QUAD, cfg, concept_labels=np.zeros((len(labels), 2)))
    with pytest.raises(ValueError, match="mode"):
        CBMConfig(mode="hybrid")


def test_save_load_roundtrip(joint, data, tmp_path):
    images, _ = data
    path = cbm_save(joint, tmp_path / "cbm.safetensors")
    loaded = cbm_load(path)
    assert loaded.concept_names == joint.concept_names
    assert loaded.class_names == joint.class_names
    assert state_equal(loaded, joint)
    assert explain(loaded, images[3]).text == explain(joint, images[3]).text
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        cbm_load(tmp_path / "pickle.pt")
    with pytest.raises(WeightsError, match="not found"):
        cbm_load(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------ attribute tables


def test_fashion_mnist_table():
    t = FASHION_MNIST_ATTRIBUTES
    assert list(t.classes) == FASHION_MNIST_CLASSES
    assert 8 <= t.num_concepts <= 12
    assert t.unique_codes()
    assert set(t.descriptions) == set(t.concepts)
    row = dict(zip(t.concepts, t.matrix[FASHION_MNIST_CLASSES.index("Ankle boot")], strict=True))
    assert row["footwear"] == row["ankle_high"] == 1 and row["has_sleeves"] == 0
    np.testing.assert_array_equal(t.concept_labels([9, 8])[1], t.matrix[8])


def write(tmp_path, text: str):
    path = tmp_path / "table.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_attribute_table_load_roundtrip(tmp_path):
    path = attribute_table_save(FASHION_MNIST_ATTRIBUTES, tmp_path / "fm.csv")
    t = attribute_table_load(path, FASHION_MNIST_CLASSES)
    assert t.classes == FASHION_MNIST_ATTRIBUTES.classes
    np.testing.assert_array_equal(t.matrix, FASHION_MNIST_ATTRIBUTES.matrix)
    # rows in any order, comments, blank lines, spaces; returned in the given class order
    t = attribute_table_load(
        write(tmp_path, "# hand-made\nclass, wings, beak\n\nb, 0, 1\na ,1,0\n"), ["a", "b"]
    )
    assert t.classes == ("a", "b") and t.concepts == ("wings", "beak")
    np.testing.assert_array_equal(t.matrix, [[1, 0], [0, 1]])
    assert attribute_table_load(write(tmp_path, "class,x,y\nq,1,1\np,0,0\n")).classes == ("q", "p")


@pytest.mark.parametrize(
    "text, match",
    [
        ("class,wings\na,1\nc,0\n", r"line 3 \(class 'c'\): unknown class"),
        ("class,wings\na,1\nb,0\na,0\n", r"line 4 \(class 'a'\): duplicate row"),
        (
            "class,wings,beak\na,1,2\nb,0,0\n",
            r"line 2 \(class 'a'\): concept 'beak' must be 0 or 1, got '2'",
        ),
        ("class,wings\na,yes\nb,0\n", r"line 2 \(class 'a'\).*got 'yes'"),
        ("class,wings\na,\nb,0\n", r"line 2 \(class 'a'\).*got ''"),
        ("class,wings,beak\na,1\nb,0,0\n", r"line 2 \(class 'a'\): 2 fields"),
        ("class,wings\na,1\n", r"no row for classes \['b'\]"),
        ("label,wings\na,1\nb,0\n", "header must start with 'class'"),
        ("class,wings,wings\na,1,1\nb,0,0\n", "duplicate concept names"),
        ("class\na\nb\n", "names no concepts"),
        ("class,wings\n", "no class rows"),
        ("", "empty attribute table"),
    ],
)
def test_attribute_table_validation(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        attribute_table_load(write(tmp_path, text), ["a", "b"])


def test_attribute_table_constructor_validation():
    with pytest.raises(ValueError, match="0 or 1"):
        AttributeTable(("a", "b"), ("x",), np.array([[1], [2]]))
    with pytest.raises(ValueError, match="duplicate class"):
        AttributeTable(("a", "a"), ("x",), np.array([[1], [0]]))
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        AttributeTable(("a", "b"), ("x",), np.array([[1, 0]]))


# --------------------------------------------------------------------------------- TCAV

D, H = 64, 16


class Planted(nn.Module):
    """``h = W x`` (orthonormal rows, 8 x 8 inputs), target logit ``h[0] + 0.5 q . tanh(h)``
    with ``q`` zero on units 0 and 1: the logit rises along unit 0 (the planted direction)
    and is flat along unit 1, while the nonlinear part makes the gradient vary by input."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(D, H, generator=g))
        self.features = nn.Linear(D, H, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(q.T)
        mix = torch.zeros(H)
        mix[2:] = torch.randn(H - 2, generator=g)
        self.register_buffer("mix", mix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.flatten(1))
        s = h[:, 0] + 0.5 * (self.mix * torch.tanh(h)).sum(1)
        return torch.stack([s, -s], 1)


def planted_sets(seed: int = 0):
    model = Planted().eval()
    w = model.features.weight.detach()
    rng = np.random.default_rng(seed)

    def noise(n):
        return torch.from_numpy(rng.normal(size=(n, 1, 8, 8)).astype(np.float32))

    def along(unit, n):
        return noise(n) + 3.0 * w[unit].reshape(1, 1, 8, 8)

    concepts = {"planted": along(0, 40), "orthogonal": along(1, 40)}
    randoms = [noise(40) for _ in range(9)]
    return model, concepts, randoms, noise(40)


@pytest.fixture(scope="module")
def planted_result():
    torch.set_num_threads(1)
    model, concepts, randoms, inputs = planted_sets()
    return tcav_scores(model, "features", 0, concepts, randoms, inputs, seed=0)


def test_tcav_recovers_a_planted_direction(planted_result):
    r = planted_result
    planted, orthogonal = r.concepts["planted"], r.concepts["orthogonal"]
    assert r.n_random == 8 and r.bonferroni_m == 2 and r.bonferroni_alpha == 0.025
    assert planted.mean >= 0.95 and min(planted.scores) >= 0.9
    assert planted.significant and planted.significant_bonferroni
    assert planted.p_value < 0.025
    assert planted.mean_cav_accuracy >= 0.8  # the concept is separable from random
    # separable too, but the logit does not depend on it: indistinguishable from random
    assert orthogonal.mean_cav_accuracy >= 0.8
    assert not orthogonal.significant and orthogonal.p_value > 0.05
    # random-vs-random CAVs separate nothing
    assert np.mean(r.random_cav_accuracy) < 0.75
    assert len(r.random_scores) == 8
    assert "Bonferroni" in r.note and "planted" in r.summary()
    assert r.as_dict()["concepts"]["planted"]["significant"] is True


def test_tcav_is_deterministic(planted_result):
    model, concepts, randoms, inputs = planted_sets()
    again = tcav_scores(model, "features", 0, concepts, randoms, inputs, seed=0)
    assert again.as_dict() == planted_result.as_dict()


def test_tcav_input_validation():
    model, concepts, randoms, inputs = planted_sets()
    with pytest.raises(ValueError, match="random sets"):
        tcav_scores(model, "features", 0, concepts, randoms[:3], inputs, n_random=3)
    with pytest.raises(ValueError, match="n_random must be >= 2"):
        tcav_scores(model, "features", 0, concepts, randoms[:2], inputs)
    with pytest.raises(ValueError, match=">= 4 examples"):
        tcav_scores(model, "features", 0, {"x": concepts["planted"][:3]}, randoms, inputs)
    with pytest.raises(ValueError, match="no concept sets"):
        tcav_scores(model, "features", 0, {}, randoms, inputs)
    with pytest.raises(ValueError, match="kind"):
        LinearCAVClassifier("svm")


def test_texture_concepts_are_seeded_and_shaped():
    a = texture_concepts(12, n_per_set=5, n_random=2, seed=0)
    b = texture_concepts(12, n_per_set=5, n_random=2, seed=0)
    c = texture_concepts(12, n_per_set=5, n_random=2, seed=1)
    assert list(a.concepts) == ["brick", "grass", "gravel"]
    assert len(a.random) == 3
    for arr in [*a.concepts.values(), *a.random]:
        assert arr.shape == (5, 12, 12) and arr.dtype == np.uint8
    assert all(np.array_equal(a.concepts[k], b.concepts[k]) for k in a.concepts)
    assert all(np.array_equal(x, y) for x, y in zip(a.random, b.random, strict=True))
    assert not np.array_equal(a.concepts["brick"], c.concepts["brick"])
    noise = texture_concepts(12, n_per_set=5, n_random=1, random_kind="noise", textures=["grass"])
    assert list(noise.concepts) == ["grass"]
    with pytest.raises(ValueError, match="unknown textures"):
        texture_concepts(12, textures=["marble"])


def test_tcav_on_a_cbm_with_texture_sets(joint):
    """End to end on uint8 images through the default preprocessing: runs, scores in [0, 1]."""
    sets = texture_concepts(8, n_per_set=8, n_random=2, seed=0, textures=["brick"])
    inputs, _ = quadrants(8)
    r = tcav_scores(joint, joint.target_layer, 0, sets.concepts, sets.random, inputs)
    s = r.concepts["brick"].scores
    assert len(s) == 2 and all(0 <= v <= 1 for v in s)


def test_concept_modules_import_no_django():
    code = (
        "import sys; import explanations.concepts.cbm, explanations.concepts.tcav; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
