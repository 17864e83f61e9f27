"""Label correction services: IDX import, label versions, cross-fitted training runs.

The curation queue (projects, decisions, consensus, export) is in :mod:`labeling.curation`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile, File
from django.db import transaction
from django.utils import timezone
from PIL import Image

from explanations.imageio import center_square_resize, encode_png, image_decode
from explanations.models import Dataset, Item
from explanations.services.datasets import ImportReport

from .models import Architecture, ItemLabel, LabelVersion, RunStatus, TrainingRun

logger = logging.getLogger(__name__)

IDX_BATCH = 2000


class LabelingError(ValueError):
    """A request the labeling services cannot honour (the message says why)."""


# --------------------------------------------------------------------------------------------
# IDX import


def dataset_import_idx(
    *,
    dataset: Dataset,
    directory: str | Path,
    splits: tuple[str, ...] | None = None,
    limit: int | None = None,
    progress=None,
    pairs: dict | None = None,
) -> ImportReport:
    """Import the standard IDX image/label pairs of ``directory`` into ``dataset``.

    Reads ``train-*`` and ``t10k-*`` pairs (:func:`labeling.idx.idx_dataset_read`); split
    ``t10k`` is stored as ``test``. Each 2-D uint8 image becomes an RGB PNG item named
    ``<split>-<index:05d>`` whose checksum is that of the record's raw bytes; an image already
    in the dataset (same name or same pixels) is reported in ``duplicates`` and skipped. Items
    are written in batches of :data:`IDX_BATCH` (one transaction each). Labels index
    ``dataset.class_names`` (set to the Fashion-MNIST names when the dataset has none and the
    labels fit them); label version 1 is created or extended.

    Args:
        splits: the splits to import (default: all found).
        limit: at most this many items per split (the first ones), for trials.
        progress: ``progress(done, total)`` after each batch.
        pairs: what :func:`labeling.idx.idx_dataset_read` returned for ``directory``, when the
            caller already read it (to check the files before creating the dataset).

    Raises:
        labeling.idx.IdxError: a malformed or missing file (nothing is imported).
        LabelingError: labels outside the dataset's class names.
    """
    from .idx import FASHION_MNIST_CLASSES, idx_dataset_read

    pairs = pairs if pairs is not None else idx_dataset_read(directory)
    if splits:
        unknown = set(splits) - set(pairs) - {"test"}
        if unknown:
            raise LabelingError(f"split(s) {sorted(unknown)} not found in {directory}")
        pairs = {
            s: v for s, v in pairs.items() if s in splits or (s == "t10k" and "test" in splits)
        }
    names = list(dataset.class_names or [])
    top = max(int(labels.max()) for _, labels in pairs.values() if len(labels))
    if not names:
        if top < len(FASHION_MNIST_CLASSES):
            names = list(FASHION_MNIST_CLASSES)
        else:
            names = [str(i) for i in range(top + 1)]
        dataset.class_names = names
        dataset.save(update_fields=["class_names"])
    elif top >= len(names):
        raise LabelingError(f"label {top} is outside the dataset's {len(names)} class names")
    report = ImportReport()
    total = sum(min(len(lab), limit or len(lab)) for _, lab in pairs.values())
    done = 0
    seen_names = set(dataset.items.values_list("name", flat=True))
    seen_sha = set(dataset.items.values_list("sha256", flat=True))
    source_dir = str(Path(directory).resolve())
    for split, (images, labels) in pairs.items():
        split_name = "test" if split == "t10k" else split
        count = min(len(labels), limit or len(labels))
        for start in range(0, count, IDX_BATCH):
            batch: list[Item] = []
            for index in range(start, min(start + IDX_BATCH, count)):
                pixels = images[index]
                name = f"{split_name}-{index:05d}"
                sha = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
                if name in seen_names or sha in seen_sha:
                    report.duplicates.append(name)
                    continue
                seen_names.add(name)
                seen_sha.add(sha)
                label = int(labels[index])
                item = Item(
                    dataset=dataset,
                    name=name,
                    original_name=f"{split}#{index}",
                    sha256=sha,
                    width=int(pixels.shape[1]),
                    height=int(pixels.shape[0]),
                    original_mode="L",
                    label_index=label,
                    label_name=names[label],
                    source=f"IDX {source_dir} ({split} record {index})",
                    split=split_name,
                )
                rgb = np.repeat(np.asarray(pixels, dtype=np.uint8)[:, :, None], 3, axis=2)
                item.image.save(f"{dataset.pk}-{sha[:16]}.png", ContentFile(encode_png(rgb)), False)
                batch.append(item)
            with transaction.atomic():
                created = Item.objects.bulk_create(batch)
                version = _version_one(dataset)
                if created:
                    ItemLabel.objects.bulk_create(
                        [
                            ItemLabel(version=version, item=it, label_index=it.label_index)
                            for it in created
                        ],
                        ignore_conflicts=True,
                    )
            report.imported.extend(it.name for it in batch)
            done = min(total, done + (min(start + IDX_BATCH, count) - start))
            if progress:
                progress(done, total)
    return report


# --------------------------------------------------------------------------------------------
# Label versions


def _version_one(dataset: Dataset) -> LabelVersion:
    version, _ = LabelVersion.objects.get_or_create(
        dataset=dataset, number=1, defaults={"source": "import", "note": "Labels as imported."}
    )
    return version


def label_version_initial(dataset: Dataset) -> LabelVersion:
    """Version 1 of the dataset's labels (``Item.label_index`` as imported), created on first
    use; items imported later are added to it."""
    version = _version_one(dataset)
    have = set(version.labels.values_list("item_id", flat=True))
    missing = [
        ItemLabel(version=version, item_id=pk, label_index=label)
        for pk, label in dataset.items.values_list("pk", "label_index")
        if pk not in have
    ]
    if missing:
        ItemLabel.objects.bulk_create(missing, batch_size=5000, ignore_conflicts=True)
    return version


def version_labels(version: LabelVersion) -> dict[int, int | None]:
    """``{item id: label index or None (removed)}`` of one version."""
    return dict(version.labels.values_list("item_id", "label_index"))


def label_version_create(
    *,
    parent: LabelVersion,
    changes: dict[int, int | None],
    source: str,
    note: str = "",
    provenance: dict | None = None,
    user=None,
) -> LabelVersion:
    """A new version: ``parent``'s labels with ``changes`` ({item id: new label or None})
    applied. The parent stays as it is.

    Raises:
        LabelingError: an item not in the parent version or a label outside the class names.
    """
    dataset = parent.dataset
    labels = version_labels(parent)
    k = len(dataset.class_names or [])
    for item_id, label in changes.items():
        if item_id not in labels:
            raise LabelingError(f"item {item_id} is not in {parent}")
        if label is not None and k and not 0 <= int(label) < k:
            raise LabelingError(f"label {label} of item {item_id} is outside 0..{k - 1}")
    changed = {i: v for i, v in changes.items() if labels[i] != v}
    labels.update(changed)
    with transaction.atomic():
        number = (
            dataset.label_versions.order_by("-number").values_list("number", flat=True).first() or 0
        ) + 1
        version = LabelVersion.objects.create(
            dataset=dataset,
            number=number,
            parent=parent,
            source=source,
            note=note,
            provenance=provenance or {},
            changed=sum(v is not None for v in changed.values()),
            removed=sum(v is None for v in labels.values()),
            created_by=user,
        )
        ItemLabel.objects.bulk_create(
            [ItemLabel(version=version, item_id=i, label_index=v) for i, v in labels.items()],
            batch_size=5000,
        )
    return version


# --------------------------------------------------------------------------------------------
# Training runs


def _pixels(item: Item, size: int) -> np.ndarray:
    """The item as (size, size, 3) uint8 (central square crop, resized when needed)."""
    with item.image.open("rb") as fh:
        data = fh.read()
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode == "RGB" and img.size == (size, size):
                return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError):
        pass  # image_decode below raises an error that names the item
    decoded = image_decode(data, name=item.name, max_pixels=settings.STUDYPLATFORM_MAX_IMAGE_PIXELS)
    return center_square_resize(decoded.pixels, size)


def items_array(items: list[Item], size: int, progress=None) -> np.ndarray:
    """Stack the items' pixels: uint8 ``(N, size, size, 3)``."""
    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        out[i] = _pixels(item, size)
        if progress and i % 5000 == 4999:
            progress(i + 1, len(items))
    return out


def training_run_create(
    *,
    dataset: Dataset,
    version: LabelVersion | None = None,
    config: dict | None = None,
    train_split: str = "train",
    test_split: str = "test",
    user=None,
    enqueue: bool = True,
    architecture: str = Architecture.CNN,
    attributes: str | Path | None = None,
) -> TrainingRun:
    """Record a training run and send it to the ``cpu`` queue once the transaction commits.

    ``version`` defaults to the dataset's newest label version (after a curation, the
    corrected labels).

    Args:
        architecture: "cnn" (cross-fitted small CNN, for curation), "protopnet" (Chen et al.,
            NeurIPS 2019) or "cbm" (concept bottleneck, Koh et al., ICML 2020).
        attributes: "cbm" only: a class -> concept CSV (``class,<concept>,...`` rows of 0/1;
            :func:`explanations.concepts.cbm.attribute_table_load`), checked against the
            dataset's classes now. ``None``: the built-in Fashion-MNIST table, when the
            dataset's classes are Fashion-MNIST's.
        config: options of the architecture's config (:class:`labeling.training.TrainConfig`,
            :class:`~explanations.prototypes.protopnet.ProtoPNetConfig` or
            :class:`~explanations.concepts.cbm.CBMConfig`).

    Raises:
        LabelingError: an image-less dataset, a version of another dataset, too few items,
            an unknown architecture or config key, or a bad or missing attribute table.
    """
    if architecture not in Architecture.values:
        raise LabelingError(
            f"unknown architecture {architecture!r}; use one of {Architecture.values}"
        )
    config_cls = _config_class(architecture)
    table = None
    if architecture == Architecture.CBM:
        table = _attribute_table(dataset, attributes)
    elif attributes is not None:
        raise LabelingError("an attribute table is only used by --architecture cbm")
    if dataset.modality != "image":
        raise LabelingError("training runs need an image dataset")
    if version is None:
        label_version_initial(dataset)
        version = dataset.label_versions.order_by("-number").first()
    if version.dataset_id != dataset.pk:
        raise LabelingError(f"{version} belongs to another dataset")
    known = set(config_cls.__dataclass_fields__)
    if architecture != Architecture.CNN:
        known -= {"folds", "fold_epochs"}  # one model, no cross-fitting
    unknown = set(config or {}) - known
    if unknown:
        raise LabelingError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
    n = _train_items(dataset, version, train_split).count()
    if n < 20:
        raise LabelingError(
            f"split {train_split!r} of {dataset.name} has {n} labelled items; need at least 20"
        )
    from .tasks import training_run_task

    try:
        config_cls(**(config or {}))
    except (TypeError, ValueError) as exc:
        raise LabelingError(f"training options: {exc}") from None
    with transaction.atomic():
        run = TrainingRun.objects.create(
            dataset=dataset,
            label_version=version,
            architecture=architecture,
            attributes=_table_json(table) if table is not None else {},
            config=dict(config or {}),
            train_split=train_split,
            test_split=test_split,
            requested_by=user,
            num_items=n,
        )
        if enqueue:
            transaction.on_commit(lambda: training_run_task.delay(run.pk))
    return run


def _config_class(architecture: str):
    if architecture == Architecture.PROTOPNET:
        from explanations.prototypes.protopnet import ProtoPNetConfig

        return ProtoPNetConfig
    if architecture == Architecture.CBM:
        from explanations.concepts.cbm import CBMConfig

        return CBMConfig
    from .training import TrainConfig

    return TrainConfig


def _attribute_table(dataset: Dataset, source: str | Path | None):
    """The class -> concept table of a concept-bottleneck run, in the dataset's class order.

    Raises:
        LabelingError: the CSV is malformed or does not cover the dataset's classes; or no
            table was given and the dataset is not Fashion-MNIST-shaped.
    """
    from explanations.concepts.cbm import FASHION_MNIST_ATTRIBUTES, attribute_table_load

    classes = list(dataset.class_names or [])
    if source is None:
        if classes != list(FASHION_MNIST_ATTRIBUTES.classes):
            raise LabelingError(
                "a concept-bottleneck model needs an attribute table (--attributes CSV with a "
                "header 'class,<concept>,...' and one 0/1 row per class); the built-in table "
                f"covers Fashion-MNIST's classes only, and {dataset.name} has {classes[:5]}..."
            )
        return FASHION_MNIST_ATTRIBUTES
    if not classes:
        raise LabelingError(f"{dataset.name} has no class names to match the attribute table to")
    try:
        return attribute_table_load(source, classes)
    except ValueError as exc:
        raise LabelingError(f"attribute table: {exc}") from None


def _table_json(table) -> dict:
    return {
        "classes": list(table.classes),
        "concepts": list(table.concepts),
        "matrix": table.matrix.astype(int).tolist(),
        "descriptions": dict(table.descriptions),
    }


def _train_items(dataset: Dataset, version: LabelVersion, split: str):
    qs = ItemLabel.objects.filter(version=version, label_index__isnull=False)
    if split:
        qs = qs.filter(item__split=split)
    return qs


def training_run_execute(*, run_id: int, echo=None) -> TrainingRun:
    """Cross-fit the run's CNN, store its arrays and weights, and register the final model.

    Progress (``done``/``total`` training steps and a message) is written at most once a
    second; ``echo(done, total, message)`` also gets every update (the CLI's progress bar).
    A failure is recorded with its reason. A finished run is returned as it is.
    """
    from explanations.services.registry import model_register

    from .training import SmallCNN, TrainConfig, cross_fit, predict, state_dict_save

    run = TrainingRun.objects.select_related("dataset", "label_version").get(pk=run_id)
    if run.is_finished:
        return run
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=timezone.now(), done=0, message="reading images"
    )
    last = [0.0]

    def progress(done: int, total: int, message: str = "") -> None:
        if echo:
            echo(done, total, message)
        now = time.monotonic()
        if now - last[0] >= 1.0 or done >= total:
            last[0] = now
            TrainingRun.objects.filter(pk=run.pk).update(
                done=done, total=total, message=message[:200]
            )

    if run.architecture != Architecture.CNN:
        return _interpretable_execute(run, progress)
    try:
        config = TrainConfig(**run.config)
        dataset = run.dataset
        names, items, labels, images = _run_training_data(run, config.input_size, progress)
        result = cross_fit(images, labels, len(names), config, progress=progress)
        test_acc, n_test = _test_accuracy(
            run, config.input_size, lambda arr: predict(result.model, arr)[0], progress
        )
        with tempfile.TemporaryDirectory() as tmp:
            weights, sha = _weights_store(run, result.model, state_dict_save, tmp)
            for field, array in (
                ("item_ids", np.array([it.pk for it in items], dtype=np.int64)),
                ("pred_probs", result.pred_probs.astype(np.float32)),
                ("embeddings", result.embeddings.astype(np.float32)),
            ):
                buf = io.BytesIO()
                np.save(buf, array, allow_pickle=False)
                getattr(run, field).save(
                    f"run-{run.pk}-{field}.npy", ContentFile(buf.getvalue()), False
                )
            classifier = None
            if _factory_matches(config):
                classifier = model_register(
                    name=f"{dataset.name} CNN (run {run.pk}, labels v{run.label_version.number})",
                    weights_path=weights,
                    class_names=names,
                    kind="factory",
                    architecture=FACTORY,
                    input_size=config.input_size,
                    resize_policy="center-crop",
                    normalization={
                        "mean": list(config.normalization_mean_255),
                        "std": list(config.normalization_std_255),
                    },
                    target_layer=SmallCNN.target_layer,
                    owner=run.requested_by,
                )
    except Exception as exc:  # recorded for the researcher; the worker goes on
        return _run_failed(run, exc)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
        item_ids=run.item_ids.name,
        pred_probs=run.pred_probs.name,
        embeddings=run.embeddings.name,
        weights=run.weights.name,
        weights_sha256=sha,
        classifier=classifier,
        fold_accuracy=[float(a) for a in result.fold_accuracy],
        test_accuracy=test_acc,
        test_items=n_test,
        seconds=float(result.seconds),
        num_items=len(items),
        message="finished",
    )
    run.refresh_from_db()
    return run


def _test_accuracy(
    run: TrainingRun, size: int, probabilities, progress
) -> tuple[float | None, int]:
    """Top-1 accuracy in [0, 1] of ``probabilities`` (uint8 images ``(N, S, S[, 3])`` ->
    ``(N, K)``) on the run's test split against its label version, and the number of test
    items; ``(None, 0)`` without a test split or items."""
    if not run.test_split:
        return None, 0
    rows = list(_train_items(run.dataset, run.label_version, run.test_split).select_related("item"))
    if not rows:
        return None, 0
    progress(1, 1, "testing")
    probs = probabilities(items_array([r.item for r in rows], size))
    truth = np.array([r.label_index for r in rows])
    return float((probs.argmax(1) == truth).mean()), len(rows)


def _weights_store(run: TrainingRun, model, save, tmp: str) -> tuple[Path, str]:
    """Write ``model`` with ``save(model, path)`` to a safetensors file in ``tmp``, attach a
    copy to ``run.weights`` (not yet saved to the row) and return the file and its SHA-256."""
    weights = Path(tmp) / "weights.safetensors"
    save(model, weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    with weights.open("rb") as fh:
        run.weights.save(f"run-{run.pk}-{sha[:12]}.safetensors", File(fh), save=False)
    return weights, sha


def _run_failed(run: TrainingRun, exc: Exception) -> TrainingRun:
    """Record why a run failed (the worker goes on) and return it."""
    logger.exception("training run %s failed", run.pk)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED,
        error=f"{type(exc).__name__}: {exc}",
        finished_at=timezone.now(),
    )
    run.refresh_from_db()
    return run


def _run_training_data(run: TrainingRun, size: int, progress):
    """(class names, training items, labels, images) of a run's training split."""
    dataset = run.dataset
    names = list(dataset.class_names or [])
    rows = list(
        _train_items(dataset, run.label_version, run.train_split)
        .select_related("item")
        .order_by("item_id")
    )
    if not names:
        names = [str(i) for i in range(max(r.label_index for r in rows) + 1)]
    items = [r.item for r in rows]
    labels = np.array([r.label_index for r in rows], dtype=np.int64)
    images = items_array(items, size, lambda d, t: progress(0, 1, f"read {d}/{t} images"))
    return names, items, labels, images


def _interpretable_execute(run: TrainingRun, progress) -> TrainingRun:
    """Train a ProtoPNet or a concept-bottleneck model on the run's training split, test it,
    and register it (kind "protopnet" / "cbm") with what its explanations need in
    ``ClassifierModel.details``: each prototype's source item (ProtoPNet) or the attribute
    table (CBM), and the test accuracy."""
    from explanations.services.registry import model_register

    arch = run.architecture
    started = time.monotonic()
    try:
        config = _config_class(arch)(**run.config)
        names, items, labels, images = _run_training_data(run, config.input_size, progress)
        details: dict = {"architecture": arch, "training_run": run.pk}
        if arch == Architecture.PROTOPNET:
            from explanations.prototypes.protopnet import (
                protopnet_predict,
                protopnet_save,
                train_protopnet,
            )

            model, record = train_protopnet(images, labels, len(names), config, progress=progress)
            details["prototype_items"] = {
                str(int(i)): items[int(i)].pk for i in sorted(set(record.train_index.tolist()))
            }
            details["push"] = record.as_dict()

            def probabilities(arr):
                return protopnet_predict(model, arr)[0]

            save, label = protopnet_save, "ProtoPNet"
        else:
            from explanations.concepts.cbm import AttributeTable, cbm_save, train_cbm

            table = AttributeTable(
                classes=run.attributes["classes"],
                concepts=run.attributes["concepts"],
                matrix=np.array(run.attributes["matrix"], dtype=np.uint8),
                descriptions=run.attributes.get("descriptions") or {},
            )
            model = train_cbm(images, labels, table, config, progress=progress)
            details["attributes"] = run.attributes

            def probabilities(arr):
                from explanations.concepts.cbm import predict_concepts

                return predict_concepts(model, arr)[1]

            save, label = cbm_save, "CBM"
        test_acc, n_test = _test_accuracy(run, config.input_size, probabilities, progress)
        details["test_accuracy"] = test_acc
        details["test_items"] = n_test
        with tempfile.TemporaryDirectory() as tmp:
            weights, sha = _weights_store(run, model, save, tmp)
            classifier = model_register(
                name=f"{run.dataset.name} {label} (run {run.pk}, labels "
                f"v{run.label_version.number})",
                weights_path=weights,
                class_names=names,
                kind=arch,
                input_size=config.input_size,
                resize_policy="center-crop",
                normalization={
                    "mean": [config.mean * 255.0] * 3,
                    "std": [config.std * 255.0] * 3,
                },
                target_layer=model.target_layer,
                owner=run.requested_by,
                details=details,
            )
    except Exception as exc:  # recorded for the researcher; the worker goes on
        return _run_failed(run, exc)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
        weights=run.weights.name,
        weights_sha256=sha,
        classifier=classifier,
        test_accuracy=test_acc,
        test_items=n_test,
        seconds=float(time.monotonic() - started),
        num_items=len(items),
        message="finished",
    )
    run.refresh_from_db()
    return run


FACTORY = "labeling.training.small_cnn"


def _factory_matches(config) -> bool:
    """Whether :data:`FACTORY` (called with ``num_classes`` only) builds the trained network:
    the registered model (Grad-CAM, explanation jobs) needs the default width, embedding size
    and grey input."""
    from .training import TrainConfig

    default = TrainConfig()
    return (config.width, config.embedding_dim, config.grey) == (
        default.width,
        default.embedding_dim,
        default.grey,
    )


def run_arrays(run: TrainingRun) -> dict[str, np.ndarray]:
    """The run's stored arrays: ``item_ids`` (N,), ``pred_probs`` (N, K), ``embeddings`` (N, D).

    Raises:
        LabelingError: the run has not finished successfully.
    """
    if run.status != RunStatus.SUCCEEDED:
        raise LabelingError(f"training run {run.pk} is {run.status}, not finished")
    out = {}
    for field in ("item_ids", "pred_probs", "embeddings"):
        with getattr(run, field).open("rb") as fh:
            out[field] = np.load(io.BytesIO(fh.read()), allow_pickle=False)
    return out
