"""Sanity checks stored per method and model (Adebayo et al. 2018; Kindermans et al. 2017)."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from explanations.models import MethodCheck
from tests.explanations.test_job_pipeline import run_job


def test_checks_run_store_and_show_on_the_model_page(
    factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks, client
):
    with pytest.raises(CommandError, match="has no predictions yet"):
        call_command("explain_checks", "--model", "Tiny colours", "--method", "gradcam")
    run_job(factory_model, folder_dataset, monkeypatch, django_capture_on_commit_callbacks)
    out = io.StringIO()
    call_command("explain_checks", "--model", "Tiny colours", "--method", "gradcam", stdout=out)
    assert out.getvalue().splitlines()[1].startswith("gradcam")
    rand = MethodCheck.objects.get(name="model_randomisation")
    inv = MethodCheck.objects.get(name="input_invariance")
    steps = rand.result["steps"]
    assert len(steps) >= 2 and steps[-1]["layers_randomised"]  # cascading, down to the input
    rho = steps[-1]["spearman"]
    assert rand.passed == (rho is None or rho < 0.5)
    assert inv.passed == (
        inv.result["outputs_equal"] and inv.result["relative_diff"] <= inv.result["tolerance"]
    )
    assert rand.params_key == inv.params_key and len(rand.params_key) == 64
    staff = get_user_model().objects.create_user("s", password="pw", is_staff=True)
    client.force_login(staff)
    page = client.get(f"/r/models/{factory_model.pk}/").content.decode()
    assert "Sanity checks of the explanation methods" in page and "model_randomisation" in page
    with pytest.raises(CommandError, match="unknown explanation method 'nope'"):
        call_command("explain_checks", "--model", "Tiny colours", "--method", "nope")
