"""``python manage.py label_train DATASET``: cross-fit the small CNN on a dataset's labels, or
(``--architecture protopnet|cbm``) train an interpretable model to explain with its prototypes
or concepts.

Adapter over :func:`labeling.services.training_run_create` and ``training_run_execute``:
runs inline with a progress bar (or queues it with ``--background``) and prints the fold
and test accuracies, the registered model and where the arrays went.
"""

from __future__ import annotations

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from explanations.models import Dataset
from labeling.models import LabelVersion, RunStatus
from labeling.services import LabelingError, training_run_create, training_run_execute


class Command(BaseCommand):
    help = (
        "Train the small CNN on a dataset's labels with K-fold cross-fitting: out-of-sample "
        "probabilities for every training item (for the label-correction queue), a final "
        "model on all of them (safetensors, registered as a classifier) and its test accuracy.\n"
        "Example: python manage.py label_train fashion-mnist --folds 3 --epochs 3"
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="Dataset name.")
        parser.add_argument(
            "--labels", type=int, metavar="N", help="Label version number (default: the newest)."
        )
        parser.add_argument("--folds", type=int, help="K of the K-fold split (default 3).")
        parser.add_argument("--epochs", type=int, help="Epochs per model (default 3).")
        parser.add_argument("--seed", type=int, help="Seed of init, batch order, folds (0).")
        parser.add_argument("--train-split", default="train", help="Split to train on.")
        parser.add_argument("--test-split", default="test", help="Split to test on ('' none).")
        parser.add_argument(
            "--architecture",
            choices=["cnn", "protopnet", "cbm"],
            default="cnn",
            help="cnn: cross-fitted small CNN (label correction, Grad-CAM); protopnet: "
            "ProtoPNet, explained by its prototypes; cbm: concept-bottleneck model, explained "
            "by its concepts (default cnn).",
        )
        parser.add_argument(
            "--attributes",
            metavar="CSV",
            help="cbm: class -> concept table, header 'class,<concept>,...', one 0/1 row per "
            "class (default: the built-in Fashion-MNIST table).",
        )
        parser.add_argument(
            "--last-epochs", type=int, help="protopnet: last-layer epochs after the push (20)."
        )
        parser.add_argument("--owner", help="Username recorded as the requester.")
        parser.add_argument(
            "--background", action="store_true", help="Queue it on the cpu Celery queue."
        )

    def handle(self, *args, **opts):
        from explanations.management.commands._options import owner_get

        dataset = Dataset.objects.filter(name=opts["dataset"]).first()
        if dataset is None:
            raise CommandError(f"no dataset named {opts['dataset']!r}")
        version = None
        if opts["labels"]:
            version = LabelVersion.objects.filter(dataset=dataset, number=opts["labels"]).first()
            if version is None:
                raise CommandError(f"{dataset.name} has no label version {opts['labels']}")
        arch = opts["architecture"]
        names = {"folds": "folds", "epochs": "epochs", "seed": "seed"}
        if arch == "protopnet":
            names.update(epochs="joint_epochs", last_epochs="last_epochs")
        if arch != "cnn" and opts["folds"] is not None:
            raise CommandError("--folds applies to --architecture cnn only (cross-fitting)")
        if arch != "protopnet" and opts["last_epochs"] is not None:
            raise CommandError("--last-epochs applies to --architecture protopnet only")
        config = {key: opts[opt] for opt, key in names.items() if opts[opt] is not None}
        try:
            run = training_run_create(
                dataset=dataset,
                version=version,
                config=config,
                train_split=opts["train_split"],
                test_split=opts["test_split"],
                user=owner_get(opts["owner"]),
                enqueue=opts["background"],
                architecture=arch,
                attributes=opts["attributes"],
            )
        except (LabelingError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Training run #{run.pk} on {dataset.name} labels v{run.label_version.number}: "
            f"{run.num_items} items of split {run.train_split!r}"
        )
        if opts["background"]:
            self.stdout.write(f"  queued; progress at /label/runs/{run.pk}/")
            return
        started = time.monotonic()
        tty = sys.stdout.isatty()
        last = [0.0]

        def echo(done: int, total: int, message: str) -> None:
            now = time.monotonic()
            if not tty and now - last[0] < 10 and done < total:
                return
            last[0] = now
            width = 30
            filled = int(width * done / total) if total else 0
            line = (
                f"  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                f"{now - started:5.0f}s {message}"
            )
            self.stdout.write(("\r" + line) if tty else line, ending="" if tty else "\n")
            self.stdout.flush()

        run = training_run_execute(run_id=run.pk, echo=echo)
        if tty:
            self.stdout.write("")
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"training run #{run.pk} failed: {run.error}")
        folds = ", ".join(f"{a:.1%}" for a in run.fold_accuracy)
        self.stdout.write(
            self.style.SUCCESS(f"Run #{run.pk} finished in {run.seconds:.0f} s")
            + (f": held-out accuracy per fold {folds}" if folds else f": {arch}")
            + (
                f"; test accuracy {run.test_accuracy:.2%} on {run.test_items} items"
                if run.test_accuracy is not None
                else ""
            )
        )
        if run.classifier:
            self.stdout.write(f"  registered model: {run.classifier.name} (#{run.classifier.pk})")
        if arch == "cnn":
            self.stdout.write(f"  next: python manage.py curate {run.pk} --name 'First pass'")
        elif run.classifier:
            method = "prototypes" if arch == "protopnet" else "concepts"
            self.stdout.write(
                f"  next: python manage.py explain --model '{run.classifier.name}' "
                f"--dataset {dataset.name} --method {method} --split test --limit 300"
            )
