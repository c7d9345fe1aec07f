"""Progress reporting for long calls: ``progress=`` takes a callable
``fn(done, total)`` (bytes) or a tqdm-compatible object (anything with
``update(n)``; its ``total`` is set when unset), or None.

Reports come in order, ``done`` never decreases, and the last one is
``(total, total)`` when the call succeeds.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from .errors import InvalidArgumentError

ProgressFn = Callable[[int, int], None]


class _Reporter:
    """Turns any accepted ``progress`` into fn(done, total), monotonic."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._tqdm = hasattr(target, "update") and not callable(target)
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        done = max(int(done), self._done)
        if self._tqdm:
            if not getattr(self._target, "total", None):
                self._target.total = int(total)
                refresh = getattr(self._target, "refresh", None)
                if callable(refresh):
                    refresh()
            if done > self._done:
                self._target.update(done - self._done)
        else:
            self._target(done, int(total))
        self._done = done


def reporter(progress: Any) -> Optional[ProgressFn]:
    """None, or a monotonic fn(done, total) for ``progress``."""
    if progress is None:
        return None
    if not callable(progress) and not hasattr(progress, "update"):
        raise InvalidArgumentError(
            f"progress must be a callable(done, total) or a tqdm-like object with update(n), not {type(progress).__name__}"
        )
    return _Reporter(progress)
