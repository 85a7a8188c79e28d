"""Answers that wait for I/O shared by many requests, without a task or a coroutine each.

With the session cache off (or missed), the requests presenting one token while its session is
loaded all wait for that one load (``SessionResolver.loading``). Each waited in a task of its own,
through a chain of five coroutines and a future fed by the load's. Here the load is one task
(``Shared.task``), and each request that waits for it is one callback that makes its answer
synchronously once the load has settled, as a cache hit makes it (``Later``): the same steps,
without the awaits between them.

``Shared`` is the outcome of one piece of I/O: settled once, by the task that does it, with a value
or an exception; ``subscribe(ready)`` has ``ready()`` called then, from that task, in the order
subscribed. ``later(shared, make)`` is what one request makes of it (a ``Later``): ``make()``,
called once ``shared`` has settled, reads ``shared.result()`` and gives the request's answer (or
raises what the answer cannot be made without). A layer that adds to the answer (the access log
around the decision, the decision around the judgement) replaces ``make`` with one that calls
the one it replaced (``wrapped``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
V = TypeVar("V")
W = TypeVar("W")

log = logging.getLogger("sidecar")


class Shared(Generic[T]):
    """The outcome of one piece of I/O done by ``task``, for the callbacks waiting on it."""

    __slots__ = ("_error", "_value", "_waiting", "settled", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.settled = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self._waiting: list[Callable[[], None]] = []

    def subscribe(self, ready: Callable[[], None]) -> None:
        """``ready()`` once settled (from the settling task; never from here)."""
        if self.settled:
            raise RuntimeError("subscribed to an outcome already settled")
        self._waiting.append(ready)

    def result(self) -> T | None:
        """The value; raises the I/O's exception instead when it failed."""
        if self._error is not None:
            raise self._error
        return self._value

    def settle(self, value: T | None = None, error: BaseException | None = None) -> None:
        """Settle with ``value`` (or ``error``) and call every subscriber. A subscriber that raises
        is a bug of its own: logged, and the others are still called."""
        self._value = value
        self._error = error
        self.settled = True
        # Dropped: a subscriber refers to its ``Later``, which refers to this (a cycle otherwise).
        waiting, self._waiting = self._waiting, []
        for ready in waiting:
            try:
                ready()
            except Exception:
                log.exception("an answer waiting for a shared load failed")


class Later(Generic[V]):
    """One request's answer, made by ``make()`` once ``shared`` has settled (module docstring).
    Made by ``later``; a layer around it replaces ``make`` with its own, which calls the one it
    replaced (``wrapped``): one object per waiting request, whatever the layers."""

    __slots__ = ("make", "shared")

    shared: Shared[Any]
    make: Callable[[], V]


_new = object.__new__


def later(shared: Shared[Any], make: Callable[[], V]) -> Later[V]:
    """``Later`` without a Python ``__init__`` (a frame and ``type.__call__``: ~3k instructions of
    each waiting request)."""
    made: Later[V] = _new(Later)
    made.shared = shared
    made.make = make
    return made


def wrapped(inner: Later[Any], make: Callable[[], W]) -> Later[W]:
    """``inner``, made by ``make`` now (a ``make`` that called ``inner.make``, taken before)."""
    outer = cast("Later[W]", inner)
    outer.make = make
    return outer
