"""``python manage.py explain_checks``: the sanity checks of explanation methods on a model.

Runs the model-parameter randomisation check (Adebayo et al., NeurIPS 2018) and the
input-invariance check (Kindermans et al., 2017) for each method on one image, stores them
(shown on the model's page, beside the human results) and prints a table.
"""

from __future__ import annotations

from django.core.management.base import CommandError

from explanations.explainers.base import ExplainerConfigError
from explanations.models import ClassifierModel, Dataset
from explanations.services import explainer_classes, method_checks_run

from ._options import ExampleCommand

EPILOG = """\
Examples:
  python manage.py explain_checks --model "EfficientNet-Lite0 (ImageNet-1k)" --method gradcam
  python manage.py explain_checks --model "Birds ResNet" --dataset "Birds val" \\
      --method saliency --method integrated_gradients
"""


class Command(ExampleCommand):
    help = "Run and store the randomisation and input-invariance checks of explanation methods."
    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, metavar="NAME")
        parser.add_argument(
            "--method", action="append", metavar="KEY", help="repeatable; default: every method"
        )
        parser.add_argument("--dataset", metavar="NAME", help="take the image from this dataset")

    def handle(self, *args, **opts):
        model = ClassifierModel.objects.filter(name=opts["model"]).first()
        if model is None:
            raise CommandError(f"no model named {opts['model']!r}")
        dataset = None
        if opts["dataset"]:
            dataset = Dataset.objects.filter(name=opts["dataset"]).first()
            if dataset is None:
                raise CommandError(f"no dataset named {opts['dataset']!r}")
        methods = opts["method"] or list(explainer_classes())
        self.stdout.write(f"{'method':<22} {'randomisation':<28} input invariance")
        for method in methods:
            try:
                rand, inv = method_checks_run(model=model, method=method, dataset=dataset)
            except (ValueError, ExplainerConfigError) as exc:
                raise CommandError(f"{method}: {exc}") from None
            last = rand.result["steps"][-1]
            rho = last.get("spearman")
            shown = "n/a" if rho is None else f"{rho:.2f}"
            rand_text = f"{'passed' if rand.passed else 'FAILED'} (rho {shown})"
            inv_text = (
                f"{'passed' if inv.passed else 'failed'} "
                f"(rel. diff {inv.result.get('relative_diff', float('nan')):.3g})"
            )
            self.stdout.write(f"{method:<22} {rand_text:<28} {inv_text}")
