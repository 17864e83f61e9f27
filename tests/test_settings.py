"""Settings from the environment: typed helpers fail loudly, production passes the deploy
checks, and an empty environment gives the working embedded default.

The ``manage.py check`` runs are real subprocesses (settings are read once per process); the
slow ones (they import torch through the system checks) start together when this module
starts and are awaited by the tests that need them.
"""

from __future__ import annotations

import math
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from studies.checks import rate_limits_check
from studies.ratelimit import rate_parse
from studyplatform.settings.env import env_bool, env_float, env_int, env_list, env_str

REPO = Path(__file__).resolve().parent.parent
ENV_PREFIXES = ("DJANGO_", "STUDYPLATFORM_", "CELERY_", "DATABASE_")
ENV_NAMES = {"CACHE_URL"}


def clean_env(**extra: str) -> dict[str, str]:
    """The inherited environment without any variable the settings read, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES) and k not in ENV_NAMES
    }
    env.update(extra)
    return env


def production_env(**overrides: str) -> dict[str, str]:
    alphabet = string.ascii_letters + string.digits + "!#%&()*+-=_"
    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(50)),
        "DJANGO_ALLOWED_HOSTS": "study.example.org",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "CACHE_URL": "redis://127.0.0.1:6379/1",
        "DJANGO_SETTINGS_MODULE": "studyplatform.settings.base",
    }
    env.update(overrides)
    return clean_env(**env)


class Run:
    """A ``manage.py`` subprocess started now and awaited on demand."""

    def __init__(self, out_dir: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.out = out_dir / f"{name}.log"
        self._fh = self.out.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def result(self, timeout: float = 120) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        self._fh.close()
        return rc, self.out.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()


@pytest.fixture(scope="module", autouse=True)
def checks(tmp_path_factory):
    """Start the slow ``manage.py check`` runs in parallel as soon as the module starts."""
    out = tmp_path_factory.mktemp("checks")
    runs = {
        "deploy": Run(
            out, "deploy", ["check", "--deploy", "--fail-level", "WARNING"], production_env()
        ),
        "embedded": Run(out, "embedded", ["check"], clean_env()),
    }
    yield runs
    for run in runs.values():
        run.stop()


def manage(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


# --- typed env helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        (" Yes ", True),
        ("ON", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("Off", False),
    ],
)
def test_env_bool_parses_the_documented_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("SP_TEST_FLAG", raw)
    assert env_bool("SP_TEST_FLAG", not expected) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
def test_env_bool_refuses_anything_else_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("SP_TEST_FLAG", raw)
    with pytest.raises(ImproperlyConfigured) as exc:
        env_bool("SP_TEST_FLAG", True)
    assert "SP_TEST_FLAG" in str(exc.value) and repr(raw) in str(exc.value)


def test_env_helpers_return_their_defaults_when_unset(monkeypatch):
    for name in ("SP_B", "SP_I", "SP_F", "SP_S", "SP_L"):
        monkeypatch.delenv(name, raising=False)
    assert env_bool("SP_B", True) is True and env_bool("SP_B", False) is False
    assert env_int("SP_I", 7, minimum=100) == 7  # the default is not checked against minimum
    assert env_float("SP_F", 0.25) == 0.25
    assert env_str("SP_S", "dflt") == "dflt"
    default = ["a", "b"]
    listed = env_list("SP_L", default)
    assert listed == ["a", "b"]
    listed.append("c")
    assert default == ["a", "b"]  # a copy, not the caller's list


def test_env_int_parses_and_enforces_its_minimum(monkeypatch):
    monkeypatch.setenv("SP_N", "42")
    assert env_int("SP_N", 0, minimum=42) == 42
    monkeypatch.setenv("SP_N", "-3")
    assert env_int("SP_N", 0) == -3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x", "'x' is not an integer"),
        ("4.5", "'4.5' is not an integer"),
        ("", "'' is not an integer"),
        ("0", "must be at least 1"),
    ],
)
def test_env_int_refuses_bad_values_naming_the_variable(monkeypatch, raw, message):
    monkeypatch.setenv("SP_WORKERS", raw)
    with pytest.raises(ImproperlyConfigured) as exc:
        env_int("SP_WORKERS", 5, minimum=1)
    assert str(exc.value).startswith("SP_WORKERS=") and message in str(exc.value)


def test_env_float_parses_numbers_and_refuses_words(monkeypatch):
    monkeypatch.setenv("SP_INTERVAL", "0.5")
    assert env_float("SP_INTERVAL", 1.0) == 0.5
    monkeypatch.setenv("SP_INTERVAL", "1e-3")
    assert math.isclose(env_float("SP_INTERVAL", 1.0), 0.001)
    for raw in ("fast", "0,5", ""):
        monkeypatch.setenv("SP_INTERVAL", raw)
        with pytest.raises(ImproperlyConfigured) as exc:
            env_float("SP_INTERVAL", 1.0)
        assert str(exc.value) == f"SP_INTERVAL={raw!r} is not a number"


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("SP_HOSTS", " a.example.org, ,b.example.org,")
    assert env_list("SP_HOSTS", ["x"]) == ["a.example.org", "b.example.org"]
    monkeypatch.setenv("SP_HOSTS", "")
    assert env_list("SP_HOSTS", ["x"]) == []


# --- rate strings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "parsed"), [("600/m", (600, 60)), ("1/s", (1, 1)), ("30/h", (30, 3600))]
)
def test_rate_parse_reads_count_per_period(rate, parsed):
    assert rate_parse(rate) == parsed


@pytest.mark.parametrize("rate", ["600", "0/m", "-5/m", "5/d", "x/m", "", "5/m/s", "5/M"])
def test_rate_parse_refuses_malformed_rates_naming_them(rate):
    with pytest.raises(ImproperlyConfigured) as exc:
        rate_parse(rate)
    assert repr(rate) in str(exc.value)


def test_the_system_check_reports_a_bad_rate_setting_by_name(settings):
    assert rate_limits_check(None) == []
    settings.STUDYPLATFORM_ENROL_RATE = "5/d"
    errors = rate_limits_check(None)
    assert [e.id for e in errors] == ["studies.E001"]
    assert errors[0].msg.startswith("STUDYPLATFORM_ENROL_RATE: ") and "'5/d'" in errors[0].msg


# --- whole settings in a subprocess -------------------------------------------------------


def test_production_settings_pass_the_deploy_checks(checks):
    rc, output = checks["deploy"].result()
    assert rc == 0, output
    # not vacuous: with DEBUG still on, --deploy would warn (security.W018) and fail
    assert "System check identified no issues (0 silenced)" in output


def test_an_empty_environment_gives_a_working_embedded_default(checks):
    rc, output = checks["embedded"].result()
    assert rc == 0, output
    assert "System check identified no issues" in output


def test_debug_off_without_a_secret_key_fails_at_settings_import_naming_it():
    env = production_env()
    del env["DJANGO_SECRET_KEY"]
    rc, output = manage(["check"], env)
    assert rc != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY must be set" in output


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe' is not a boolean"),
        ({"DJANGO_SECURE_HSTS_SECONDS": "a year"}, "DJANGO_SECURE_HSTS_SECONDS='a year'"),
        ({"CACHE_URL": "memcached://127.0.0.1:11211"}, "CACHE_URL='memcached://127.0.0.1:11211'"),
    ],
)
def test_a_bad_production_variable_stops_start_up_naming_it(overrides, expected):
    rc, output = manage(["check"], production_env(**overrides))
    assert rc != 0
    assert "ImproperlyConfigured" in output and expected in output
