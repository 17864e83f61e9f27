"""``python manage.py curate RUN``: build a label-correction queue from a finished run.

Adapter over :func:`labeling.curation.curation_project_create` and
``curation_project_build`` (inline); prints the flagged counts, the largest class-pair
confusions and the queue's address.
"""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from labeling.curation import (
    FILTER_METHODS,
    curation_project_build,
    curation_project_create,
)
from labeling.models import RunStatus, Scope, Score, TrainingRun
from labeling.services import LabelingError


class Command(BaseCommand):
    help = (
        "Build a curation queue from a training run: items ranked by how likely their label is "
        "wrong (confident learning), with neighbours, near-duplicates and a 2-D projection.\n"
        "Example: python manage.py curate 1 --name 'First pass' --owner researcher "
        "--curators alice,bob --overlap 2"
    )

    def add_arguments(self, parser):
        parser.add_argument("run", type=int, help="Training run id (see label_train).")
        parser.add_argument("--name", default="", help="Project name.")
        parser.add_argument("--owner", required=True, help="Username of the owning researcher.")
        parser.add_argument("--curators", default="", help="Comma-separated usernames.")
        parser.add_argument(
            "--create-curators",
            action="store_true",
            help="Create curator accounts that do not exist yet (not staff) and print their "
            "new passwords; they sign in at /label/login/.",
        )
        parser.add_argument("--overlap", type=int, default=1, help="Curators per item.")
        parser.add_argument("--score", choices=Score.values, default=Score.SELF_CONFIDENCE)
        parser.add_argument("--method", choices=FILTER_METHODS, default=FILTER_METHODS[0])
        parser.add_argument("--scope", choices=Scope.values, default=Scope.FLAGGED)

    def handle(self, *args, **opts):
        User = get_user_model()
        run = TrainingRun.objects.filter(pk=opts["run"]).first()
        if run is None:
            raise CommandError(f"no training run #{opts['run']}")
        try:
            owner = User.objects.get(username=opts["owner"])
        except User.DoesNotExist:
            raise CommandError(f"--owner: no user named {opts['owner']!r}") from None
        names = [n.strip() for n in opts["curators"].split(",") if n.strip()]
        curators = list(User.objects.filter(username__in=names))
        missing = sorted(set(names) - {u.username for u in curators})
        if missing and not opts["create_curators"]:
            raise CommandError(
                f"--curators: no user(s) named {missing} (add --create-curators to create them)"
            )
        for username in missing:
            password = secrets.token_urlsafe(9)
            curators.append(User.objects.create_user(username, password=password))
            self.stdout.write(f"  created curator {username!r}, password {password!r}")
        try:
            project = curation_project_create(
                run=run,
                name=opts["name"],
                owner=owner,
                score=opts["score"],
                method=opts["method"],
                scope=opts["scope"],
                overlap=opts["overlap"],
                curators=curators,
                enqueue=False,
            )
        except LabelingError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Building curation project #{project.pk} {project.name!r} ...")
        project = curation_project_build(project_id=project.pk)
        if project.status != RunStatus.SUCCEEDED:
            raise CommandError(f"project #{project.pk} failed: {project.error}")
        s = project.summary
        self.stdout.write(
            self.style.SUCCESS(
                f"Project #{project.pk}: {s['flagged']} of {s['items']} items flagged, "
                f"{s['entries']} in the queue, {s['near_duplicate_pairs']} near-duplicate pairs"
            )
        )
        names = s["class_names"]
        for pair in s["pairs"][:5]:
            self.stdout.write(
                f"  {pair['count']:5d} given {names[pair['given']]!r} look like "
                f"{names[pair['suggested']]!r}" + ("  (systematic)" if pair["systematic"] else "")
            )
        self.stdout.write(f"  overview: /label/projects/{project.pk}/")
        self.stdout.write(f"  queue:    /label/projects/{project.pk}/queue/")
