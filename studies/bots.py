"""Simulated participants that take a study through its real pages, as a person would.

A bot only sees what a participant sees: it follows the start link, reads the forms in the
HTML, fetches the images and posts the forms (oTree's ``Bot``/``Submission`` pattern). It is
marked simulated by the study's secret ``SIMULATION_KEY`` on the start link, so simulated rows
can never be confused with real ones in the data.

Every task type is answered from its form: radio choices, grid cells of a region annotation,
selects of a questionnaire, sliders and text. Bots read attention-check instructions and follow
them (except the ``careless`` policy), check that no page carries a server-only field, and try
one submission that must fail (an answer that is not an option) on the first trial.

Policies:
    ``uniform``: picks any option with equal probability (accuracy near chance).
    ``trusting``: always trusts the model in the agreement task ("confident it is correct"),
        picks uniformly elsewhere; reproduces the confirmation bias HIVE reports (high
        accuracy when the model is right, low when it is wrong).
    ``careless``: like ``uniform`` but ignores attention-check instructions.
"""

from __future__ import annotations

import http.cookiejar
import random
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Protocol

BOT_POLICIES = ("uniform", "trusting", "careless")
#: Words that must never appear in a participant's page (server-only fields).
FORBIDDEN_IN_PAGES = ("correct_value", "true_index", "model_correct", "option_classes")


class BotError(RuntimeError):
    """The study did not behave as a participant would expect."""


@dataclass
class Page:
    status: int
    url: str
    text: str


class Transport(Protocol):
    def get(self, path: str) -> Page: ...

    def post(self, path: str, data: dict[str, str]) -> Page: ...


class HttpTransport:
    """Real HTTP against a running server, with cookies and redirects (urllib)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.opener.addheaders = [("User-Agent", "studyplatform-bot/1")]

    def _open(self, path: str, data: bytes | None) -> Page:
        url = path if path.startswith("http") else self.base_url + path
        request = urllib.request.Request(url, data=data)
        if data is not None:
            request.add_header("Referer", url)
        try:
            with self.opener.open(request, timeout=self.timeout) as resp:
                body = resp.read()
                ctype = resp.headers.get("Content-Type", "")
                text = body.decode("utf-8") if "text" in ctype or "json" in ctype else ""
                return Page(resp.status, urllib.parse.urlsplit(resp.url).path, text)
        except urllib.error.HTTPError as exc:
            return Page(
                exc.code, urllib.parse.urlsplit(url).path, exc.read().decode("utf-8", "replace")
            )

    def get(self, path: str) -> Page:
        return self._open(path, None)

    def post(self, path: str, data: dict[str, str]) -> Page:
        return self._open(path, urllib.parse.urlencode(data, doseq=True).encode())


class DjangoClientTransport:
    """The same interface over Django's test client (tests; no server needed)."""

    def __init__(self, client) -> None:
        self.client = client

    def _page(self, response) -> Page:
        ctype = response.get("Content-Type", "")
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
            text = ""
        else:
            text = response.content.decode("utf-8") if ("text" in ctype or "json" in ctype) else ""
        path = response.request["PATH_INFO"]
        return Page(response.status_code, path, text)

    def get(self, path: str) -> Page:
        return self._page(self.client.get(path, follow=True))

    def post(self, path: str, data: dict[str, str]) -> Page:
        return self._page(self.client.post(path, data, follow=True))


@dataclass
class Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    choices: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # radio value -> its label text
    checkboxes: dict[str, list[str]] = field(default_factory=dict)
    selects: dict[str, list[str]] = field(default_factory=dict)
    textareas: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.images: list[str] = []
        self.instruction = ""
        self._select: str | None = None
        self._radio: str | None = None
        self._in_instruction = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(action=a.get("action", ""), attrs=a))
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif tag == "p" and "instruction" in a.get("class", ""):
            self._in_instruction = True
        elif tag == "input" and self.forms:
            form = self.forms[-1]
            kind = a.get("type", "text")
            name = a.get("name", "")
            if kind == "radio":
                form.choices.setdefault(name, []).append(a.get("value", ""))
                self._radio = a.get("value", "")
                form.labels[self._radio] = ""
            elif kind == "checkbox":
                form.checkboxes.setdefault(name, []).append(a.get("value", ""))
            elif kind == "range":
                form.ranges.append(name)
            elif name:
                form.fields[name] = a.get("value", "")
        elif tag == "select" and self.forms:
            self._select = a.get("name", "")
            self.forms[-1].selects[self._select] = []
        elif tag == "option" and self.forms and self._select and a.get("value"):
            self.forms[-1].selects[self._select].append(a["value"])
        elif tag == "textarea" and self.forms and a.get("name"):
            self.forms[-1].textareas.append(a["name"])

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "label":
            self._radio = None
        elif tag == "p":
            self._in_instruction = False

    def handle_data(self, data):
        if self._radio is not None and self.forms:
            self.forms[-1].labels[self._radio] += data.strip()
        if self._in_instruction:
            self.instruction += data


def parse_page(text: str) -> _FormParser:
    parser = _FormParser()
    parser.feed(text)
    return parser


@dataclass
class BotResult:
    completion_code: str
    answers: int
    pages: int
    trail: list[str] = field(default_factory=list)  # "path (heading)" of each page seen


def bot_run(
    *,
    transport: Transport,
    start_path: str,
    policy: str = "uniform",
    seed: int | None = None,
    max_pages: int = 500,
    text_fields: dict[str, str] | None = None,
) -> BotResult:
    """Take a study from its start link to the debrief page.

    Args:
        transport: HTTP (:class:`HttpTransport`) or test client transport.
        start_path: the study's start link, including ``SIMULATION_KEY`` and ``BOT_POLICY``
            query parameters for a simulated participant.
        policy: one of :data:`BOT_POLICIES`.
        text_fields: values for one-line text inputs by name (e.g. a classroom roster
            ``{"name": "Ada Lovelace"}``, a join code ``{"code": "ABC234"}``).

    Returns:
        The completion code shown on the debrief page and the number of answers given.

    Raises:
        BotError: a page failed to load, an image was missing, or the study never ended.
    """
    if policy not in BOT_POLICIES:
        raise ValueError(f"unknown bot policy {policy!r}; known: {BOT_POLICIES}")
    rng = random.Random(seed)
    page = transport.get(start_path)
    answers = 0
    tried_invalid = False
    trail: list[str] = []
    for count in range(1, max_pages + 1):
        if page.status != 200:
            raise BotError(f"{page.url} answered HTTP {page.status}")
        heading = page.text.split("<h1>", 1)[1].split("</h1>", 1)[0] if "<h1>" in page.text else ""
        trail.append(f"{page.url} ({heading.strip()})")
        leaked = [w for w in FORBIDDEN_IN_PAGES if w in page.text]
        if leaked:
            raise BotError(f"{page.url} shows server-only fields {leaked}")
        parsed = parse_page(page.text)
        if 'id="completion-code"' in page.text:
            code = page.text.split('id="completion-code">', 1)[1].split("<", 1)[0].strip()
            return BotResult(completion_code=code, answers=answers, pages=count, trail=trail)
        if not parsed.forms:
            raise BotError(f"{page.url}: no form and no completion code")
        form = parsed.forms[0]
        for src in parsed.images:
            image = transport.get(src)
            if image.status != 200:
                raise BotError(f"image {src} answered HTTP {image.status}")
        data: dict = dict(form.fields)
        for name, value in (text_fields or {}).items():
            if name in form.fields:
                data[name] = value
        if "consent" in form.choices:
            data["consent"] = "yes"
        elif form.attrs.get("id") == "trial-form":
            if not tried_invalid and "answer" in form.choices:
                tried_invalid = True
                bad = transport.post(form.action, {**data, "answer": "not-an-option"})
                if bad.status != 200 or "please choose one of the options" not in bad.text.lower():
                    raise BotError(f"{page.url}: an answer that is not an option was not refused")
            data.update(_answer(form, parsed.instruction, policy, rng))
            data["rt_ms"] = str(rng.randint(1500, 9000))
            answers += 1
        page = transport.post(form.action, data)
    raise BotError(f"no completion after {max_pages} pages")


def _answer(form: Form, instruction: str, policy: str, rng: random.Random) -> dict:
    """Form fields answering one trial of any task type."""
    out: dict = {}
    if "answer" in form.choices:
        out["answer"] = _choose(form, instruction, policy, rng)
    for name, values in form.choices.items():  # per-prototype similarity ratings
        if name.startswith("rating-"):
            out[name] = rng.choice(values)
    for name, values in form.checkboxes.items():  # region annotation grid
        out[name] = rng.sample(values, rng.randint(1, min(6, len(values))))
    for name, values in form.selects.items():
        out[name] = rng.choice(values)
    for name in form.ranges:
        out[name] = str(rng.randint(0, 100))
    for name in form.textareas:
        out[name] = rng.choice(["I looked at the coloured areas.", "Mostly by the shape."])
    return out


def _choose(form: Form, instruction: str, policy: str, rng: random.Random) -> str:
    options = form.choices["answer"]
    if instruction and policy != "careless":  # an attention check names the answer to pick
        for value, label in form.labels.items():
            if label and f"\u201c{label}\u201d" in instruction:
                return value
    if policy == "trusting" and form.attrs.get("data-task") == "agreement":
        return rng.choice(["1", "1", "2"])
    return rng.choice(options)
