"""``python manage.py analyze <slug>``: print a study's full analysis (the tables of the
results page and the HTML report), optionally write the self-contained HTML report."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import CommandError

from analysis.report import report_text
from analysis.results import SIMULATED_FILTERS, study_report, study_report_html
from explanations.management.commands._options import ExampleCommand
from studies.models import Study

EPILOG = """\
Examples:
  python manage.py analyze grad-cam-vs-no-explanation
  python manage.py analyze my-study --simulated exclude --html report.html
  python manage.py analyze my-big-study --mixed
"""


class Command(ExampleCommand):
    help = "Print a study's analysis: accuracy, tests, models, power, response times."
    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the study's slug (as in its URLs)")
        parser.add_argument(
            "--simulated",
            choices=SIMULATED_FILTERS,
            default="include",
            help="include (default), exclude or only simulated participants",
        )
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--mixed",
            action="store_true",
            help="fit the mixed-effects model on every task, however large (slow)",
        )
        group.add_argument("--no-mixed", action="store_true", help="skip the mixed model")
        parser.add_argument("--html", default="", help="also write the HTML report here")

    def handle(self, *args, **opts):
        try:
            study = Study.objects.get(slug=opts["slug"])
        except Study.DoesNotExist:
            raise CommandError(f"no study with slug {opts['slug']!r}") from None
        mixed = True if opts["mixed"] else False if opts["no_mixed"] else "auto"

        def progress(done: int, total: int, section: str) -> None:
            bar = "#" * done + "." * (total - done)
            sys.stderr.write(f"\r[{bar}] {done}/{total} {section:<20}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

        report = study_report(study, simulated=opts["simulated"], mixed=mixed, progress=progress)
        self.stdout.write(report_text(report))
        if opts["html"]:
            path = Path(opts["html"])
            try:
                path.write_text(
                    study_report_html(study, simulated=opts["simulated"], mixed=mixed),
                    encoding="utf-8",
                )
            except OSError as exc:
                raise CommandError(f"cannot write {path}: {exc}") from None
            self.stdout.write(f"\nHTML report written to {path}")
