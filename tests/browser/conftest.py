"""Browser tests: Debian's Chromium (/usr/bin/chromium) driven by Playwright's pytest plugin.

Never a downloaded browser: the plugin's launch arguments are overridden to point at the
system Chromium. ``live_server`` runs the real app in a thread; Playwright's sync API runs an
event loop in this thread, so Django's async-safety check is relaxed for these tests only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.studies.conftest import engine_world  # noqa: F401  (the same world as the engine tests)

CHROMIUM = Path("/usr/bin/chromium")

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: apt-get install -y chromium (.ci/run does)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": ["--no-sandbox"]}
