"""The Optuna sampler of a search, shared by the real tune and its dry run.

Both build it here from the same fields (`search.sampler`, `search.seed`,
`search.n_startup_trials`), so the dry run draws the trials the search will start.
"""

from __future__ import annotations

import optuna

from raylung.config.search_space import SearchSpace


def make_sampler(
    kind: str, seed: int, n_startup_trials: int, space: SearchSpace
) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        grid = {d.path: [d.label(c) for c in d.choices] for d in space.distributions}
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
