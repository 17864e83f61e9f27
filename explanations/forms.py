"""Forms of the researcher pages for bringing a model or a dataset.

They parse and validate what a browser can get wrong; everything about the model or the
archive itself is checked by the services (``model_register``, the import job), whose
messages the views show next to the form.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from django import forms
from django.conf import settings

from .modelio import ARCHITECTURES, NORMALIZATION_PRESETS
from .models import Dataset, ModelKind, ResizePolicy

CUSTOM = "custom"
CLASS_FILE_SUFFIXES = (".txt", ".json")


def _three_floats(text: str, what: str) -> list[float]:
    parts = text.replace(",", " ").split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise forms.ValidationError(f"{what}: three numbers, e.g. 123.7 116.3 103.5") from None
    if len(values) != 3:
        raise forms.ValidationError(f"{what}: three numbers (R G B), got {len(values)}")
    return values


class ModelRegisterForm(forms.Form):
    """What :func:`explanations.services.model_register` needs, from a browser."""

    name = forms.CharField(max_length=200, help_text="Unique display name.")
    kind = forms.ChoiceField(
        choices=ModelKind.choices,
        initial=ModelKind.FACTORY,
        help_text="Factory: your function on the server's Python path + a state dict. "
        "TorchScript: predictions only (no layer hooks, so no Grad-CAM).",
    )
    architecture = forms.CharField(
        max_length=300,
        required=False,
        help_text="Built-in key ("
        + ", ".join(sorted(ARCHITECTURES))
        + ") or factory dotted path, e.g. mymodels.birds:get_model; empty for TorchScript.",
    )
    weights = forms.FileField(
        help_text=".safetensors, a torch.save()d state dict (.pt, .pth, .bin, .ckpt), or the "
        "TorchScript archive. Never unpickled."
    )
    classes = forms.FileField(
        label="Class names",
        help_text="A .txt file (one name per line, in logit order) or a .json list.",
    )
    input_size = forms.IntegerField(initial=224, help_text="Square input side in pixels.")
    resize_policy = forms.ChoiceField(choices=ResizePolicy.choices, label="Resize")
    normalization = forms.ChoiceField(
        choices=[
            (key, f"{key}: mean {p['mean']}, std {p['std']}")
            for key, p in sorted(NORMALIZATION_PRESETS.items())
        ]
        + [(CUSTOM, "custom mean/std (below)")],
        initial="imagenet",
        help_text="input = (pixel - mean) / std, in 0-255 pixel units.",
    )
    mean = forms.CharField(required=False, help_text="Custom: R G B, e.g. 127 127 127.")
    std = forms.CharField(required=False, help_text="Custom: R G B, e.g. 128 128 128.")
    target_layer = forms.CharField(
        max_length=200,
        required=False,
        help_text="Grad-CAM layer (dotted module name); empty = the last nn.Conv2d.",
    )

    def clean_classes(self):
        upload = self.cleaned_data["classes"]
        if Path(upload.name).suffix.lower() not in CLASS_FILE_SUFFIXES:
            raise forms.ValidationError(f"{upload.name}: expected a .txt or .json file")
        return upload

    def clean(self):
        data = super().clean()
        if data.get("normalization") == CUSTOM:
            try:
                data["normalization_value"] = {
                    "mean": _three_floats(data.get("mean", ""), "mean"),
                    "std": _three_floats(data.get("std", ""), "std"),
                }
            except forms.ValidationError as exc:
                self.add_error("mean" if "mean" in exc.messages[0] else "std", exc)
        elif data.get("normalization"):
            data["normalization_value"] = data["normalization"]
        return data


class DatasetImportForm(forms.Form):
    """A zip archive to import in the background into a new or existing dataset."""

    name = forms.CharField(
        max_length=200,
        label="Dataset",
        help_text="An existing dataset's name, or a new name to create one.",
        widget=forms.TextInput(attrs={"list": "dataset-names", "autocomplete": "off"}),
    )
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="For a new dataset."
    )
    archive = forms.FileField(
        label="Zip archive",
        help_text="An ImageFolder tree (<class>/<image>) or a manifest.csv/json with the images "
        "(columns file, label, split, x0, y0, x1, y1, box_units px|norm, mask).",
    )

    def clean_archive(self):
        upload = self.cleaned_data["archive"]
        limit = settings.STUDYPLATFORM_MAX_ZIP_BYTES
        if upload.size > limit:
            raise forms.ValidationError(f"{upload.name}: {upload.size} bytes, above {limit}")
        if not zipfile.is_zipfile(upload):
            raise forms.ValidationError(f"{upload.name}: not a zip archive")
        upload.seek(0)
        return upload

    def existing_names(self) -> list[str]:
        return list(Dataset.objects.order_by("name").values_list("name", flat=True)[:500])
