"""Interactive widgets (ipywidgets 8) for notebooks: tune a ranking policy, look inside the predictors.

:class:`WeightTuner` moves a surface's action weights and rules and shows, at once, one viewer's
ranking, how it moved against the default policy and what the policy does to a population of
viewers. :class:`SignalImportance` shows which signals the action models lean on, overall and
for one post. Both are plain Python objects around ipywidgets controls whose observers run
synchronously, so scripts and tests drive them without a browser.

Example
-------
>>> from toolkit.widgets import SignalImportance, WeightTuner
>>> WeightTuner("data/feedlab.duckdb", "explore")  # doctest: +SKIP
>>> SignalImportance("data/feedlab.duckdb", "explore")  # doctest: +SKIP
"""

from toolkit.widgets.importance import SignalImportance
from toolkit.widgets.tuner import RuleControl, WeightTuner, most_active_viewers

__all__ = ["RuleControl", "SignalImportance", "WeightTuner", "most_active_viewers"]
