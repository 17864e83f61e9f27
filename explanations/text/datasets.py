"""Text datasets for GLTR studies: a stimulus set (:mod:`explanations.text.stimuli`) becomes a
:class:`~explanations.models.Dataset` of modality ``text`` whose items are labelled ``human``
or ``machine`` (Gehrmann, Strobelt & Rush, GLTR, ACL 2019 demo).

Item names are neutral (``text-<hash>``): nothing in a name, URL or page tells a text's
origin; the origin is the item's label (server only) and its provenance (``meta``: the
passage's source and licence, or the generation's model and sampling parameters).
"""

from __future__ import annotations

import hashlib

from django.db import transaction

from ..models import Dataset, Item
from . import TEXT_ORIGINS as ORIGINS
from .stimuli import StimulusSet


def text_dataset_import(*, stimuli: StimulusSet, name: str, owner=None) -> Dataset:
    """Create a text dataset with both texts of every pair.

    Returns:
        The new dataset (2 items per pair, labels human = 0, machine = 1).

    Raises:
        ValueError: a dataset named ``name`` exists, or the set has no pairs.
    """
    if not len(stimuli):
        raise ValueError("the stimulus set has no pairs")
    if Dataset.objects.filter(name=name).exists():
        raise ValueError(f"a dataset named {name!r} exists; choose another --name")
    with transaction.atomic():
        dataset = Dataset.objects.create(
            name=name,
            modality="text",
            class_names=list(ORIGINS),
            owner=owner,
            description=f"GLTR stimuli: {len(stimuli)} human/machine pairs by "
            f"{stimuli.model_name} ({stimuli.parameters})",
        )
        for pair in stimuli.pairs:
            for origin, text in (("human", pair.human_text), ("machine", pair.machine_text)):
                digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
                meta = {"pair": pair.pair_id, "opening": pair.opening}
                if origin == "human":
                    meta.update(source=pair.passage.source, license=pair.passage.license)
                else:
                    meta.update(generation=pair.generation.to_dict())
                Item.objects.create(
                    dataset=dataset,
                    name=f"text-{digest[:12]}",
                    sha256=digest,
                    width=0,
                    height=0,
                    text=text,
                    label_index=ORIGINS.index(origin),
                    label_name=origin,
                    source=(pair.passage.source if origin == "human" else "generated")[:300],
                    meta=meta,
                )
    return dataset
