"""Errors feedlab raises on purpose: each carries a message written for the person at the keyboard.

The command line prints ``str(error)`` and exits with status 2 for any :class:`FeedlabError`,
so a user never sees a traceback from deep inside a library for a problem with their input.
"""

from __future__ import annotations


class FeedlabError(Exception):
    """Base class of every error feedlab raises for bad input or a bad state of the store."""


class StoreLockedError(FeedlabError):
    """The database file is held by another process."""


class SchemaVersionError(FeedlabError):
    """The database was written by a different schema version than this toolkit reads."""


class ValidationError(FeedlabError):
    """Input data breaks the canonical schema; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str], *, source: str = "input"):
        self.problems = list(problems)
        self.source = source
        lines = [f"{source}: {len(self.problems)} problem(s) found; nothing was written."]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
