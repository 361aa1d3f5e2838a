"""The Optuna side of the tuner: ``storage`` (where studies live, opening them, annotations), ``counts`` (what
a study's trials add up to) and ``loop`` (the objective and the run loop). Only this package and
``tuner.space`` touch ``optuna.Trial``."""
