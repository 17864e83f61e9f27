"""The HIVE design built from predictions and explanations (Kim et al., ECCV 2022)."""

import numpy as np
import pytest
from PIL import Image

from studies.models import TaskType
from studies.services import StudyDesignError, study_create_hive
from tests.conftest import CLASS_NAMES


def test_one_agreement_and_one_distinction_trial_per_labelled_item(hive_study):
    trials = list(hive_study.trials.order_by("index"))
    assert [t.task_type for t in trials] == ["agreement", "agreement", "distinction", "distinction"]
    assert sorted(t.item.name for t in trials) == ["right", "right", "wrong", "wrong"]
    # tasks between subjects: one arm per task, each a single block
    assert [t.arm for t in trials] == ["gradcam/agreement"] * 2 + ["gradcam/distinction"] * 2
    assert [t.block for t in trials] == [0, 0, 0, 0]


def test_model_correctness_and_truth_are_recorded_server_side(hive_study):
    by_item = {t.item.name: t for t in hive_study.trials.filter(task_type=TaskType.AGREEMENT)}
    assert by_item["right"].model_correct is True
    assert by_item["wrong"].model_correct is False
    assert by_item["wrong"].predicted_label == "bison"
    assert by_item["wrong"].true_index == 4


def test_distinction_candidates_are_top4_when_right_and_top3_plus_truth_when_wrong(hive_study):
    trials = {t.item.name: t for t in hive_study.trials.filter(task_type=TaskType.DISTINCTION)}
    right, wrong = trials["right"], trials["wrong"]
    assert sorted(right.option_classes.values()) == [0, 1, 2, 3]
    assert sorted(wrong.option_classes.values()) == [1, 2, 3, 4]  # top-3 (1, 2, 3) + eland (4)
    assert wrong.option_classes[wrong.correct_value] == 4
    assert right.option_classes[right.correct_value] == 0
    assert [o["label"] for o in wrong.options] == [
        CLASS_NAMES[wrong.option_classes[o["value"]]] for o in wrong.options
    ]


def test_distinction_heatmaps_are_normalised_jointly(hive_study, settings):
    """Maps hold constant value target+1 on rows target..target+3, so with a joint scale the
    brightest candidate's band is the strongest and others are proportionally weaker."""
    trial = hive_study.trials.get(task_type=TaskType.DISTINCTION, item__name="wrong")
    from django.core.files.storage import default_storage

    reds = {}
    for option in trial.options:
        cls = trial.option_classes[option["value"]]
        with default_storage.open(trial.stimuli[option["image"]]) as fh:
            img = np.asarray(Image.open(fh).convert("RGB"), dtype=np.int32)
        reds[cls] = img[cls + 1]  # a row inside this class's band
    # the photo differs per row, so compare the overlay against the jet colour of the level
    from matplotlib import colormaps

    jet = colormaps["jet"]
    for cls, row in reds.items():
        level = (cls + 1) / 5.0  # joint max is 5 (eland, class 4)
        expected_colour = np.array(jet(level)[:3]) * 255 * 0.5
        photo_part = row - expected_colour
        assert photo_part.min() >= -1.0 and photo_part.max() <= 255 * 0.5 + 1.0


def test_study_needs_labelled_explained_items(tiny_world, researcher):
    model, dataset = tiny_world
    dataset.items.update(label_index=None)
    with pytest.raises(StudyDesignError, match="run an explanation job first"):
        study_create_hive(title="x", owner=researcher, model=model, dataset=dataset)


def test_stimulus_file_names_reveal_nothing(hive_study):
    for trial in hive_study.trials.all():
        for name in trial.stimuli.values():
            stem = name.rsplit("/", 1)[-1]
            assert len(stem) == len("0123456789abcdef0123456789abcdef.png")
            assert not any(c in stem for c in CLASS_NAMES)
