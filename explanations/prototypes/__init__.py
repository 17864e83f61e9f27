"""Prototype explanations ("this looks like that"), pure torch / numpy, no Django.

* :mod:`explanations.prototypes.protopnet`: a small ProtoPNet (Chen et al., NeurIPS 2019) whose
  predictions are, by construction, sums of similarities to learned prototypes that were
  projected ("pushed") onto real training patches.
* :mod:`explanations.prototypes.posthoc`: post-hoc nearest training patches in a hooked layer of
  any CNN (not prototype-based; the neighbours explain nothing about how the logits arise).

HIVE (Kim et al., ECCV 2022) shows participants such prototypes next to the test image.
"""
