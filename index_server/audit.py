"""Who is writing: the token, its owner and the client's address, for the audit log.

The views set it once a request is authenticated (``views.common.require``, the console's
session); ``repository.record_event`` reads it, so every event written in the request's
transaction names the same actor. Outside a request (the CLI) nothing is set: the event's
actor string says who, and token and address stay empty.

Reading the log: :class:`EventFilter` is what the API (``GET /api/events``), the console's
``/console/audit`` page and ``wheelfarm audit`` filter by, made from a query string by
:func:`filter_from_args` (one parser for all three); ``repository.list_events`` runs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from packaging.utils import canonicalize_name


@dataclass(frozen=True)
class Actor:
    token_id: int | None = None
    owner: str | None = None
    address: str | None = None


NOBODY = Actor()
_current: ContextVar[Actor] = ContextVar("wheelfarm_actor", default=NOBODY)


def begin_request(address: str | None) -> None:
    """A new request: no token yet (contexts outlive requests in a worker thread)."""
    _current.set(Actor(address=(address or "")[:100] or None))


def authenticated(token_id: int | None, owner: str | None) -> None:
    _current.set(Actor(token_id, owner, _current.get().address))


def current() -> Actor:
    return _current.get()


def end_request() -> None:
    _current.set(NOBODY)


# === reading the log ==========================================================================


class BadFilter(ValueError):
    """A filter value that cannot be used (a 422 in the API, a 400 in the console)."""


@dataclass(frozen=True)
class EventFilter:
    action: str | None = None  # exact, or a prefix ending in "*"
    project: str | None = None
    actor: str | None = None
    owner: str | None = None
    token_id: int | None = None
    before: int | None = None  # paging: events with a smaller id
    since: datetime | None = None  # at or after
    until: datetime | None = None  # at or before


# "+02:00" in a query string someone typed unencoded arrives as " 02:00".
_SPACED_OFFSET = re.compile(r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$")


def parse_time(value: str, key: str) -> datetime:
    """An ISO 8601 time (a date alone is its midnight), in UTC; naive times are UTC."""
    try:
        moment = datetime.fromisoformat(_SPACED_OFFSET.sub(r"\1+\2", value.strip()))
    except ValueError:
        raise BadFilter(f"'{key}' must be an ISO 8601 time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _number(args: Mapping[str, str], key: str) -> int | None:
    value = (args.get(key) or "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadFilter(f"'{key}' must be a number") from None
    if not 0 <= number < 2**31:
        raise BadFilter(f"'{key}' is out of range")
    return number


# The query-string keys of a filter (``before`` pages; ``limit`` is the API's page size).
FILTER_KEYS = ("action", "project", "actor", "owner", "token_id", "since", "until")


def filter_from_args(args: Mapping[str, str]) -> EventFilter:
    """The filter a query string asks for; empty values are no filter."""

    def text(key: str) -> str | None:
        value = (args.get(key) or "").strip()
        if len(value) > 200:
            raise BadFilter(f"'{key}' is longer than 200 characters")
        return value or None

    project = text("project")
    since, until = text("since"), text("until")
    return EventFilter(
        action=text("action"),
        project=canonicalize_name(project) if project else None,
        actor=text("actor"),
        owner=text("owner"),
        token_id=_number(args, "token_id"),
        before=_number(args, "before"),
        since=parse_time(since, "since") if since else None,
        until=parse_time(until, "until") if until else None,
    )


def page_limit(args: Mapping[str, str], default: int = 100) -> int:
    limit = _number(args, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= 1000:
        raise BadFilter("'limit' must be between 1 and 1000")
    return limit
