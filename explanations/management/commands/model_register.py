"""``python manage.py model_register``: register your own PyTorch image classifier.

A thin adapter over :func:`explanations.services.model_register`: parses the options, calls
the service once and prints what was stored, or exits non-zero with the service's message.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError

from explanations.modelio import ARCHITECTURES, NORMALIZATION_PRESETS
from explanations.models import ModelKind, ResizePolicy
from explanations.services import ModelRegistrationError, model_register

from ._options import ExampleCommand, owner_get

EPILOG = """\
The weights are validated end to end before anything is saved: they are loaded without
unpickling code (safetensors, or torch.load(weights_only=True)), matched strictly against
the architecture (missing/unexpected keys and shape mismatches are listed), and a forward
pass on a zero image must give one logit per class name. The weights are then copied into
media storage under models/<sha256>.<ext> and their checksum is checked at every load.

Examples:
  # your own architecture: a factory function on the server's Python path + a state dict
  python manage.py model_register --name "Birds ResNet" \\
      --factory mymodels.birds:get_model --weights birds.safetensors \\
      --classes birds.txt --input-size 224 --normalization imagenet --owner alice

  # a built-in architecture with custom normalisation (0-255 pixel units)
  python manage.py model_register --name "Lite0 finetuned" \\
      --architecture efficientnet-lite0 --weights lite0.pt --classes classes.json \\
      --mean 127 127 127 --std 128 128 128 --target-layer _conv_head

  # a TorchScript archive: predictions only (no layer hooks, so no Grad-CAM)
  python manage.py model_register --name "Scripted" --torchscript \\
      --weights scripted.pt --classes classes.txt --resize resize
"""


class Command(ExampleCommand):
    help = (
        "Register a PyTorch image classifier (a built-in architecture, your own factory\n"
        "function with a state dict, or a TorchScript archive) with its class names and\n"
        "preprocessing; prints the model id, weights checksum and Grad-CAM target layer,\n"
        "or exits non-zero with the reason nothing was registered.\n"
        'Example: python manage.py model_register --name "Birds" \\\n'
        "    --factory mymodels.birds:get_model --weights birds.safetensors --classes birds.txt"
    )

    epilog = EPILOG

    def add_arguments(self, parser):
        parser.add_argument(
            "--name", required=True, help="Unique display name of the model (required)."
        )
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument(
            "--architecture",
            metavar="KEY",
            help=f"A built-in architecture key; known: {', '.join(sorted(ARCHITECTURES))}.",
        )
        source.add_argument(
            "--factory",
            metavar="PKG.MOD:FUNC",
            help=(
                "Dotted path of your factory function on the server's Python path, e.g. "
                "mymodels.birds:get_model; it is called with num_classes=<number of class "
                "names> when it accepts that argument and must return an untrained "
                "torch.nn.Module whose state dict --weights holds."
            ),
        )
        source.add_argument(
            "--torchscript",
            action="store_true",
            help=(
                "--weights is a TorchScript archive (torch.jit.save). Predictions work; "
                "Grad-CAM does not (TorchScript models do not support layer hooks)."
            ),
        )
        parser.add_argument(
            "--weights",
            metavar="FILE",
            required=True,
            help=(
                "The weights (required): a .safetensors file, a torch.save()d state dict "
                "(.pt/.pth/.bin/.ckpt, optionally {'state_dict': ...}), or with --torchscript "
                "the TorchScript archive."
            ),
        )
        parser.add_argument(
            "--classes",
            metavar="FILE",
            required=True,
            help=(
                "Class names, index = logit position (required): a .txt file with one name "
                "per line (blank lines ignored) or a .json list. Names must be unique."
            ),
        )
        parser.add_argument(
            "--input-size",
            type=int,
            default=224,
            metavar="PIXELS",
            help="Side of the square model input, 8..2048 pixels (default 224).",
        )
        parser.add_argument(
            "--resize",
            default=ResizePolicy.CENTER_CROP.value,
            metavar="POLICY",
            help=(
                "How photos become square inputs: 'center-crop' (central square, then "
                "resized; default) or 'resize' (whole photo squashed to the square)."
            ),
        )
        parser.add_argument(
            "--normalization",
            metavar="PRESET",
            help=(
                "Normalisation preset, input = (pixel - mean) / std in 0-255 units: "
                + ", ".join(
                    f"{key} (mean {preset['mean']}, std {preset['std']})"
                    for key, preset in sorted(NORMALIZATION_PRESETS.items())
                )
                + ". Default imagenet. Not with --mean/--std."
            ),
        )
        parser.add_argument(
            "--mean",
            type=float,
            nargs=3,
            metavar=("R", "G", "B"),
            help="Custom per-channel mean in 0-255 pixel units; needs --std.",
        )
        parser.add_argument(
            "--std",
            type=float,
            nargs=3,
            metavar=("R", "G", "B"),
            help="Custom per-channel std (> 0) in 0-255 pixel units; needs --mean.",
        )
        parser.add_argument(
            "--target-layer",
            metavar="NAME",
            help=(
                "Dotted module name Grad-CAM attributes to (as in model.named_modules()); "
                "default: the last nn.Conv2d. Not allowed with --torchscript."
            ),
        )
        parser.add_argument(
            "--owner",
            metavar="USERNAME",
            help="Username of the researcher who owns the model (optional).",
        )

    def handle(self, *args, **opts):
        if opts["torchscript"]:
            kind, architecture = ModelKind.TORCHSCRIPT, ""
        elif opts["factory"]:
            kind, architecture = ModelKind.FACTORY, opts["factory"]
        else:
            kind, architecture = ModelKind.BUILTIN, opts["architecture"]
        normalization = _normalization(opts)
        classes = Path(opts["classes"])
        if classes.suffix not in (".txt", ".json"):
            raise CommandError(f"--classes {classes.name}: expected a .txt or .json file")
        owner = owner_get(opts["owner"])
        try:
            model = model_register(
                name=opts["name"],
                weights_path=Path(opts["weights"]),
                class_names=classes,
                kind=kind,
                architecture=architecture,
                input_size=opts["input_size"],
                resize_policy=opts["resize"],
                normalization=normalization,
                target_layer=opts["target_layer"] or None,
                owner=owner,
            )
        except ModelRegistrationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(f"Registered model #{model.pk} {model.name!r}")
            + f" ({model.get_kind_display()}"
            + (f": {model.architecture}" if model.architecture else "")
            + ")"
        )
        self.stdout.write(f"  id:           {model.pk}")
        self.stdout.write(f"  weights:      {model.weights_path}")
        self.stdout.write(f"  sha256:       {model.weights_sha256}")
        self.stdout.write(f"  classes:      {model.num_classes}")
        self.stdout.write(
            f"  input:        {model.input_size}x{model.input_size}, {model.resize_policy}"
        )
        self.stdout.write(
            f"  normalise:    mean {model.normalization_mean}, std {model.normalization_std}"
        )
        self.stdout.write(
            "  target layer: "
            + (model.target_layer or "none (TorchScript: predictions only, no Grad-CAM)")
        )


def _normalization(opts) -> str | dict[str, list[float]]:
    custom = opts["mean"] is not None or opts["std"] is not None
    if custom and opts["normalization"]:
        raise CommandError("use either --normalization or --mean/--std, not both")
    if custom:
        if opts["mean"] is None or opts["std"] is None:
            raise CommandError("--mean and --std go together (3 values each)")
        return {"mean": list(opts["mean"]), "std": list(opts["std"])}
    return opts["normalization"] or "imagenet"
