"""Who is writing: the token, its owner and the client's address, for the audit log.

The views set it once a request is authenticated (``views.common.require``, the console's
session); ``repository.record_event`` reads it, so every event written in the request's
transaction names the same actor. Outside a request (the CLI) nothing is set: the event's
actor string says who, and token and address stay empty.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


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
