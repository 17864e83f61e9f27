"""Researcher pages: owners see their study's monitor, results, plot and CSV; others get 404."""

import io

import pandas as pd
import pytest
from django.test import Client
from PIL import Image

from studies.bots import DjangoClientTransport, bot_run


@pytest.fixture
def answered_study(hive_study):
    for seed, policy in enumerate(["uniform", "uniform", "trusting"]):  # tasks: A, D, A
        bot_run(
            transport=DjangoClientTransport(Client()),
            start_path=f"/s/{hive_study.slug}/?SIMULATION_KEY={hive_study.simulation_key}&BOT_POLICY={policy}",
            policy=policy,
            seed=seed,
        )
    return hive_study


def login(user, password):
    client = Client()
    assert client.login(username=user.username, password=password)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/r/studies/{slug}/",
        "/r/studies/{slug}/results/",
        "/r/studies/{slug}/results.png",
        "/r/studies/{slug}/responses.csv",
    ],
)
def test_outsiders_get_404_and_owners_get_the_page(
    answered_study, researcher, co_researcher, outsider, path
):
    url = path.format(slug=answered_study.slug)
    assert login(researcher, "pw-researcher").get(url).status_code == 200
    assert login(co_researcher, "pw-co").get(url).status_code == 404
    assert login(outsider, "pw-outsider").get(url).status_code == 404
    assert Client().get(url).status_code == 302  # to the login page


def test_csv_has_one_row_per_response_with_the_truth_for_researchers(answered_study, researcher):
    response = login(researcher, "pw-researcher").get(
        f"/r/studies/{answered_study.slug}/responses.csv"
    )
    frame = pd.read_csv(io.StringIO(response.content.decode()))
    assert len(frame) == 6  # 3 bots x 2 trials of their one task
    assert frame.groupby("task")["participant"].nunique().to_dict() == {
        "agreement": 2,
        "distinction": 1,
    }
    assert frame["is_simulated"].all()
    wrong = frame[(frame["item"] == "wrong")]
    assert set(wrong["true_class"]) == {"eland"} and set(wrong["predicted_class"]) == {"bison"}
    assert not wrong["model_correct"].any()
    # the trusting bot always says "correct" in agreement, so it is wrong on the wrong prediction
    trusting = frame[(frame["bot_policy"] == "trusting") & (frame["task"] == "agreement")]
    assert dict(zip(trusting["item"], trusting["is_correct"], strict=True)) == {
        "right": True,
        "wrong": False,
    }


def test_results_page_shows_accuracy_split_by_model_correctness(answered_study, researcher):
    client = login(researcher, "pw-researcher")
    page = client.get(f"/r/studies/{answered_study.slug}/results/").content.decode()
    assert "model right" in page and "model wrong" in page and "Wilson" in page
    assert "3 simulated" in page
    excluded = client.get(
        f"/r/studies/{answered_study.slug}/results/?simulated=exclude"
    ).content.decode()
    assert "No scored main-trial responses yet" in excluded
    assert (
        client.get(f"/r/studies/{answered_study.slug}/results/?simulated=bogus").status_code == 400
    )
    png = client.get(f"/r/studies/{answered_study.slug}/results.png").content
    assert Image.open(io.BytesIO(png)).size[0] > 300
