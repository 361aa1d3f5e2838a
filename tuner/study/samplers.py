"""Which sampler proposes the next trial: the user's choice (--sampler), seeded, and a random draw after a repeat."""

from __future__ import annotations

import optuna

from tuner.errors import ConfigError

SAMPLERS = ("tpe", "nsga2", "gp", "random")


def make_sampler(name: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, n_trials // 4)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 4)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}.")


def next_sampler(sampler: optuna.samplers.BaseSampler, after_repeat: bool, seed: int) -> optuna.samplers.BaseSampler:
    """A sampler that proposed a candidate tried before has settled on what it knows: the next proposal is
    drawn at random instead (the repeat itself reused the earlier outcome and is not counted)."""
    return optuna.samplers.RandomSampler(seed=seed) if after_repeat else sampler
