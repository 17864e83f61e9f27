"""Concept explanations, pure torch / numpy (no Django).

Two families of explanations in terms of human concepts rather than pixels:

* :mod:`explanations.concepts.cbm`: a concept-bottleneck model (Koh, Nguyen, Tang, Mussmann,
  Pierson, Kim & Liang, "Concept Bottleneck Models", ICML 2020). The image is first mapped to
  activations of named concepts (``footwear``, ``long_sleeves`` ...) taken from a
  researcher-supplied class -> concept attribute table, and the class logits are a *linear*
  function of those activations, so every prediction is exactly a weighted sum of concepts
  plus a bias ("Ankle boot = +1.2 footwear + 0.9 ankle_high - 0.7 has_sleeves ... + bias").
* :mod:`explanations.concepts.tcav`: Testing with Concept Activation Vectors (Kim, Wattenberg,
  Gilmer, Cai, Wexler, Viegas & Sayres, "Interpretability Beyond Feature Attribution:
  Quantitative Testing with Concept Activation Vectors (TCAV)", ICML 2018) for an already
  trained model, through ``captum.concept``, with the paper's significance test against
  random concepts.

The submodules are imported explicitly (``from explanations.concepts import cbm``); this package
imports nothing itself, so importing :mod:`~explanations.concepts.cbm` does not load captum.
"""
