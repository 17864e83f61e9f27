"""``python manage.py dataset_import``: import a labelled image dataset (folder, manifest, zip).

A thin adapter over :mod:`explanations.services.datasets`: inline it reads the source with
``dataset_listing_read`` and calls ``dataset_import_listing`` once, printing progress and a
final report that names every skipped file and why; with ``--background`` it calls
``dataset_import_job_create`` and prints the job id.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError
from django.db import transaction

from explanations.importers import ImportFormatError
from explanations.models import Dataset
from explanations.services import (
    ModelRegistrationError,
    class_names_load,
    dataset_import_job_create,
    dataset_import_listing,
    dataset_listing_read,
)

from ._options import ExampleCommand, broker_folders_ensure, owner_get

PROGRESS_EVERY = 10

EPILOG = """\
Layouts:
  --folder   ImageFolder: DIR/<class name>/<image>; the classes are the sorted folder
             names (torchvision's convention) unless --classes gives the label space.
  --manifest CSV or JSON rows with columns file (relative to the manifest) and label;
             optional split, a box x0,y0,x1,y1 with box_units px (default) or norm
             (fractions of width and height), and mask (a binary image of the item's size,
             nonzero = inside).
  --zip      an ImageFolder tree, or a manifest.csv/manifest.json at its top level (or in
             its single top folder); read in memory, never extracted; '..' or absolute
             member names and archives that unpack above STUDYPLATFORM_MAX_ZIP_BYTES are
             refused.

Every image is decoded and stored as an RGB PNG. A file that cannot be used (undecodable,
missing, label outside the label space, box or mask that does not fit) is skipped with its
reason and does not stop the others; files already in the dataset (same name or same
content) are skipped as duplicates, so running the same import twice is safe. The command
exits non-zero only when the source itself cannot be read.

  --idx      MNIST-style IDX files (LeCun et al.), as Fashion-MNIST ships them (Debian
             package dataset-fashion-mnist); train-* becomes split "train", t10k-* "test".

Examples:
  python manage.py dataset_import --name fashion-mnist --idx /usr/share/datasets/fashion-mnist
  python manage.py dataset_import --name "Birds val" --folder /data/birds/val
  python manage.py dataset_import --name "Birds val" --manifest /data/birds/val.csv \\
      --classes birds.txt --description "CUB validation split" --owner alice
  python manage.py dataset_import --name "Birds val" --zip birds.zip --background
"""


class Command(ExampleCommand):
    help = (
        "Import labelled images into a dataset (created when it does not exist) from an\n"
        "ImageFolder directory, a CSV/JSON manifest (with optional boxes and masks) or a zip\n"
        "archive. Inline by default, with a progress line every 10 files and a final report\n"
        "listing every skipped file and why; --background queues an import job instead.\n"
        'Example: python manage.py dataset_import --name "Birds val" --folder /data/birds/val'
    )
    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument(
            "--name",
            required=True,
            help="Name of the dataset to import into (required); created if it does not exist.",
        )
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--folder", metavar="DIR", help="An ImageFolder directory.")
        source.add_argument(
            "--manifest", metavar="FILE", help="A .csv or .json manifest (see Layouts)."
        )
        source.add_argument(
            "--zip", metavar="FILE", help="A .zip archive (ImageFolder tree or manifest inside)."
        )
        source.add_argument(
            "--idx",
            metavar="DIR",
            help=(
                "A directory of MNIST-style IDX files (train-/t10k-images-idx3-ubyte[.gz] and "
                "the matching -labels-idx1-ubyte), e.g. /usr/share/datasets/fashion-mnist."
            ),
        )
        parser.add_argument(
            "--limit",
            type=int,
            metavar="N",
            help="--idx only: import at most the first N images of each split (for a trial).",
        )
        parser.add_argument(
            "--classes",
            metavar="FILE",
            help=(
                "The dataset's label space: a .txt file (one class name per line) or a .json "
                "list. Sets it on a dataset that has none; must equal it on a dataset that "
                "has one. Without it, a new dataset takes the labels found in the source."
            ),
        )
        parser.add_argument(
            "--description",
            metavar="TEXT",
            help="Description of the dataset (set on creation; replaces the current one).",
        )
        parser.add_argument(
            "--owner",
            metavar="USERNAME",
            help="Username of the researcher who owns a newly created dataset.",
        )
        parser.add_argument(
            "--background",
            action="store_true",
            help=(
                "Queue the import as a background job (Celery queue cpu) and print its id "
                "instead of importing now; progress is shown at /r/datasets/<id>/. Needs a "
                "worker: celery -A studyplatform worker -Q cpu."
            ),
        )

    def handle(self, *args, **opts):
        if opts["idx"]:
            self._idx(opts)
            return
        source_format, path = _source(opts)
        dataset = Dataset.objects.filter(name=opts["name"]).first()
        class_names = _label_space(opts["classes"], dataset)
        owner = owner_get(opts["owner"])
        if opts["background"]:
            self._queue(opts, dataset, class_names, owner, source_format, path)
            return
        try:
            listing = dataset_listing_read(source_format, path, class_names=class_names)
        except (ImportFormatError, OSError) as exc:
            raise CommandError(f"cannot read {source_format} {path}: {exc}") from None
        dataset = _dataset_ensure(opts, dataset, class_names, owner)
        total = len(listing.images)
        self.stdout.write(
            f"Importing {total} files from {source_format} {path} into dataset "
            f"{dataset.name!r} (#{dataset.pk})"
        )

        def progress(n: int) -> None:
            if n % PROGRESS_EVERY == 0 or n == total:
                self.stdout.write(f"  {n}/{total} files")

        report = dataset_import_listing(
            dataset=dataset,
            listing=listing,
            source=f"{source_format}:{path.name}",
            progress=progress,
        )
        skipped = [
            (name, "duplicate: the same name or the same content is already in the dataset")
            for name in report.duplicates
        ] + [(name, reason) for name, reason in report.failed]
        summary = (
            f"Dataset {dataset.name!r} (#{dataset.pk}): {total} files, "
            f"{len(report.imported)} imported, {len(report.duplicates)} duplicates, "
            f"{len(report.failed)} failed; the dataset now has {dataset.items.count()} items"
        )
        self.stdout.write(self.style.SUCCESS(summary) if not report.failed else summary)
        if skipped:
            self.stdout.write(f"Skipped files ({len(skipped)}):")
            for name, reason in skipped:
                line = reason if reason.startswith(f"{name}: ") else f"{name}: {reason}"
                self.stdout.write(self.style.WARNING(f"  {line}"))

    def _idx(self, opts) -> None:
        from labeling.idx import IdxError, idx_dataset_read
        from labeling.services import LabelingError, dataset_import_idx

        if opts["background"]:
            raise CommandError("--idx imports inline (about a minute for 70,000 images)")
        if opts["limit"] is not None and opts["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        path = Path(opts["idx"]).expanduser()
        try:
            pairs = idx_dataset_read(path)  # read and check every file before creating anything
        except (IdxError, OSError) as exc:
            raise CommandError(f"cannot read IDX files in {path}: {exc}") from None
        dataset = Dataset.objects.filter(name=opts["name"]).first()
        class_names = _label_space(opts["classes"], dataset)
        dataset = _dataset_ensure(opts, dataset, class_names, owner_get(opts["owner"]))
        self.stdout.write(f"Importing IDX files from {path} into dataset {dataset.name!r}")
        last = [0]

        def progress(done: int, total: int) -> None:
            if done - last[0] >= 10000 or done == total:
                last[0] = done
                self.stdout.write(f"  {done}/{total} images")

        try:
            report = dataset_import_idx(
                dataset=dataset, directory=path, limit=opts["limit"], progress=progress, pairs=pairs
            )
        except (IdxError, LabelingError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Dataset {dataset.name!r} (#{dataset.pk}): {len(report.imported)} imported, "
                f"{len(report.duplicates)} duplicates skipped; the dataset now has "
                f"{dataset.items.count()} items in {len(dataset.class_names)} classes"
            )
        )

    def _queue(self, opts, dataset, class_names, owner, source_format, path) -> None:
        broker_folders_ensure()
        try:
            with transaction.atomic():
                dataset = _dataset_ensure(opts, dataset, class_names, owner)
                job = dataset_import_job_create(
                    dataset=dataset, source_format=source_format, source_path=path
                )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(f"Queued import job #{job.pk}")
            + f" into dataset {dataset.name!r} (#{dataset.pk}) from {source_format} "
            f"{job.source_path}"
        )
        self.stdout.write(
            f"  job id: {job.pk}; progress at /r/datasets/{dataset.pk}/ (a Celery worker "
            f"must consume queue cpu: celery -A studyplatform worker -Q cpu)"
        )


def _source(opts) -> tuple[str, Path]:
    for key in ("folder", "manifest", "zip"):
        if opts[key]:
            return key, Path(opts[key]).expanduser()
    raise CommandError("give one of --folder, --manifest or --zip")


def _label_space(classes: str | None, dataset: Dataset | None) -> list[str] | None:
    """The label space to read with: --classes, else the existing dataset's, else None."""
    existing = list(dataset.class_names) if dataset is not None else []
    if not classes:
        return existing or None
    try:
        names = class_names_load(classes)
    except ModelRegistrationError as exc:
        raise CommandError(f"--classes: {exc}") from None
    if existing and names != existing:
        raise CommandError(
            f"--classes: dataset {dataset.name!r} already has the label space {existing[:10]}"
            f"{' ...' if len(existing) > 10 else ''} ({len(existing)} classes); the file gives "
            f"{len(names)} different or reordered names"
        )
    return names


def _dataset_ensure(opts, dataset: Dataset | None, class_names, owner) -> Dataset:
    if dataset is None:
        dataset, _ = Dataset.objects.get_or_create(
            name=opts["name"],
            defaults={
                "description": opts["description"] or "",
                "class_names": list(class_names or []),
                "owner": owner,
            },
        )
        return dataset
    fields = []
    if class_names and not dataset.class_names:
        dataset.class_names = list(class_names)
        fields.append("class_names")
    if opts["description"] is not None:
        dataset.description = opts["description"]
        fields.append("description")
    if fields:
        dataset.save(update_fields=fields)
    return dataset
