"""Uploaded files written to disk for the loaders that read paths (weights, class names)."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import SuspiciousFileOperation
from django.utils.text import get_valid_filename


def upload_write(upload, folder: Path, fallback: str) -> Path:
    """Copy an uploaded file into ``folder`` under its own sanitised base name.

    The suffix matters (``.safetensors`` is read with safetensors, ``.json`` class names as
    JSON) and loaders name the file in their messages; a name that cannot be sanitised
    (empty, ``..``) becomes ``fallback``. The file is streamed in chunks, never held whole.

    Returns:
        The written path, inside ``folder`` (created if missing).
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        name = get_valid_filename(Path(upload.name or "").name)
    except SuspiciousFileOperation:
        name = fallback
    path = folder / (name or fallback)
    with open(path, "wb") as fh:
        for chunk in upload.chunks():
            fh.write(chunk)
    return path
