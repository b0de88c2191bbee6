"""The simulated world: a seeded social app whose every action has a known true probability.

Build one into a store with :func:`build_world` (or ``feedlab synth``); get it as polars
DataFrames with :func:`simulate_world`. The generative model is documented in
``docs/simulation.md`` and in the modules: :mod:`~toolkit.synth.world` (accounts, graph, posts),
:mod:`~toolkit.synth.simulate` (sessions, candidates, logging policy), :mod:`~toolkit.synth.truth`
(the ground-truth action model) and :mod:`~toolkit.synth.inauthentic` (bought engagement).
"""

from toolkit.synth.build import build_world, write_world
from toolkit.synth.config import SynthConfig
from toolkit.synth.simulate import simulate, simulate_world

__all__ = ["SynthConfig", "build_world", "simulate", "simulate_world", "write_world"]
