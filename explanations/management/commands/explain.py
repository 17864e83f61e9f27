"""``python manage.py explain``: predictions and saliency maps for a dataset, through Celery.

A thin adapter over :func:`explanations.services.explanation_job_create`; ``--wait`` then
polls the job's row (the worker writes its progress to the database) until it finishes.
"""

from __future__ import annotations

import time

from django.core.management.base import CommandError

from explanations.models import ClassifierModel, Dataset, ExplanationJob, JobStatus
from explanations.services import explainer_classes, explanation_job_create

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
            "--model", required=True, metavar="NAME", help="Name of a registered model (required)."
        )
        parser.add_argument(
            "--dataset", required=True, metavar="NAME", help="Name of a dataset (required)."
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
        model = _by_name(ClassifierModel, opts["model"], "model")
        dataset = _by_name(Dataset, opts["dataset"], "dataset")
        top_k = (
            opts["top_k"] if opts["top_k"] is not None else min(DEFAULT_TOP_K, model.num_classes)
        )
        broker_folders_ensure()
        try:
            job = explanation_job_create(
                model=model, dataset=dataset, method=opts["method"], top_k=top_k
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
        while True:
            job.refresh_from_db()
            state = (job.status, job.done_items, job.failed_items)
            if state != last:
                self.stdout.write(
                    f"  job #{job.pk}: {job.get_status_display().lower()}, "
                    f"{job.done_items}/{job.total_items} items done, {job.failed_items} failed"
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


def _by_name(model_cls, name: str, what: str):
    found = model_cls.objects.filter(name=name).first()
    if found is None:
        known = list(model_cls.objects.order_by("name").values_list("name", flat=True)[:20])
        raise CommandError(f"no {what} named {name!r}; known: {known}")
    return found
