"""A minimal HIVE-like survey: consent, 14 trials with one 4-way choice each, debrief.

Mirrors studyplatform's participant flow so the benchmark compares the same work: every trial
is one page with one required radio field, and the page's form POST is the request that stores
the answer (oTree redirects to the next page afterwards).
"""

from otree.api import BaseConstants, BaseGroup, BasePlayer, BaseSubsession, Page, models, widgets

doc = "Benchmark app: 14 one-choice trials."

SCALE = [
    ["1", "Fairly confident it is correct"],
    ["2", "Somewhat confident it is correct"],
    ["3", "Somewhat confident it is incorrect"],
    ["4", "Fairly confident it is incorrect"],
]
N_TRIALS = 14


class C(BaseConstants):
    NAME_IN_URL = "trials"
    PLAYERS_PER_GROUP = None
    NUM_ROUNDS = 1


class Subsession(BaseSubsession):
    pass


class Group(BaseGroup):
    pass


def _choice():
    return models.StringField(choices=SCALE, widget=widgets.RadioSelect, label="Your answer")


class Player(BasePlayer):
    consent = models.BooleanField(label="I agree to take part", widget=widgets.RadioSelect)
    t00 = _choice()
    t01 = _choice()
    t02 = _choice()
    t03 = _choice()
    t04 = _choice()
    t05 = _choice()
    t06 = _choice()
    t07 = _choice()
    t08 = _choice()
    t09 = _choice()
    t10 = _choice()
    t11 = _choice()
    t12 = _choice()
    t13 = _choice()


class Consent(Page):
    form_model = "player"
    form_fields = ["consent"]


def _shown(index):
    """Trials beyond the session config's ``num_trials`` (default 14) are skipped."""

    def is_displayed(player):
        return index < player.session.config.get("num_trials", N_TRIALS)

    return staticmethod(is_displayed)


class _Trial(Page):
    form_model = "player"
    template_name = "trials/Trial.html"


class Trial00(_Trial):
    form_fields = ["t00"]
    is_displayed = _shown(0)


class Trial01(_Trial):
    form_fields = ["t01"]
    is_displayed = _shown(1)


class Trial02(_Trial):
    form_fields = ["t02"]
    is_displayed = _shown(2)


class Trial03(_Trial):
    form_fields = ["t03"]
    is_displayed = _shown(3)


class Trial04(_Trial):
    form_fields = ["t04"]
    is_displayed = _shown(4)


class Trial05(_Trial):
    form_fields = ["t05"]
    is_displayed = _shown(5)


class Trial06(_Trial):
    form_fields = ["t06"]
    is_displayed = _shown(6)


class Trial07(_Trial):
    form_fields = ["t07"]
    is_displayed = _shown(7)


class Trial08(_Trial):
    form_fields = ["t08"]
    is_displayed = _shown(8)


class Trial09(_Trial):
    form_fields = ["t09"]
    is_displayed = _shown(9)


class Trial10(_Trial):
    form_fields = ["t10"]
    is_displayed = _shown(10)


class Trial11(_Trial):
    form_fields = ["t11"]
    is_displayed = _shown(11)


class Trial12(_Trial):
    form_fields = ["t12"]
    is_displayed = _shown(12)


class Trial13(_Trial):
    form_fields = ["t13"]
    is_displayed = _shown(13)


class Debrief(Page):
    pass


page_sequence = [
    Consent,
    Trial00, Trial01, Trial02, Trial03, Trial04, Trial05, Trial06,
    Trial07, Trial08, Trial09, Trial10, Trial11, Trial12, Trial13,
    Debrief,
]  # fmt: skip
