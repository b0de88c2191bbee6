"""Notebook helpers: what a notebook does when the data it explains is not on this machine.

A notebook about a public dataset that lives outside the repository (the KuaiRand log, say)
must still run top to bottom where the file is absent, in a fresh clone or under nbval: it says
where to get the data, then every later cell is skipped with a one-line message instead of
failing on a missing file.

Example
-------
>>> from toolkit.widgets.notebook import skip_remaining_cells
>>> skip_remaining_cells("no KuaiRand log here")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import FeedlabError

#: Marks the transformer this module installs, so a second call replaces it instead of stacking.
_MARK = "_feedlab_skip_reason"


def skip_remaining_cells(reason: str, *, shell: Any = None) -> None:
    """Skip every cell run after this one in the IPython kernel, each printing ``skipped: <reason>``.

    Installs an IPython input transformer that replaces the source of each later cell; the cell
    that calls it runs to its end. ``shell`` defaults to the running IPython shell; outside
    IPython this is a :class:`~toolkit.errors.FeedlabError`. Restart the kernel to run cells again.

    Example
    -------
    >>> if not log.exists():  # doctest: +SKIP
    ...     skip_remaining_cells(f"{log} not found")
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython comes with JupyterLab
            get_ipython = lambda: None  # noqa: E731
        shell = get_ipython()
    if shell is None:
        raise FeedlabError("skip_remaining_cells works inside an IPython kernel (a notebook) only")
    message = f"skipped: {reason}"

    def skip(lines: list[str]) -> list[str]:
        return [f"print({message!r})\n"]

    setattr(skip, _MARK, reason)
    transformers = shell.input_transformers_post
    transformers[:] = [t for t in transformers if not hasattr(t, _MARK)] + [skip]
