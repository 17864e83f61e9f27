"""labeling.training on tiny synthetic data (no database, no Fashion-MNIST): learning,
determinism, cross-fitting's out-of-sample guarantee, safetensors I/O, input validation."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from labeling.training import (
    CrossFitResult,
    SmallCNN,
    TrainConfig,
    WeightsError,
    cross_fit,
    model_load,
    predict,
    small_cnn,
    state_dict_save,
    train_model,
)

#: Small, fast settings for 8 x 8 images (the defaults are sized for Fashion-MNIST).
TINY = TrainConfig(
    epochs=10, batch_size=32, lr=1e-2, width=4, embedding_dim=16, input_size=8, folds=3
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks run faster on one thread, and two OpenMP threads on 2 shared cores
    stall; restore the process-wide setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quadrants(n: int, seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Noisy dark images whose class (0-3) is the bright quadrant: TL, TR, BL, BR."""
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
def quad_model():
    torch.set_num_threads(1)
    images, labels = quadrants(200)
    return train_model(images, labels, 4, TINY)


def test_learns_separable_quadrants(quad_model):
    test_images, test_labels = quadrants(200, seed=1)
    probs, embeddings = predict(quad_model, test_images)
    assert probs.dtype == np.float32 and probs.shape == (200, 4)
    assert embeddings.dtype == np.float32 and embeddings.shape == (200, 16)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    assert (probs.argmax(1) == test_labels).mean() >= 0.95
    assert not quad_model.training


def test_rgb_input_equals_grey_input(quad_model):
    grey, _ = quadrants(20, seed=2)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    p_grey, e_grey = predict(quad_model, grey)
    p_rgb, e_rgb = predict(quad_model, rgb)
    np.testing.assert_allclose(p_rgb, p_grey, atol=1e-6)
    np.testing.assert_allclose(e_rgb, e_grey, atol=1e-5)


def test_platform_preprocessing_matches(quad_model):
    """The platform's (pixel - mean) / std in 0-255 units, fed as (N, 3, S, S) RGB, gives the
    probabilities predict() gives."""
    from explanations.modelio import pixels_to_input

    grey, _ = quadrants(6, seed=3)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    x = torch.cat(
        [
            pixels_to_input(img, TINY.normalization_mean_255, TINY.normalization_std_255)
            for img in rgb
        ]
    )
    assert x.shape == (6, 3, 8, 8)
    with torch.no_grad():
        platform = torch.softmax(quad_model(x), 1).numpy()
    np.testing.assert_allclose(platform, predict(quad_model, rgb)[0], atol=1e-5)
    assert TINY.normalization_mean_255 == [pytest.approx(72.93)] * 3
    assert TINY.normalization_std_255 == [pytest.approx(90.015)] * 3


def test_target_layer_is_last_conv(quad_model):
    modules = dict(quad_model.named_modules())
    target = modules[SmallCNN.target_layer]
    assert isinstance(target, nn.Conv2d)
    convs = [name for name, m in quad_model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1] == SmallCNN.target_layer


def test_model_accepts_three_channel_tensors():
    model = SmallCNN(3, input_size=28).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 3)
        assert model.embed(torch.zeros(2, 1, 28, 28)).shape == (2, 128)
        assert SmallCNN(3, input_size=32, grey=False).eval()(torch.zeros(1, 3, 32, 32)).shape == (
            1,
            3,
        )
    with pytest.raises(ValueError, match="channels"):
        SmallCNN(3, grey=False)(torch.zeros(1, 1, 28, 28))


def test_factory_matches_default_config():
    """The registered factory, called with num_classes only, builds the architecture that
    TrainConfig's defaults train (so its safetensors file loads strictly)."""
    config = TrainConfig()
    trained_shape = SmallCNN(
        10,
        input_size=config.input_size,
        grey=config.grey,
        width=config.width,
        embedding_dim=config.embedding_dim,
    ).state_dict()
    factory_shape = small_cnn(num_classes=10).state_dict()
    assert {k: v.shape for k, v in trained_shape.items()} == {
        k: v.shape for k, v in factory_shape.items()
    }


def test_deterministic_same_seed_and_different_seed():
    images, labels = quadrants(96, seed=4)
    config = replace(TINY, epochs=3)
    a = train_model(images, labels, 4, config)
    b = train_model(images, labels, 4, config)
    c = train_model(images, labels, 4, replace(config, seed=1))
    assert state_equal(a, b)
    assert not state_equal(a, c)


def test_leaves_global_torch_state_alone():
    images, labels = quadrants(40)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    train_model(images, labels, 4, replace(TINY, epochs=1))
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.rand(3), expected)


def test_progress_reports_every_step_range():
    images, labels = quadrants(64)
    calls = []
    train_model(images, labels, 4, replace(TINY, epochs=2), progress=lambda *a: calls.append(a))
    done = [c[0] for c in calls]
    assert done == sorted(done) and done[-1] == calls[-1][1] == 4  # 2 epochs x 2 batches
    assert calls[-1][2] == "training: epoch 2/2"


@pytest.fixture(scope="module")
def crossfit_run():
    torch.set_num_threads(1)
    images, labels = quadrants(120, seed=5)
    steps = []
    result = cross_fit(
        images, labels, 4, replace(TINY, epochs=4), progress=lambda d, t, m: steps.append((d, t))
    )
    return images, labels, result, steps


def test_cross_fit_result_shapes(crossfit_run):
    images, labels, result, steps = crossfit_run
    assert isinstance(result, CrossFitResult)
    assert result.pred_probs.dtype == np.float32 and result.pred_probs.shape == (120, 4)
    np.testing.assert_allclose(result.pred_probs.sum(1), 1.0, atol=1e-5)
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (120, 16)
    assert result.fold.dtype == np.int64 and result.fold.shape == (120,)
    assert len(result.fold_accuracy) == 3
    assert isinstance(result.model, SmallCNN) and not result.model.training
    assert result.seconds > 0
    assert set(result.phase_seconds) == {"fold 1", "fold 2", "fold 3", "final", "embed"}
    # 3 folds train on 80 items (3 batches x 4 epochs), the final model on 120 (4 x 4)
    assert steps[-1] == (3 * 12 + 16, 3 * 12 + 16)


def test_cross_fit_folds_partition_stratified(crossfit_run):
    _, labels, result, _ = crossfit_run
    assert set(result.fold.tolist()) == {0, 1, 2}  # every item held out exactly once
    for c in range(4):
        per_fold = np.bincount(result.fold[labels == c], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1
    for k, acc in enumerate(result.fold_accuracy):
        held = result.fold == k
        assert acc == pytest.approx((result.pred_probs[held].argmax(1) == labels[held]).mean())


def test_cross_fit_probs_come_from_the_model_that_did_not_see_the_item(crossfit_run):
    """Retrain fold k's model on exactly the other folds: it reproduces the held-out
    probabilities bit for bit (and a model trained on everything does not)."""
    images, labels, result, _ = crossfit_run
    config = replace(TINY, epochs=4)
    for k in range(3):
        held = result.fold == k
        model_k = train_model(images[~held], labels[~held], 4, config)
        probs, _ = predict(model_k, images[held])
        np.testing.assert_array_equal(probs, result.pred_probs[held])
    in_sample, _ = predict(result.model, images)
    assert not np.array_equal(in_sample, result.pred_probs)
    assert state_equal(result.model, train_model(images, labels, 4, config))


def test_noise_labels_out_of_sample_near_chance_in_sample_memorised():
    """Pure-noise labels: a net that memorises its training items is near chance on items it
    did not see, so cross-fitted probabilities carry no memorised labels."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (120, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 2, 120)
    config = replace(TINY, epochs=25, batch_size=60, width=4, embedding_dim=64, folds=2)
    result = cross_fit(images, labels, 2, config)
    out_of_sample = (result.pred_probs.argmax(1) == labels).mean()
    in_sample = (predict(result.model, images)[0].argmax(1) == labels).mean()
    assert in_sample >= 0.95
    assert 0.3 <= out_of_sample <= 0.7


def test_save_load_round_trip(tmp_path, quad_model):
    path = state_dict_save(quad_model, tmp_path / "quad.safetensors")
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["quad.safetensors"]  # no temp file left
    loaded = model_load(path, 4, input_size=8, grey=True, width=4, embedding_dim=16)
    assert not loaded.training
    assert state_equal(loaded, quad_model)
    images, _ = quadrants(30, seed=6)
    for a, b in zip(predict(loaded, images), predict(quad_model, images), strict=True):
        np.testing.assert_array_equal(a, b)

    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert meta["factory"] == "labeling.training.small_cnn"
    assert meta["width"] == "4" and meta["num_classes"] == "4"


def test_saved_default_model_loads_through_the_platform_factory(tmp_path):
    from explanations.modelio import model_build

    model = small_cnn(10)
    path = state_dict_save(model, tmp_path / "fmnist.safetensors")
    built = model_build("labeling.training.small_cnn", path, 10, kind="factory")
    assert isinstance(built, SmallCNN) and state_equal(built, model)


def test_save_overwrites_atomically(tmp_path, quad_model):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"old")
    state_dict_save(quad_model, path)
    assert model_load(path, 4, 8, True, width=4, embedding_dim=16) is not None


class _Exploit:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_refused_and_never_unpickled(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    payload = {"features.conv1.weight": _Exploit(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(WeightsError, match="not a readable safetensors file.*never loaded"):
        model_load(path, 4, 8, True, width=4, embedding_dim=16)
    assert not marker.exists()


def test_load_errors(tmp_path, quad_model):
    with pytest.raises(WeightsError, match="not found"):
        model_load(tmp_path / "missing.safetensors", 4)
    path = state_dict_save(quad_model, tmp_path / "q.safetensors")
    with pytest.raises(WeightsError, match=r"shape mismatches.*classifier"):
        model_load(path, 5, 8, True, width=4, embedding_dim=16)
    with pytest.raises(WeightsError, match="shape mismatches"):
        model_load(path, 4, 8, True)  # default width 16
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        model_load(truncated, 4, 8, True, width=4, embedding_dim=16)


def _images(n=12, size=8):
    return quadrants(n, size=size)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"images": np.zeros((12, 8, 8), np.float32)}, "must be uint8"),
        ({"images": np.zeros((12, 8, 8, 4), np.uint8)}, r"\(N, S, S\) or \(N, S, S, 3\)"),
        ({"images": np.zeros((12, 8, 6), np.uint8)}, "must be square"),
        ({"images": np.zeros((12, 10, 10), np.uint8)}, "config.input_size is 8"),
        ({"images": np.zeros((0, 8, 8), np.uint8), "labels": np.zeros(0, int)}, "N == 0"),
        ({"labels": np.zeros(11, int)}, r"shape \(12,\)"),
        ({"labels": np.zeros((12, 1), int)}, r"shape \(12,\)"),
        ({"labels": np.full(12, 0.5)}, "must be integers"),
        ({"labels": np.full(12, 4)}, r"in \[0, 4\)"),
        ({"labels": np.full(12, -1)}, r"in \[0, 4\)"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"config": replace(TINY, folds=1)}, "folds must be >= 2"),
        ({"labels": np.array([0] * 10 + [1, 1])}, "at least folds=3.*class 1: 2"),
    ],
)
def test_cross_fit_validation_before_training(kwargs, message):
    images, labels = _images()
    args = {"images": images, "labels": labels, "num_classes": 4, "config": TINY}
    args.update(kwargs)
    calls = []
    with pytest.raises(ValueError, match=message):
        cross_fit(**args, progress=lambda *a: calls.append(a))
    assert calls == []  # nothing was trained


def test_cross_fit_allows_absent_classes():
    images, labels = quadrants(24)
    result = cross_fit(images, labels, 6, replace(TINY, epochs=1, folds=2))
    assert result.pred_probs.shape == (24, 6)


@pytest.mark.parametrize(
    "changes",
    [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"std": 0.0}, {"fold_epochs": 0}],
)
def test_config_validation(changes):
    with pytest.raises(ValueError):
        TrainConfig(**changes)


def test_fold_epochs_used_for_fold_models():
    images, labels = quadrants(48)
    steps = []
    cross_fit(
        images,
        labels,
        4,
        replace(TINY, epochs=2, fold_epochs=1, folds=2),
        progress=lambda d, t, m: steps.append((d, t, m)),
    )
    # folds: 24 items = 1 batch x 1 epoch each; final: 48 items = 2 batches x 2 epochs
    assert steps[-1][:2] == (2 + 4, 6)
    assert any(m == "fold 2/2: epoch 1/1" for _, _, m in steps)
    assert steps[-1][2] == "final: epoch 2/2"
