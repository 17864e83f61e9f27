"""Label correction: which labels are most likely wrong (confident learning, classifier-guided
curation). The curation app (models, queue pages) builds on :mod:`labeling.quality`."""
