"""Shared Interest of a study: dataset and participant regions against the model's maps,
the paper's patterns, the page (filter, sort, thumbnails) and its permissions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from PIL import Image

from analysis.regions import dataset_region_mask, study_shared_interest
from explanations.models import Item, Region, RegionKind
from tests.studies.conftest import engine_world, make_study  # noqa: F401  (the engine world)

# engine_world: each item's top-1 map is value t+1 on rows t..t+2, columns 2..8 (21 pixels),
# t = the predicted class; binarised at mean + 1 SD that is exactly those 21 pixels.
BOXES = {
    # item: (x0, y0, x1, y1) in the stored photo's pixels (= the 16 px model view here)
    "r0": (2, 0, 9, 3),  # right (predicts 0), box = the salient region -> Human Aligned
    "w0": (2, 1, 9, 4),  # wrong (predicts 1), box = the salient region -> Confuser
    "r1": (12, 12, 16, 16),  # right, box far away -> Context Dependent
    "w1": (2, 2, 5, 5),  # wrong (predicts 2): 9 px inside the 21 -> Context Confusion
}


@pytest.fixture
def regions_study(make_study):  # noqa: F811
    study = make_study()
    for name, (x0, y0, x1, y1) in BOXES.items():
        item = Item.objects.get(dataset=study.dataset, name=name)
        Region.objects.create(item=item, kind=RegionKind.BOX, x0=x0, y0=y0, x1=x1, y1=y1)
    return study


def test_dataset_regions_give_the_known_scores_and_patterns(regions_study):
    frame = study_shared_interest(regions_study, source="dataset")
    gradcam = frame[frame["method"] == "gradcam"].set_index("item")
    assert sorted(gradcam.index) == sorted(BOXES)
    assert gradcam.loc["r0", ["iou", "ground_truth_coverage", "saliency_coverage"]].tolist() == [
        1.0,
        1.0,
        1.0,
    ]
    assert gradcam.loc["r0", "pattern"] == "human_aligned"
    assert gradcam.loc["w0", "pattern"] == "confuser"
    assert gradcam.loc["r1", "iou"] == 0.0 and gradcam.loc["r1", "pattern"] == "context_dependent"
    w1 = gradcam.loc["w1"]
    assert (w1["iou"], w1["ground_truth_coverage"], w1["saliency_coverage"]) == pytest.approx(
        (9 / 21, 1.0, 9 / 21)
    )
    assert w1["pattern"] == "context_confusion" and w1["pattern_name"] == "Context Confusion"
    assert set(frame["method"]) == {"gradcam", "saliency", "integrated_gradients"}


def test_a_region_is_mapped_through_the_photos_centre_crop():
    class FakeItem:
        width, height = 40, 20
        regions = None

    item = FakeItem()
    region = Region(kind=RegionKind.BOX, x0=10, y0=0, x1=20, y1=10)  # left half of the crop
    item.regions = type("M", (), {"all": staticmethod(lambda: [region])})()
    mask = dataset_region_mask(item, size=10, policy="center_crop")
    # the centre square is x 10..30: the box is its left half, top half, scaled by 1/2
    expected = np.zeros((10, 10), dtype=bool)
    expected[0:5, 0:5] = True
    assert (mask == expected).all()


def test_participant_regions_are_pooled_by_majority(regions_study, researcher, client):
    from studies.models import Participant, Response, Trial

    study = regions_study
    item = Item.objects.get(dataset=study.dataset, name="r0")
    trial = Trial.objects.filter(study=study, item=item).first()
    trial.task_type = "region_annotation"
    trial.save(update_fields=["task_type"])
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    def mask_file(rows):
        m = np.zeros((16, 16), dtype=np.uint8)
        m[rows, 2:9] = 255
        buf = io.BytesIO()
        Image.fromarray(m).save(buf, format="PNG")
        return default_storage.save("responses/test/m.png", ContentFile(buf.getvalue()))

    # two of three participants mark exactly the salient rows 0..2, one marks rows 10..12
    for rows in [slice(0, 3), slice(0, 3), slice(10, 13)]:
        p = Participant.objects.create(study=study)
        Response.objects.create(
            participant=p, trial=trial, position=0, answer="{}", data={"mask": mask_file(rows)}
        )
    frame = study_shared_interest(study, source="participants")
    row = frame[(frame["method"] == "gradcam") & (frame["item"] == "r0")].iloc[0]
    assert row["annotators"] == 3 and row["iou"] == 1.0 and row["pattern"] == "human_aligned"
    client.force_login(researcher)
    png = client.get(
        f"/r/studies/{study.slug}/shared-interest/{row['explanation_id']}.png",
        {"source": "participants"},
    )
    outline = np.asarray(Image.open(io.BytesIO(png.content)))[:, :, :3].min(axis=2) == 255
    assert outline[0, 2:9].all()  # the pooled region's top edge drawn in white
    bad = client.get(
        f"/r/studies/{study.slug}/shared-interest/{row['explanation_id']}.png", {"source": "x"}
    )
    assert bad.status_code == 400


def test_the_page_filters_sorts_and_shows_thumbnails_to_the_owner_only(
    regions_study, researcher, client
):
    client.force_login(researcher)
    url = f"/r/studies/{regions_study.slug}/shared-interest/"
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Human Aligned" in html and "Context Confusion" in html and "12 of 12" in html
    page = client.get(url, {"method": "gradcam", "pattern": "confuser"})
    assert "1 of 12" in page.content.decode() and ">w0<" in page.content.decode()
    assert client.get(url, {"sort": "nope"}).status_code == 400
    row = study_shared_interest(regions_study).iloc[0]
    png = client.get(f"{url}{row['explanation_id']}.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    picture = np.asarray(Image.open(io.BytesIO(png.content)))
    assert picture.shape == (16, 16, 3)
    other = get_user_model().objects.create_user("not-the-owner", password="x")
    client.force_login(other)
    assert client.get(url).status_code == 404
    assert client.get(f"{url}{row['explanation_id']}.png").status_code == 404


@pytest.mark.parametrize("name", ["accuracy", "response_times", "confidence", "shared_interest"])
def test_every_results_plot_is_a_png_for_the_owner(regions_study, researcher, client, name):
    client.force_login(researcher)
    url = f"/r/studies/{regions_study.slug}/plots/{name}.png"
    response = client.get(url)
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    assert client.get(f"/r/studies/{regions_study.slug}/plots/nope.png").status_code == 400
    client.logout()
    assert client.get(url).status_code == 302  # to the login page


def test_the_shared_interest_api_gives_scores_patterns_and_counts(
    regions_study, researcher, client
):
    client.force_login(researcher)
    url = f"/api/studies/{regions_study.slug}/shared-interest/"
    body = client.get(url).json()
    assert body["source"] == "dataset" and len(body["rows"]) == 12
    gradcam = {r["item"]: r for r in body["rows"] if r["method"] == "gradcam"}
    assert gradcam["r0"]["iou"] == 1.0 and gradcam["w1"]["pattern"] == "context_confusion"
    assert sum(body["pattern_counts"].values()) == 12
    assert client.get(url, {"source": "nowhere"}).status_code == 400
    other = get_user_model().objects.create_user("api-outsider", password="x")
    client.force_login(other)
    assert client.get(url).status_code in (403, 404)
