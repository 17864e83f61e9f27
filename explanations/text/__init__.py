"""Text explanations: causal language models loaded offline (``lm``) and GLTR token ranks
(``gltr``, Gehrmann, Strobelt & Rush, ACL 2019 demo)."""
