"""``python manage.py text_stimuli``: build human/machine text pairs with the bundled language
model (or read a saved set) and import them as a text dataset for GLTR studies."""

from __future__ import annotations

import sys
import time

from django.core.management.base import CommandError

from ._options import ExampleCommand, owner_get

EPILOG = """\
Examples:
  python manage.py text_stimuli --name "GLTR texts" --pairs 10
  python manage.py text_stimuli --name "GLTR texts" --pairs 10 --save stimuli.json
  python manage.py text_stimuli --name "GLTR texts (saved)" --from stimuli.json
"""


class Command(ExampleCommand):
    help = "Build length-matched human/machine text pairs and import them as a text dataset."
    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="the new dataset's name")
        parser.add_argument("--pairs", type=int, default=10, help="human/machine pairs (10)")
        parser.add_argument("--seed", type=int, default=0, help="passage order and sampling")
        parser.add_argument("--opening-words", type=int, default=12)
        parser.add_argument("--top-k", type=int, default=40, help="sampling top-k (40)")
        parser.add_argument("--temperature", type=float, default=1.0)
        parser.add_argument("--model", default="", help="a local LM directory (default SmolLM2)")
        parser.add_argument("--save", default="", help="also write the stimulus set (JSON)")
        parser.add_argument("--from", dest="source", default="", help="import a saved set")
        parser.add_argument(
            "--sources",
            default="stdlib",
            help="human text sources, comma-separated: stdlib (default), packages, fortunes, "
            "python-docs (packages parses every installed distribution: minutes)",
        )
        parser.add_argument("--owner", default="", help="username of the dataset's owner")

    def handle(self, *args, **opts):
        from explanations.text.datasets import text_dataset_import
        from explanations.text.stimuli import StimulusSet, human_passages, stimulus_set_build

        owner = owner_get(opts["owner"])
        started = time.perf_counter()
        try:
            if opts["source"]:
                stimuli = StimulusSet.read(opts["source"])
            else:
                from explanations.text.lm import language_model_load

                self.stderr.write("loading the language model...")
                lm = language_model_load(opts["model"] or None)
                sources = tuple(s.strip() for s in opts["sources"].split(",") if s.strip())
                passages = human_passages(sources=sources, seed=opts["seed"])
                self.stderr.write(
                    f"{len(passages)} human passages; generating {opts['pairs']} machine "
                    "continuations..."
                )
                sys.stderr.flush()
                stimuli = stimulus_set_build(
                    lm,
                    passages=passages,
                    n_pairs=opts["pairs"],
                    opening_words=opts["opening_words"],
                    seed=opts["seed"],
                    top_k=opts["top_k"],
                    temperature=opts["temperature"],
                )
            if opts["save"]:
                stimuli.write(opts["save"])
            dataset = text_dataset_import(stimuli=stimuli, name=opts["name"], owner=owner)
        except (OSError, ValueError, TypeError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"dataset {dataset.name!r}: {dataset.items.count()} texts "
            f"({len(stimuli)} human + {len(stimuli)} machine) in "
            f"{time.perf_counter() - started:.1f} s"
        )
