"""What one study runs with: its name and storage, the search space, objectives, workload, sampler and limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuner.metric import TOP1_METRIC, Metric

if TYPE_CHECKING:
    from tuner.objectives import Objectives
    from tuner.space import SearchSpace
    from tuner.workload_spec import WorkloadSpec


@dataclass(frozen=True)
class StudySettings:
    name: str
    storage: str
    space: SearchSpace
    objectives: Objectives
    workload: WorkloadSpec
    sampler: str = "tpe"
    seed: int = 0
    n_trials: int = 20
    timeout: float | None = None
    heartbeat: float = 10.0  # seconds; a trial silent for 3 heartbeats is stale (its worker died)
    max_retries: int = 1  # how often a stale or crashed trial is run again
    allow_mixed_hardware: bool = False
    trial_timeout: float | None = None  # wall-clock seconds per trial; None: default_trial_timeout(setup time)
    metric: Metric = TOP1_METRIC  # what the study calls accuracy: top-1, or a function of the user's (tuner.metric)
    corruptions: bool = False  # --corruptions: score every trial on the corruption set (tuner.corruptions) too

    @property
    def measures_corruption(self) -> bool:
        """Asked for, or needed by the objectives (corruption_drop): the extra pass is paid only then."""
        return self.corruptions or self.objectives.uses_corruption
