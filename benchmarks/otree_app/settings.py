"""oTree project for the load benchmark: one session config, one app.

The app shows consent, 14 trials (the first ``num_trials`` of them) and a debrief.
"""

from os import environ

SESSION_CONFIGS = [
    dict(
        name="trials",
        display_name="14 one-choice trials (benchmark)",
        app_sequence=["trials"],
        num_demo_participants=1,
    ),
]

SESSION_CONFIG_DEFAULTS = dict(real_world_currency_per_point=1.00, participation_fee=0.00, doc="")

PARTICIPANT_FIELDS = []
SESSION_FIELDS = []

LANGUAGE_CODE = "en"
REAL_WORLD_CURRENCY_CODE = "USD"
USE_POINTS = True

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = environ.get("OTREE_ADMIN_PASSWORD")

DEMO_PAGE_INTRO_HTML = ""

SECRET_KEY = environ.get("OTREE_SECRET_KEY", "benchmark-only-not-secret")
