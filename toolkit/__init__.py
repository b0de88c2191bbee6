"""feedlab: reproduce, measure and see how a multi-surface social app ranks content.

The package mirrors the ranking pipeline, one stage a module, data flowing one way:
``store`` (DuckDB interaction store) -> ``synth`` (a simulated world with ground truth) ->
``signals`` -> ``predict`` -> ``rank`` -> ``widgets``.
"""

__version__ = "0.1.0"
