"""Exceptions every package shares, and the check that a frame has the columns a step needs."""

from __future__ import annotations

from typing import Iterable


class MissingColumnsError(ValueError):
    """A frame lacks columns a step needs: the message names them and the columns present."""


def require_columns(df, columns: Iterable[str], what: str,
                    error: type[Exception] = MissingColumnsError) -> None:
    """Raise ``error`` naming the ``columns`` that ``df`` (a Spark or pandas frame) lacks."""
    present = list(df.columns)
    missing = [c for c in columns if c not in present]
    if missing:
        raise error(f"{what} lacks columns {missing}; it has {present}")


class WarehouseError(RuntimeError):
    """The warehouse cannot take writes: its path is a file, or it is not writable. The message
    names the path and the cause."""


class ConcurrentWriteError(RuntimeError):
    """Another run committed to a table this run was writing (a Delta conflict): nothing of this
    run's write was committed. The message names the table and what to do."""
