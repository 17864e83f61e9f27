"""Fixed-window rate limits for participant endpoints, counted in the Django cache.

Two limits, both from settings: ``STUDYPLATFORM_ENROL_RATE`` per client address on the study
start link (new participant records), and ``STUDYPLATFORM_PARTICIPANT_RATE`` per participant
token on every participant page, image and API call. Rates are ``"<count>/<s|m|h>"``.
Use a shared cache (``CACHE_URL=redis://...``) when several web processes serve the study.
"""

from __future__ import annotations

import functools
import time

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

_PERIODS = {"s": 1, "m": 60, "h": 3600}


def rate_parse(rate: str) -> tuple[int, int]:
    """``"600/m"`` -> (600, 60).

    Raises:
        ImproperlyConfigured: not ``<positive int>/<s|m|h>``.
    """
    try:
        count, period = rate.split("/")
        n, seconds = int(count), _PERIODS[period]
    except (ValueError, KeyError):
        raise ImproperlyConfigured(
            f"rate {rate!r} must look like '600/m' (per s, m or h)"
        ) from None
    if n < 1:
        raise ImproperlyConfigured(f"rate {rate!r} must allow at least one request")
    return n, seconds


def _redis_client():
    """The redis-py client behind Django's built-in Redis cache, or None for other caches."""
    try:
        from django.core.cache.backends.redis import RedisCache
    except ImportError:  # pragma: no cover - Django < 4.0
        return None
    backend = caches[DEFAULT_CACHE_ALIAS]  # ``cache`` is a proxy, not the backend itself
    if isinstance(backend, RedisCache):
        return backend._cache.get_client(write=True)  # noqa: SLF001 - Django's own accessor
    return None


def rate_exceeded(scope: str, key: str, rate: str) -> int:
    """Count one request; return 0 if allowed, else the seconds until the window resets.

    Fixed windows of the rate's period. On Redis (``CACHE_URL``) the count is one pipelined
    round trip, ``INCR`` + ``EXPIRE key period+1 NX`` (atomic per command; the first request of a
    window sets the expiry, later ones leave it), instead of Django's ``incr`` (``EXISTS`` +
    ``INCRBY``) plus ``add`` on a window's first request. Other caches use ``incr``/``add``.
    """
    limit, period = rate_parse(rate)
    window = int(time.time() // period)
    cache_key = f"rl:{scope}:{key}:{window}"
    client = _redis_client()
    if client is not None:
        pipe = client.pipeline(transaction=False)
        pipe.incr(cache.make_and_validate_key(cache_key))
        pipe.expire(cache.make_and_validate_key(cache_key), period + 1, nx=True)
        count = int(pipe.execute()[0])
    else:
        try:
            count = cache.incr(cache_key)
        except ValueError:  # first request of the window
            if cache.add(cache_key, 1, timeout=period + 1):
                count = 1
            else:  # another request created it meanwhile
                count = cache.incr(cache_key)
    if count <= limit:
        return 0
    return max(1, int(period - time.time() % period))


def client_address(request: HttpRequest) -> str:
    """The client IP. Behind a trusted proxy (``DJANGO_BEHIND_TLS_PROXY``), the address that
    proxy appended to X-Forwarded-For: the ``STUDYPLATFORM_PROXY_HOPS``-th from the right.
    Addresses further left are written by the client and can be forged."""
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        hops = [
            h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()
        ]
        depth = getattr(settings, "STUDYPLATFORM_PROXY_HOPS", 1)
        if len(hops) >= depth:
            return hops[-depth]
    return request.META.get("REMOTE_ADDR", "")


def too_many(retry_after: int) -> HttpResponse:
    response = HttpResponse(
        "Too many requests; please wait a moment and try again.",
        status=429,
        content_type="text/plain",
    )
    response["Retry-After"] = str(retry_after)
    return response


def participant_rate_limited(view):
    """Limit a view taking ``token`` by ``STUDYPLATFORM_PARTICIPANT_RATE`` per token."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        wait = rate_exceeded("p", str(kwargs.get("token")), settings.STUDYPLATFORM_PARTICIPANT_RATE)
        if wait:
            return too_many(wait)
        return view(request, *args, **kwargs)

    return wrapped


def enrol_rate_limited(view):
    """Limit the start link by ``STUDYPLATFORM_ENROL_RATE`` per client address."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        wait = rate_exceeded("enrol", client_address(request), settings.STUDYPLATFORM_ENROL_RATE)
        if wait:
            return too_many(wait)
        return view(request, *args, **kwargs)

    return wrapped
