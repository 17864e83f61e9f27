"""``python manage.py study_create spec.yaml``: create a study from a spec file.

A thin adapter over :func:`studies.spec.spec_file_load` and :func:`studies.design.study_create`:
every fault in the spec is printed with its field path; the study is created as a draft unless
``--launch``; ``--print-schema`` prints the published JSON Schema.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from explanations.management.commands._options import ExampleCommand
from studies.design import StudyDesignError, study_create
from studies.spec import SpecError, spec_file_load, spec_schema_json

EPILOG = """\
The spec (YAML or JSON) names the model and dataset, the explanation method of each
condition, the task types and their wording, trial counts (model_correct / model_incorrect
per participant), practice trials, attention checks, order, time limit, questionnaires,
recruitment (public, prolific, mturk, classroom with an optional roster) and completion.
The schema: docs/study-spec.schema.json, /api/study-spec.schema.json, or --print-schema.
Examples: docs/specs/.

Examples:
  python manage.py study_create docs/specs/hive-gradcam.yaml --owner researcher
  python manage.py study_create my-study.json --owner alice --launch
  python manage.py study_create --print-schema > study-spec.schema.json
"""


class Command(ExampleCommand):
    help = "Create a study (a draft, or launched with --launch) from a YAML/JSON spec file."
    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument("spec", nargs="?", help="the spec file (.yaml, .yml or .json)")
        parser.add_argument("--owner", help="username of the researcher who owns the study")
        parser.add_argument(
            "--launch", action="store_true", help="open it to participants now (freezes the spec)"
        )
        parser.add_argument(
            "--print-schema", action="store_true", help="print the spec's JSON Schema and exit"
        )

    def handle(self, *args, **opts):
        if opts["print_schema"]:
            self.stdout.write(spec_schema_json(), ending="")
            return
        if not opts["spec"]:
            raise CommandError("give a spec file (or --print-schema)")
        if not opts["owner"]:
            raise CommandError("--owner: the username of the researcher who owns the study")
        User = get_user_model()
        owner = User.objects.filter(username=opts["owner"]).first()
        if owner is None:
            raise CommandError(f"--owner: no user named {opts['owner']!r}")
        try:
            spec = spec_file_load(opts["spec"])
            study = study_create(spec=spec, owner=owner, open_now=opts["launch"])
        except SpecError as exc:
            raise CommandError(str(exc)) from None
        except StudyDesignError as exc:
            raise CommandError(f"cannot build the study: {exc}") from None
        arms = study.spec["resolved"]["arms"]
        self.stdout.write(
            f"created study {study.slug!r} ({study.get_status_display().lower()}): "
            f"{study.trials.count()} trials in {len(arms)} arm(s) {arms}"
        )
        self.stdout.write(f"  start link: /s/{study.slug}/")
        if study.join_code:
            self.stdout.write(f"  classroom join code: {study.join_code} (at /j/)")
