"""What a webhook target may be: an https URL (plain http only to hosts in `media_fetch_allow_hosts`) whose host
is public, checked when the client gives it (the queue body's `webhook_url`, `PUT /webhooks`) and again, with
the address pinned, on every attempt (media/fetch.py `GuardedFetcher.post`), since DNS answers can change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from vidgate.errors import invalid

if TYPE_CHECKING:  # catalog/validation.py imports this module: keep what it pulls in small
    from vidgate.media.fetch import GuardedFetcher

MAX_URL_LENGTH = 2048


def url_problem(value: Any) -> str | None:
    """What is wrong with the shape of a webhook URL (None: nothing), before any address is looked up."""
    if not isinstance(value, str):
        return f"Expected string, received {type(value).__name__}"
    if not value.strip():
        return "must be a non-empty URL"
    if len(value) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    try:
        url = httpx.URL(value.strip())
    except (httpx.InvalidURL, ValueError, UnicodeError):
        return "is not a valid URL"
    if url.scheme not in ("http", "https"):
        return "must be an https URL"
    if not url.raw_host:
        return "the URL has no host"
    if url.userinfo:
        return "URLs with credentials (user:password@) are not accepted"
    return None


async def vetted_target(fetcher: GuardedFetcher, value: Any, *, field: str) -> str | None:
    """The webhook URL to store (None when none was given), or a 400 naming `field`: a bad shape, plain http to
    a host that is not allow-listed, or a host that is or resolves to a private, loopback or reserved address.
    Resolving it here, not only when sending, tells the client now rather than in a delivery log later."""
    if value is None:
        return None
    problem = url_problem(value)
    if problem is not None:
        raise invalid(field, problem)
    url = str(value).strip()
    await fetcher.vet_url(url, field=field, https_only=True)
    return url
