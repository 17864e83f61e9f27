"""TCAV on researcher-uploaded concept sets: loading folders and zips of real PNGs (and what
is refused), :func:`tcav_for_model` recovering a planted direction through a tiny conv net,
and ``manage.py tcav`` on the tiny colour CNN of the bring-your-own-model tests."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image
from torch import nn

from explanations.concepts.concept_sets import (
    ConceptSetError,
    concept_name_check,
    concept_set_read,
    concept_sets_load,
    concept_sets_split,
    concept_sources_parse,
    rgb_preprocess,
    tcav_for_model,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def noise_images(n: int, h: int = 12, w: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def write_folder(folder: Path, images: list[np.ndarray], prefix: str = "img") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        (folder / f"{prefix}{i:03d}.png").write_bytes(png(img))
    return folder


def write_zip(path: Path, images: list[np.ndarray], extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, img in enumerate(images):
            zf.writestr(f"set/img{i:03d}.png", png(img))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


# ------------------------------------------------------------------------------ loading


def test_folder_and_zip_give_the_same_centre_cropped_rgb_arrays(tmp_path):
    images = noise_images(10)
    folder = write_folder(tmp_path / "striped", images)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    archive = write_zip(
        tmp_path / "dotted.zip",
        images,
        {"__MACOSX/set/._img000.png": b"junk", "set/.hidden.png": b"junk", "set/x.txt": b"x"},
    )
    sets = concept_sets_load({"striped": folder, "dotted": str(archive)}, size=8)
    assert list(sets) == ["striped", "dotted"]
    for arr in sets.values():
        assert arr.shape == (10, 8, 8, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(sets["striped"], sets["dotted"])
    # the central 12 x 12 square of a 12 x 16 image, resized (bicubic) to 8 x 8
    from explanations.imageio import center_square_resize

    np.testing.assert_array_equal(sets["striped"][0], center_square_resize(images[0], 8))
    # the skipped files are reported, __MACOSX and dotfiles are not
    detail = concept_set_read("dotted", archive, size=8)
    assert detail.skipped == ["set/x.txt"] and detail.files[0] == "set/img000.png"
    assert concept_set_read("striped", folder, size=8).skipped == ["notes.txt"]


def test_images_of_any_mode_become_rgb_and_keep_pixels_at_the_same_size(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(grey, mode="L").save(folder / "a.png")
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent: white
    Image.fromarray(rgba, mode="RGBA").save(folder / "b.png")
    Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(folder / "c.jpg", quality=95)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(folder / "d.PNG")
    arr = concept_sets_load({"modes": folder}, size=8, min_images=4)["modes"]
    assert arr.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(arr[0], np.repeat(grey[..., None], 3, axis=-1))
    assert (arr[1] == 255).all() and (arr[3] == 90).all()


def test_a_corrupt_image_refuses_the_whole_set_and_is_named(tmp_path):
    folder = write_folder(tmp_path / "striped", noise_images(10))
    (folder / "broken.png").write_bytes(png(noise_images(1)[0])[:60])  # truncated
    (folder / "empty.jpg").write_bytes(b"")
    with pytest.raises(ConceptSetError, match=r"concept 'striped': 2 of 12 image\(s\)") as err:
        concept_sets_load({"striped": folder}, size=8)
    assert "broken.png" in str(err.value) and "empty.jpg" in str(err.value)
    # in a zip too
    archive = write_zip(tmp_path / "z.zip", noise_images(10), {"set/bad.png": b"not a png"})
    with pytest.raises(ConceptSetError, match=r"concept 'zipped'.*set/bad\.png"):
        concept_sets_load({"zipped": archive}, size=8)


def test_at_most_five_bad_files_are_listed(tmp_path):
    folder = write_folder(tmp_path / "c", noise_images(4))
    for i in range(7):
        (folder / f"bad{i}.png").write_bytes(b"garbage")
    with pytest.raises(ConceptSetError, match=r"7 of 11 .*bad4\.png.*and 2 more") as err:
        concept_sets_load({"c": folder}, size=8, min_images=4)
    assert "bad5.png" not in str(err.value)


@pytest.mark.parametrize("member", ["../evil.png", "/etc/evil.png", "..\\evil.png", "C:/x.png"])
def test_zip_slip_members_are_refused(tmp_path, member):
    archive = write_zip(tmp_path / "slip.zip", noise_images(10), {member: png(noise_images(1)[0])})
    with pytest.raises(ConceptSetError, match=r"concept 'slip'.*unsafe member path"):
        concept_sets_load({"slip": archive}, size=8)


def test_zip_bombs_are_refused_before_decoding(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", noise_images(10))
    with pytest.raises(ConceptSetError, match=r"concept 'bomb'.*above the limit of 1000"):
        concept_sets_load({"bomb": archive}, size=8, max_total_bytes=1000)
    with pytest.raises(ConceptSetError, match=r"11 members, more than 5"):
        write_zip(tmp_path / "many.zip", noise_images(10), {"readme.txt": b"x"})
        concept_sets_load({"many": tmp_path / "many.zip"}, size=8, max_members=5)
    # a folder obeys the byte budget too
    folder = write_folder(tmp_path / "big", noise_images(10))
    with pytest.raises(ConceptSetError, match=r"concept 'big'.*exceed 2000 bytes"):
        concept_sets_load({"big": folder}, size=8, max_total_bytes=2000)


def test_too_few_or_too_many_images(tmp_path):
    folder = write_folder(tmp_path / "few", noise_images(3))
    (folder / "readme.md").write_text("hi")
    with pytest.raises(ConceptSetError, match=r"'few'.*3 image\(s\), fewer than min_images=10"):
        concept_sets_load({"few": folder}, size=8)
    with pytest.raises(ConceptSetError, match=r"1 non-image file\(s\) skipped"):
        concept_sets_load({"few": folder}, size=8)
    with pytest.raises(ConceptSetError, match=r"3 images, more than max_images=2"):
        concept_sets_load({"few": folder}, size=8, min_images=1, max_images=2)


def test_missing_and_unreadable_sources(tmp_path):
    with pytest.raises(ConceptSetError, match=r"concept 'gone'.*does not exist"):
        concept_sets_load({"gone": tmp_path / "nope"}, size=8)
    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(ConceptSetError, match=r"concept 'fake'.*neither a folder nor"):
        concept_sets_load({"fake": tmp_path / "fake.zip"}, size=8)
    with pytest.raises(ConceptSetError, match="no concept sets"):
        concept_sets_load({}, size=8)


@pytest.mark.parametrize("name", ["", "has space", "a" * 41, "x/y", "dots.png", "ü"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ConceptSetError, match="is not allowed"):
        concept_sets_load({name: tmp_path}, size=8)


def test_duplicate_names_and_specs():
    assert concept_name_check("a" * 40) == "a" * 40
    with pytest.raises(ConceptSetError, match=r"duplicate concept name 'Striped'.*ignoring case"):
        concept_sets_load({"striped": "x", "Striped": "y"}, size=8)
    assert concept_sources_parse(["a=dir/a", " b = b.zip "]) == {"a": "dir/a", "b": "b.zip"}
    with pytest.raises(ConceptSetError, match="duplicate concept name 'a'"):
        concept_sources_parse(["a=x", "a=y"])
    with pytest.raises(ConceptSetError, match="expected NAME=PATH"):
        concept_sources_parse(["striped"])
    with pytest.raises(ConceptSetError, match="expected NAME=PATH"):
        concept_sources_parse(["striped="])


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    folder = write_folder(tmp_path / "c", noise_images(10))
    outside = write_folder(tmp_path / "elsewhere", noise_images(1))
    (folder / "link.png").symlink_to(outside / "img000.png")
    with pytest.raises(ConceptSetError, match=r"concept 'c': link\.png: a symbolic link"):
        concept_sets_load({"c": folder}, size=8)


def test_concept_sets_module_imports_no_django():
    code = (
        "import sys; import explanations.concepts.concept_sets; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_random_sets_are_split_off_in_natural_order():
    sets = {f"random{i}": np.full((1,), i) for i in (10, 2, 0)} | {"striped": np.zeros(1)}
    concepts, randoms = concept_sets_split(sets)
    assert list(concepts) == ["striped"]
    assert [int(r[0]) for r in randoms] == [0, 2, 10]


# --------------------------------------------------------------------------------- TCAV

D, H, S = 3 * 8 * 8, 16, 8


class PlantedConv(nn.Module):
    """The conv-net twin of ``test_concepts.Planted``: ``h = W x`` computed by a 3 -> 16
    convolution with an 8 x 8 kernel on 8 x 8 RGB inputs (orthonormal rows over the 192 input
    values), target logit ``h[0] + 0.5 q . tanh(h)`` with ``q`` zero on units 0 and 1: the
    logit rises along unit 0 (the planted direction) and is flat along unit 1."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(D, H, generator=g))
        self.features = nn.Conv2d(3, H, kernel_size=S, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(q.T.reshape(H, 3, S, S))
        self.flat = nn.Flatten()
        mix = torch.zeros(H)
        mix[2:] = torch.randn(H - 2, generator=g)
        self.register_buffer("mix", mix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.flat(self.features(x))
        s = h[:, 0] + 0.5 * (self.mix * torch.tanh(h)).sum(1)
        return torch.stack([s, -s], 1)


#: uint8 pixel = 128 + 32 z, so the model's input is z (up to rounding).
PRE = rgb_preprocess([128.0] * 3, [32.0] * 3)


def planted_images(seed: int = 0):
    """uint8 (n, 8, 8, 3) images: noise, and noise plus 3 x unit 0's or unit 1's direction."""
    model = PlantedConv().eval()
    w = model.features.weight.detach().numpy()  # (H, 3, 8, 8)
    rng = np.random.default_rng(seed)

    def to_uint8(z: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(128 + 32 * z), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    def noise(n):
        return rng.normal(size=(n, 3, S, S))

    def along(unit, n):
        return to_uint8(noise(n) + 3.0 * w[unit][None])

    concepts = {"planted": along(0, 40), "orthogonal": along(1, 40)}
    randoms = [to_uint8(noise(40)) for _ in range(9)]
    return model, concepts, randoms, to_uint8(noise(40))


def test_uploaded_sets_recover_a_planted_direction(tmp_path):
    """Robust over seeds (0-7 checked): the planted concept scores 1.00, the orthogonal one
    0.01-0.63. The significance verdicts depend on the draw, because every CAV of a concept
    shares its 40 examples: with the null runs' stand-in rotated over the random sets, the
    planted concept was significant after Bonferroni for 7 of seeds 0-7 and the orthogonal one
    significant for 1 (seed 5); with one shared stand-in (random set 0) it had been 5 and about
    4. Seed 2 is a draw where both verdicts come out right."""
    model, concepts, randoms, inputs = planted_images(seed=2)
    write_folder(tmp_path / "planted", list(concepts["planted"]))
    write_zip(tmp_path / "orthogonal.zip", list(concepts["orthogonal"]))
    loaded = concept_sets_load(
        {"planted": tmp_path / "planted", "orthogonal": tmp_path / "orthogonal.zip"}, size=S
    )
    for name in concepts:  # PNG round trip at the same size: the pixels are unchanged
        np.testing.assert_array_equal(loaded[name], concepts[name])

    results = tcav_for_model(model, PRE, loaded, randoms, inputs, 0, ["features"])
    r = results["features"]
    planted, orthogonal = r.concepts["planted"], r.concepts["orthogonal"]
    assert r.n_random == 8 and r.bonferroni_m == 2 and r.n_inputs == 40
    assert planted.mean >= 0.95 and min(planted.scores) >= 0.9
    assert planted.mean_cav_accuracy >= 0.8 and orthogonal.mean_cav_accuracy >= 0.8
    assert orthogonal.mean < 0.9  # separable from random, but the logit is flat along it
    # this draw's verdicts
    assert planted.significant_bonferroni and planted.p_value < 0.025
    assert not orthogonal.significant and orthogonal.p_value > 0.05


def test_generated_random_sets_and_several_layers():
    model, concepts, _, inputs = planted_images()
    small = {k: v[:8] for k, v in concepts.items()}
    results = tcav_for_model(
        model, PRE, small, None, inputs[:6], 0, ["features", "flat"], n_random=2
    )
    assert list(results) == ["features", "flat"]
    for r in results.values():
        assert r.n_random == 2 and r.bonferroni_m == 4 and r.bonferroni_alpha == 0.05 / 4
        assert "all 4 tests" in r.note
        for c in r.concepts.values():
            assert c.significant_bonferroni == (c.p_value < 0.0125)
            assert all(0 <= s <= 1 for s in c.scores)
    # the same activations (Flatten of a 1 x 1 map): the same CAVs and scores
    assert results["features"].concepts["planted"].scores == (
        results["flat"].concepts["planted"].scores
    )
    # generated sets are deterministic
    again = tcav_for_model(model, PRE, small, None, inputs[:6], 0, ["flat"], n_random=2)
    assert again["flat"].random_scores == results["flat"].random_scores


def test_tcav_for_model_validation():
    model, concepts, randoms, inputs = planted_images()
    run = tcav_for_model
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['conv9'\]"):
        run(model, PRE, concepts, randoms, inputs, 0, ["conv9"])
    with pytest.raises(ValueError, match="no layers"):
        run(model, PRE, concepts, randoms, inputs, 0, [])
    with pytest.raises(ValueError, match="target 2 is not a logit index"):
        run(model, PRE, concepts, randoms, inputs, 2, ["features"])
    with pytest.raises(ValueError, match="concept 'planted': expected uint8 images of shape"):
        run(model, PRE, {"planted": concepts["planted"][:, :4]}, randoms, inputs, 0, ["features"])
    with pytest.raises(ValueError, match="random sets"):
        run(model, PRE, {"random7": concepts["planted"]}, randoms, inputs, 0, ["features"])
    with pytest.raises(ValueError, match=r"2 random set\(s\) uploaded"):
        run(model, PRE, concepts, randoms[:2], inputs, 0, ["features"])
    with pytest.raises(ValueError, match="no concept sets"):
        run(model, PRE, {}, randoms, inputs, 0, ["features"])


# ------------------------------------------------------------------------------ command


def square(colour: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((40, 48, 3), 30, np.int16)
    img[8:32, 12:36] = colour
    return np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def command_sets(tmp_path):
    """Red squares (folder), blue squares (zip), three random sets of coloured noise."""
    red = write_folder(tmp_path / "red", [square((240, 20, 20), i) for i in range(5)])
    blue = write_zip(tmp_path / "blue.zip", [square((20, 20, 240), i) for i in range(5)])
    randoms = [
        write_folder(tmp_path / f"random{j}", [square((30, 30, 30), 10 * j + i) for i in range(5)])
        for j in range(3)
    ]
    args = ["--concept", f"reddish={red}", "--concept", f"bluish={blue}"]
    for j, folder in enumerate(randoms):
        args += ["--random", f"random{j}={folder}"]
    return args + ["--min-images", "4"]


def test_command_prints_the_table_and_writes_json(
    factory_model, folder_dataset, command_sets, tmp_path
):
    out, path = io.StringIO(), tmp_path / "tcav.json"
    call_command(
        "tcav",
        factory_model.name,
        *command_sets,
        "--dataset",
        folder_dataset.name,
        "--class",
        "red",
        "--json",
        str(path),
        stdout=out,
    )
    text = out.getvalue()
    assert "reddish: 5 images" in text and "3 input(s) of class 'red'" in text
    header = next(line for line in text.splitlines() if line.startswith("concept"))
    assert header.split()[:4] == ["concept", "layer", "CAV", "acc"]
    assert "(random)" in text and "Bonferroni over 2 test(s)" in text
    data = json.loads(path.read_text())
    assert data["class"] == "red" and data["target"] == 0 and len(data["items"]) == 3
    layer = factory_model.target_layer
    result = data["results"][layer]
    assert set(result["concepts"]) == {"reddish", "bluish"} and result["n_random"] == 2
    assert data["concepts"]["bluish"]["n_images"] == 5 and data["random_sets"] == "uploaded"
    # the red logit rises with the red channel: red squares beat blue ones
    assert result["concepts"]["reddish"]["mean"] > result["concepts"]["bluish"]["mean"]

    # generated random sets, default class (a tie between red, green and blue: the first)
    out = io.StringIO()
    call_command(
        "tcav",
        factory_model.name,
        *command_sets[:4],
        "--min-images",
        "4",
        "--randoms",
        "2",
        "--dataset",
        folder_dataset.name,
        stdout=out,
    )
    text = out.getvalue()
    assert "no --class: using 'red'" in text and "generating 3 greyscale random sets" in text
    assert "reddish" in text and "random0" not in text


def test_command_errors_write_nothing(factory_model, folder_dataset, command_sets, tmp_path):
    path = tmp_path / "tcav.json"
    base = [*command_sets, "--dataset", folder_dataset.name, "--json", str(path)]
    with pytest.raises(CommandError, match="no model named 'nope'"):
        call_command("tcav", "nope", *base)
    (tmp_path / "red" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(CommandError, match=r"concept 'reddish'.*zz-broken\.png"):
        call_command("tcav", factory_model.name, *base, "--class", "red")
    (tmp_path / "red" / "zz-broken.png").unlink()
    with pytest.raises(CommandError, match="--class 'purple' is not a class"):
        call_command("tcav", factory_model.name, *base, "--class", "purple")
    with pytest.raises(CommandError, match="no labelled items of class 'yellow'"):
        call_command("tcav", factory_model.name, *base, "--class", "yellow")
    with pytest.raises(CommandError, match=r"unknown layer\(s\) \['conv9'\]"):
        call_command("tcav", factory_model.name, *base, "--layer", "conv9")
    with pytest.raises(CommandError, match="either --random sets or --randoms"):
        call_command("tcav", factory_model.name, *base, "--randoms", "3")
    with pytest.raises(CommandError, match="names starting with 'random' go to --random"):
        call_command("tcav", factory_model.name, *base, "--concept", f"random9={tmp_path}")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("tcav", factory_model.name, *base[:-1], str(tmp_path / "no" / "x.json"))
    assert not path.exists()
