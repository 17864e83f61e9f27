"""Text explanations: causal language models loaded offline (``lm``) and GLTR token ranks
(``gltr``, Gehrmann, Strobelt & Rush, ACL 2019 demo)."""

#: The origins of a text dataset's items, in label-index order (human = 0, machine = 1).
TEXT_ORIGINS = ("human", "machine")
