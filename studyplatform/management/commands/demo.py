"""``python manage.py demo``: a real HIVE-style study end to end on the embedded default.

Registers EfficientNet-Lite0 and the bundled photos, sends a Grad-CAM job through Celery to a
real worker process, builds the study, runs simulated participants through the real pages
over HTTP, prints the results table and (unless ``--no-serve``) keeps serving.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from analysis.results import results_text_table, study_results
from explanations.demo import demo_dataset_import, demo_model_register
from explanations.models import ExplanationJob
from explanations.services import explanation_job_create
from studies.bots import BOT_POLICIES, HttpTransport, bot_run
from studies.models import Study, StudyStatus
from studies.services import study_close, study_create_hive
from studyplatform.serving import server_start

JOB_TIMEOUT_S = 900
DEMO_TITLE = "HIVE demo: Grad-CAM on EfficientNet-Lite0"


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # so SIGTERM also stops the worker in the finally block


class Command(BaseCommand):
    help = "Run a real HIVE-style study end to end (model, photos, Celery job, bots, results)."

    def add_arguments(self, parser):
        parser.add_argument("--no-serve", action="store_true", help="Exit after printing results.")
        parser.add_argument(
            "--port", type=int, default=8000, help="Port to serve on (default 8000)."
        )
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--participants", type=int, default=12, help="Simulated participants.")
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Do not start a Celery worker (one is already consuming the queues).",
        )

    def handle(self, *args, **opts):
        signal.signal(signal.SIGTERM, _interrupt)
        t0 = time.perf_counter()
        out = self.stdout
        out.write(self.style.MIGRATE_HEADING("1/6 Database"))
        call_command("migrate", verbosity=0, interactive=False)
        password = self._researcher()

        out.write(self.style.MIGRATE_HEADING("2/6 Model and photos"))
        model = demo_model_register()
        out.write(
            f"  model: {model.name} ({model.architecture}, {model.num_classes} classes, "
            f"weights sha256 {model.weights_sha256[:12]}, target layer {model.target_layer})"
        )
        dataset, report = demo_dataset_import()
        out.write(
            f"  dataset: {dataset.name}: {dataset.items.count()} photos "
            f"({len(report.imported)} imported now, {len(report.duplicates)} already there, "
            f"{len(report.failed)} failed)"
        )
        for name, reason in report.failed:
            out.write(self.style.WARNING(f"    {name}: {reason}"))

        out.write(self.style.MIGRATE_HEADING("3/6 Predictions and Grad-CAM through Celery"))
        worker = None if opts["no_worker"] else self._worker_start()
        try:
            job = explanation_job_create(model=model, dataset=dataset, method="gradcam", top_k=4)
            job = self._job_wait(job, worker)
            out.write(
                f"  job #{job.pk}: {job.status}, {job.done_items}/{job.total_items} items, "
                f"{job.failed_items} failed"
            )
            if job.error:
                out.write(self.style.WARNING("  " + job.error.replace("\n", "\n  ")))
            if job.status != "succeeded":
                raise CommandError(f"explanation job #{job.pk} failed: {job.error}")

            out.write(self.style.MIGRATE_HEADING("4/6 HIVE study"))
            owner = get_user_model().objects.get(username="researcher")
            earlier = Study.objects.filter(title__startswith=DEMO_TITLE)
            runs = earlier.count()
            for old in earlier.filter(status=StudyStatus.OPEN):
                study_close(study=old)
            study = study_create_hive(
                title=DEMO_TITLE if not runs else f"{DEMO_TITLE} (run {runs + 1})",
                owner=owner,
                model=model,
                dataset=dataset,
                method="gradcam",
                seed=int(time.time()),
            )
            n_items = len(study.spec["resolved"]["main_items"])
            out.write(
                f"  study '{study.slug}': {study.trials.count()} trials "
                f"({n_items} agreement + {n_items} distinction); each participant does one task"
            )

            out.write(self.style.MIGRATE_HEADING("5/6 Simulated participants over HTTP"))
            # Participants must never see Django's debug pages (URL lists, tracebacks); errors
            # still go to the log. Static files are served by the demo server regardless.
            settings.DEBUG = False
            try:
                server, _thread = server_start(
                    opts["host"], 0 if opts["no_serve"] else opts["port"]
                )
            except OSError as exc:
                raise CommandError(
                    f"cannot listen on {opts['host']}:{opts['port']}: {exc}; pass --port"
                ) from None
            base = f"http://{opts['host']}:{server.server_port}"
            start = f"/s/{study.slug}/"
            for i in range(opts["participants"]):
                # pairs of bots share a policy, so both tasks (assigned alternately) get each
                policy = BOT_POLICIES[(i // 2) % len(BOT_POLICIES)]
                result = bot_run(
                    transport=HttpTransport(base),
                    start_path=f"{start}?SIMULATION_KEY={study.simulation_key}&BOT_POLICY={policy}",
                    policy=policy,
                    seed=i,
                )
                if result.completion_code != study.completion_code:
                    raise CommandError("a bot finished with the wrong completion code")
            out.write(
                f"  {opts['participants']} simulated participants finished "
                f"({', '.join(BOT_POLICIES)} policies)"
            )

            out.write(self.style.MIGRATE_HEADING("6/6 Results (simulated participants)"))
            out.write(results_text_table(study_results(study)))
            out.write(f"\nDone in {time.perf_counter() - t0:.1f} s.")
            out.write(f"  Participant link: {base}{start}")
            out.write(f"  Results page:     {base}/r/studies/{study.slug}/results/")
            out.write(f"  Explanation job:  {base}/r/jobs/{job.pk}/")
            out.write(
                f"  Researcher login: {base}/admin/login/?next=/r/  user 'researcher', "
                f"password '{password}'"
            )
            if opts["no_serve"]:
                server.shutdown()
                out.write(
                    "  (--no-serve: the server has stopped; run without it to browse these pages)"
                )
                return
            out.write(self.style.SUCCESS("Serving; press Ctrl-C to stop."))
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                server.shutdown()
        finally:
            if worker is not None:
                self._worker_stop(worker)

    def _researcher(self) -> str:
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
        user, _ = get_user_model().objects.get_or_create(
            username="researcher", defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password

    def _worker_start(self) -> subprocess.Popen:
        log_dir = Path(settings.VAR_DIR) / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        for folder in (
            settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", ""),
            settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("control_folder", ""),
        ):
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
        log = open(log_dir / "worker.log", "ab")  # noqa: SIM115 - closed with the process
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "studyplatform",
            "worker",
            "-Q",
            "gpu,cpu",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"demo-{os.getpid()}@%h",
        ]
        env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE=os.environ.get(
                "DJANGO_SETTINGS_MODULE", "studyplatform.settings.base"
            ),
        )
        # Own process group: stopping the demo stops the worker and its pool children.
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=settings.BASE_DIR,
            start_new_session=True,
        )
        proc.log_path = log_dir / "worker.log"  # type: ignore[attr-defined]
        self.stdout.write(f"  started Celery worker pid {proc.pid} (log: {proc.log_path})")
        return proc

    def _worker_stop(self, proc: subprocess.Popen) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _job_wait(self, job: ExplanationJob, worker: subprocess.Popen | None) -> ExplanationJob:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        width, last = 30, None
        tty = self.stdout.isatty()
        while True:
            job.refresh_from_db()
            done = job.done_items + job.failed_items
            if (done, job.status) != last:
                last = (done, job.status)
                filled = int(width * done / max(job.total_items, 1))
                line = (
                    f"  [{'#' * filled}{'.' * (width - filled)}] {done}/{job.total_items} "
                    f"items ({job.status})"
                )
                self.stdout.write(("\r" + line) if tty else line, ending="" if tty else "\n")
                self.stdout.flush()
            if job.is_finished:
                if tty:
                    self.stdout.write("")
                return job
            if worker is not None and worker.poll() is not None:
                tail = Path(worker.log_path).read_text(errors="replace")[-2000:]
                raise CommandError(
                    f"the Celery worker exited with code {worker.returncode}:\n{tail}"
                )
            if time.monotonic() > deadline:
                raise CommandError(f"job #{job.pk} did not finish in {JOB_TIMEOUT_S} s")
            time.sleep(0.2)
