"""``python manage.py explain``: predictions and saliency maps for a dataset, through Celery.

A thin adapter over :func:`explanations.services.explanation_job_create`; ``--wait`` then
polls the job's row (the worker writes its progress to the database) until it finishes.
"""

from __future__ import annotations

import json
import time

from django.core.management.base import CommandError

from explanations.models import ClassifierModel, Dataset, ExplanationJob, JobStatus
from explanations.services import (
    explainer_classes,
    explanation_job_create,
    explanation_job_retry_failed,
)

from ._options import ExampleCommand, broker_folders_ensure

DEFAULT_TOP_K = 4

EPILOG = """\
The job predicts every item of the dataset (top-5 classes) and computes one saliency map
for each of the top-k predicted classes, plus the true class when it is outside them (the
HIVE distinction task shows it when the model is wrong). It is sent to the Celery queue gpu
once created; without --wait the command returns at once and the job runs when a worker
takes it. Progress is shown at /r/jobs/<id>/ and /api/jobs/<id>/.

--wait needs a worker consuming queue gpu, for example:
  celery -A studyplatform worker -Q gpu --concurrency 1 --prefetch-multiplier 1
Without one, --wait keeps printing "pending" until --timeout (if given) runs out.

Examples:
  python manage.py explain --model "Birds ResNet" --dataset "Birds val"
  python manage.py explain --model "Birds ResNet" --dataset "Birds val" \\
      --method gradcam --top-k 4 --wait --timeout 3600
"""


class Command(ExampleCommand):
    help = (
        "Create an explanation job (predictions + saliency maps of the top-k classes) for\n"
        "every item of a dataset with a registered model, and enqueue it through Celery;\n"
        "with --wait, print its progress until it finishes (needs a Celery worker on queue\n"
        "gpu). Exits non-zero when the job cannot be created or, with --wait, fails.\n"
        'Example: python manage.py explain --model "Birds ResNet" --dataset "Birds val" --wait'
    )
    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument(
            "--model", metavar="NAME", help="Name of a registered model (required unless --retry)."
        )
        parser.add_argument(
            "--dataset", metavar="NAME", help="Name of a dataset (required unless --retry)."
        )
        parser.add_argument(
            "--method",
            default="gradcam",
            metavar="KEY",
            help=(
                "Explanation method, a key of STUDYPLATFORM_EXPLAINERS (default gradcam; "
                "enabled: " + ", ".join(sorted(explainer_classes())) + ")."
            ),
        )
        parser.add_argument(
            "--top-k",
            type=int,
            metavar="K",
            help=(
                f"Explain the K most probable classes of each item (default {DEFAULT_TOP_K}, "
                "or the number of classes when the model has fewer); 1..number of classes."
            ),
        )
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=(
                "A method parameter (repeatable; VALUE is read as JSON, else as text), e.g. "
                "--param n_samples=50 --param noise_level=0.15. Default: the paper's values."
            ),
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=16,
            metavar="N",
            help="Items per worker task; the job is split into batches (default 16).",
        )
        parser.add_argument(
            "--split",
            metavar="NAME",
            help="Only items of this split (e.g. test); default: every item.",
        )
        parser.add_argument(
            "--limit",
            type=int,
            metavar="N",
            help="Only the first N items (by import order, after --split): the same N items "
            "for every model, so conditions can be compared on the same items.",
        )
        parser.add_argument(
            "--evaluate",
            action="store_true",
            help="Also compute deletion and insertion AUC (Petsiuk et al. 2018) for every map.",
        )
        parser.add_argument(
            "--retry",
            type=int,
            metavar="JOB",
            help="Retry the failed items of job JOB instead of creating a job.",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help=(
                "Poll the job and print its progress until it finishes; needs a running "
                "Celery worker on queue gpu. Exits non-zero if the job fails."
            ),
        )
        parser.add_argument(
            "--poll",
            type=float,
            default=2.0,
            metavar="SECONDS",
            help="With --wait: seconds between two looks at the job (default 2).",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help=(
                "With --wait: give up waiting after this many seconds (the job keeps "
                "running); default 0 = wait as long as it takes."
            ),
        )

    def handle(self, *args, **opts):
        if opts["retry"] is not None:
            job = ExplanationJob.objects.filter(pk=opts["retry"]).first()
            if job is None:
                raise CommandError(f"--retry: no job #{opts['retry']}")
            broker_folders_ensure()
            n = explanation_job_retry_failed(job=job)
            self.stdout.write(f"job #{job.pk}: {n} failed item(s) queued again")
            if opts["wait"] and n:
                self._wait(job, poll=max(0.05, opts["poll"]), timeout=opts["timeout"])
            return
        if not opts["model"] or not opts["dataset"]:
            raise CommandError("--model and --dataset are required (or --retry JOB)")
        model = _by_name(ClassifierModel, opts["model"], "model")
        dataset = _by_name(Dataset, opts["dataset"], "dataset")
        top_k = (
            opts["top_k"] if opts["top_k"] is not None else min(DEFAULT_TOP_K, model.num_classes)
        )
        broker_folders_ensure()
        try:
            job = explanation_job_create(
                model=model,
                dataset=dataset,
                method=opts["method"],
                top_k=top_k,
                params=_params(opts["param"]),
                batch_size=opts["batch_size"],
                evaluate=opts["evaluate"],
                split=opts["split"],
                limit=opts["limit"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(f"Created explanation job #{job.pk}")
            + f": {job.method} of {model.name!r} on {dataset.name!r}, top-{job.top_k}, "
            f"{job.total_items} items; queued on Celery queue gpu (progress at /r/jobs/{job.pk}/)"
        )
        if opts["wait"]:
            self._wait(job, poll=max(0.05, opts["poll"]), timeout=opts["timeout"])

    def _wait(self, job: ExplanationJob, *, poll: float, timeout: float) -> None:
        started = time.monotonic()
        last = None
        hinted = False
        while True:
            job.refresh_from_db()
            if not hinted and job.status == JobStatus.PENDING and time.monotonic() - started > 30:
                hinted = True
                self.stdout.write(
                    self.style.WARNING(
                        f"  no worker has picked job #{job.pk} up after 30 s: is a Celery worker "
                        "consuming queue gpu? Without a GPU: .venv/bin/celery -A studyplatform "
                        "worker -Q gpu,cpu --concurrency 1"
                    )
                )
            state = (job.status, job.done_items, job.failed_items)
            if state != last:
                self.stdout.write(
                    f"  {_bar(job)} job #{job.pk}: {job.get_status_display().lower()}, "
                    f"{job.done_items}/{job.total_items} items done, {job.failed_items} failed"
                    + _rate(job)
                )
                last = state
            if job.is_finished:
                break
            if timeout and time.monotonic() - started >= timeout:
                raise CommandError(
                    f"job #{job.pk} is still {job.status} after {timeout:g} s (is a worker "
                    f"consuming queue gpu?); it continues in the background: /r/jobs/{job.pk}/"
                )
            self._sleep(poll)
        if job.status == JobStatus.FAILED:
            raise CommandError(f"job #{job.pk} failed: {job.error}")
        self.stdout.write(
            self.style.SUCCESS(f"Job #{job.pk} succeeded")
            + f": {job.done_items} items done, {job.failed_items} failed"
        )
        if job.error:  # the items that failed, one per line
            for line in job.error.splitlines():
                self.stdout.write(self.style.WARNING(f"  {line}"))

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _bar(job: ExplanationJob, width: int = 20) -> str:
    filled = int(round(width * job.progress))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _rate(job: ExplanationJob) -> str:
    rate, eta = job.rate, job.eta_seconds
    if rate is None:
        return ""
    return f", {rate:.2f} items/s" + (f", ETA {eta:.0f} s" if eta else "")


def _params(pairs: list[str]) -> dict:
    """``["n_samples=50", "layer=conv"]`` -> ``{"n_samples": 50, "layer": "conv"}``."""
    out = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"--param {pair!r}: use NAME=VALUE")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def _by_name(model_cls, name: str, what: str):
    found = model_cls.objects.filter(name=name).first()
    if found is None:
        known = list(model_cls.objects.order_by("name").values_list("name", flat=True)[:20])
        raise CommandError(f"no {what} named {name!r}; known: {known}")
    return found
