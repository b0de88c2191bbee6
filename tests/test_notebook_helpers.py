"""toolkit.widgets.notebook: a notebook whose data is absent skips its later cells cleanly."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from toolkit.errors import FeedlabError
from toolkit.widgets.notebook import skip_remaining_cells


def test_later_cells_are_skipped_with_the_reason(capsys):
    shell = InteractiveShell.instance()
    try:
        shell.run_cell("x = 1")
        shell.run_cell("from toolkit.widgets.notebook import skip_remaining_cells\nskip_remaining_cells('no log'); after = 2")
        assert shell.user_ns["after"] == 2  # the calling cell runs to its end
        capsys.readouterr()
        result = shell.run_cell("x = 1 / 0\nraise SystemExit")
        assert result.success and shell.user_ns["x"] == 1
        assert capsys.readouterr().out.strip() == "skipped: no log"
        skip_remaining_cells("other reason", shell=shell)  # replaces, does not stack
        shell.run_cell("x = 5")
        assert capsys.readouterr().out.strip() == "skipped: other reason"
    finally:
        shell.input_transformers_post[:] = [t for t in shell.input_transformers_post if not hasattr(t, "_feedlab_skip_reason")]
        InteractiveShell.clear_instance()


def test_outside_ipython_is_a_clear_error():
    with pytest.raises(FeedlabError, match="inside an IPython kernel"):
        skip_remaining_cells("no log")
