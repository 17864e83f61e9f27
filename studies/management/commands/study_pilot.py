"""``python manage.py study_pilot <slug>``: walk scripted bots through a study as the
recruitment mode's participants arrive (public link, Prolific, MTurk, classroom + roster), and
print what each saw: the pages in order, the answers given and the completion code.

Bots go through the real URLconf, middleware, views and templates (Django's test client, or
a running server with ``--base-url``), are marked simulated with the study's secret, check
that no page shows a server-only field and that an invalid answer is refused.
"""

from __future__ import annotations

import json

from django.core.management.base import CommandError
from django.test import Client

from explanations.management.commands._options import ExampleCommand
from studies.bots import BOT_POLICIES, BotError, DjangoClientTransport, HttpTransport, bot_run
from studies.models import Study
from studies.researcher_views import study_progress

EPILOG = """\
Examples:
  python manage.py study_pilot grad-cam-vs-no-explanation --bots 4
  python manage.py study_pilot my-class-study --bots 2 --record pilot.json
  python manage.py study_pilot my-study --base-url http://127.0.0.1:8000
"""


def start_for(study: Study, i: int, policy: str) -> tuple[str, dict[str, str]]:
    """The start path a participant of the study's recruitment mode arrives on, and the text
    they type (roster name)."""
    sim = f"SIMULATION_KEY={study.simulation_key}&BOT_POLICY={policy}"
    mode = study.recruitment.get("mode", "public")
    if mode == "prolific":
        return (
            f"/s/{study.slug}/?PROLIFIC_PID=pilot{i:04d}&STUDY_ID=pilot&SESSION_ID=s{i}&{sim}",
            {},
        )
    if mode == "mturk":
        return (
            f"/s/{study.slug}/?assignmentId=PILOTA{i}&workerId=PILOTW{i}&hitId=PILOTH"
            f"&turkSubmitTo=https://workersandbox.mturk.com&{sim}",
            {},
        )
    if mode == "classroom":
        roster = study.recruitment.get("roster") or []
        name = roster[i % len(roster)] if roster else ""
        return f"/j/{study.join_code}/?{sim}", ({"name": name} if name else {})
    return f"/s/{study.slug}/?{sim}", {}


class Command(ExampleCommand):
    help = "Pilot a study with scripted bots arriving as its recruitment mode's participants."
    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the study (it must be open)")
        parser.add_argument("--bots", type=int, default=4, help="how many (1-200, default 4)")
        parser.add_argument("--base-url", help="a running server (default: in-process client)")
        parser.add_argument("--record", help="write the transcript as JSON to this file")

    def handle(self, *args, **opts):
        study = Study.objects.filter(slug=opts["slug"]).first()
        if study is None:
            raise CommandError(f"no study {opts['slug']!r}")
        if not study.is_open:
            raise CommandError(f"study {study.slug!r} is {study.status}; launch it first")
        if not 1 <= opts["bots"] <= 200:
            raise CommandError("--bots must be 1..200")
        mode = study.recruitment.get("mode", "public")
        self.stdout.write(f"pilot of {study.slug!r} ({mode} recruitment), {opts['bots']} bots")
        record, failures = [], 0
        for i in range(opts["bots"]):
            policy = BOT_POLICIES[i % 2]
            path, typed = start_for(study, i, policy)
            if opts["base_url"]:
                transport = HttpTransport(opts["base_url"])
            else:
                transport = DjangoClientTransport(Client())
            try:
                result = bot_run(
                    transport=transport, start_path=path, policy=policy, seed=i, text_fields=typed
                )
            except BotError as exc:
                failures += 1
                self.stdout.write(self.style.ERROR(f"  bot {i + 1} ({policy}): FAILED: {exc}"))
                record.append({"bot": i + 1, "policy": policy, "start": path, "error": str(exc)})
                continue
            ok = result.completion_code == study.completion_code
            self.stdout.write(
                f"  bot {i + 1} ({policy}): {result.pages} pages, {result.answers} answers, "
                f"completion code {result.completion_code} " + ("(correct)" if ok else "(WRONG)")
            )
            self.stdout.write("    " + " -> ".join(result.trail))
            failures += not ok
            record.append(
                {
                    "bot": i + 1,
                    "policy": policy,
                    "start": path.replace(study.simulation_key, "<key>"),
                    "pages": result.trail,
                    "answers": result.answers,
                    "completion_code_ok": ok,
                }
            )
        progress = study_progress(study)
        self.stdout.write(
            f"progress: {progress['participants']} participants, by stage "
            f"{ {k: v for k, v in progress['by_stage'].items() if v} }, by arm {progress['by_arm']}"
        )
        if opts["record"]:
            with open(opts["record"], "w") as fh:
                json.dump({"study": study.slug, "mode": mode, "bots": record}, fh, indent=2)
        if failures:
            raise CommandError(f"{failures} of {opts['bots']} bots failed")
