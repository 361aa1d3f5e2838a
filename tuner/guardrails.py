"""What compression forgets, measured against the baseline from the validation predictions a trial already makes:
the worst class's accuracy drop, the flip rate (images predicted otherwise than the baseline did) and the expected
calibration error. Torch-free numpy: the trial's process computes the figures from its top-1 pass (no second pass
over the data), the study's process reads and checks them.

Why these (issue 30): top-1 can hold while single classes collapse or many answers change (Hooker et al. 2019,
arXiv 1911.05248). Units: ``worst_class_drop`` is a drop, in percentage points like every drop
(``tuner.names.DROP_UNIT``); the flip rates, ECE and its increase are shares of 0..1, as usually quoted.

Early stop: the flips and each class's errors only accumulate, so a partial count bounds the whole split's
figure from below and a trial bound to break a ``max`` on ``worst_class_drop``, ``flip_rate`` or
``flip_rate_correct`` stops early (``Tally.add``). ECE cannot stop early: later images can move it either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Every figure a trial records from its predictions, as named in metrics dicts and objectives files.
GUARD_METRICS = ("worst_class_drop", "flip_rate", "flip_rate_correct", "ece", "ece_increase")
# The ones whose partial count bounds the whole (a ``max`` on them can stop a trial early).
BOUNDED_METRICS = ("worst_class_drop", "flip_rate", "flip_rate_correct")
ECE_BINS = 15  # equal-width confidence bins, as torchmetrics' and Guo et al.'s (2017) ECE
EPS = 1e-9  # a bound met exactly is met, despite float rounding
FLIP_SAMPLE = 12  # flipped images a trial records (index, the baseline's class, its own): the report's thumbnails


def softmax_confidence(logits: np.ndarray) -> np.ndarray:
    """The top class's softmax probability per row, computed stably in float64 (fp16/int8 logits included)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return 1.0 / np.exp(z).sum(axis=1)  # exp(max - max) = 1 over the sum


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins [k/bins, (k+1)/bins) (1.0 in the last) of the bin's share of images
    times |its accuracy - its mean confidence| (L1 ECE, Guo et al. 2017)."""
    if len(confidence) == 0:
        return 0.0
    index = np.minimum((np.asarray(confidence) * bins).astype(np.int64), bins - 1)
    gap = np.bincount(index, weights=np.asarray(correct, dtype=np.float64), minlength=bins) - np.bincount(
        index, weights=confidence, minlength=bins
    )  # per bin: sum(correct) - sum(confidence)
    return float(np.abs(gap).sum() / len(confidence))


def class_accuracy(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Top-1 per class (recall), NaN for a class without images."""
    total = np.bincount(labels, minlength=num_classes).astype(np.float64)
    right = np.bincount(labels[predicted == labels], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, right / np.maximum(total, 1), np.nan)


@dataclass(frozen=True)
class Predictions:
    """What one model predicted on one split, image by image in the split's order."""

    labels: np.ndarray  # int64 N
    predicted: np.ndarray  # int64 N: the top-1 class
    confidence: np.ndarray  # float64 N: its softmax probability
    num_classes: int

    @classmethod
    def of_logits(cls, logits: np.ndarray, labels: np.ndarray) -> Predictions:
        return cls(
            np.asarray(labels, dtype=np.int64),
            np.asarray(logits).argmax(axis=1).astype(np.int64),
            softmax_confidence(logits),
            int(np.asarray(logits).shape[1]),
        )

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def class_accuracy(self) -> np.ndarray:
        return class_accuracy(self.predicted, self.labels, self.num_classes)

    @property
    def ece(self) -> float:
        return expected_calibration_error(self.confidence, self.correct)

    def record(self) -> dict[str, object]:
        """The plain figures a study keeps of its reference: per-class top-1 (None: no images) and ECE."""
        return {
            "class_accuracy": [None if np.isnan(a) else round(float(a), 6) for a in self.class_accuracy],
            "ece": self.ece,
        }


def figures(trial: Predictions, baseline: Predictions) -> dict[str, float | int | list[float | None]]:
    """The guardrail figures of ``trial`` against ``baseline`` (the same split, the same order)."""
    if len(trial.labels) != len(baseline.labels) or not np.array_equal(trial.labels, baseline.labels):
        raise ValueError(
            f"the trial's {len(trial.labels)} labels are not the baseline's {len(baseline.labels)}: "
            "its predictions are of another split or order"
        )
    drops = 100.0 * (baseline.class_accuracy - trial.class_accuracy)  # tuner.metric.drop_points, per class
    worst = int(np.nanargmax(drops)) if np.isfinite(drops).any() else -1
    flipped = trial.predicted != baseline.predicted
    was_right = baseline.correct
    ece = trial.ece
    return {
        "worst_class_drop": float(drops[worst]) if worst >= 0 else 0.0,
        "worst_class": worst,
        "flipped": flipped_sample(flipped, baseline.predicted, trial.predicted),
        "flip_rate": float(flipped.mean()) if len(flipped) else 0.0,
        "flip_rate_correct": float(flipped[was_right].mean()) if was_right.any() else 0.0,
        "ece": ece,
        "ece_increase": ece - baseline.ece,
        "class_accuracy": [None if np.isnan(a) else round(float(a), 6) for a in trial.class_accuracy],
    }


def flipped_sample(
    flipped: np.ndarray, baseline: np.ndarray, trial: np.ndarray, n: int = FLIP_SAMPLE
) -> list[list[int]]:
    """Up to ``n`` flipped images as [index in the split, the baseline's class, the trial's class], spread evenly
    over the split (its images are in class order: the first ``n`` would show one class)."""
    where = np.flatnonzero(flipped)
    if len(where) > n:
        where = where[np.unique(np.linspace(0, len(where) - 1, n).round().astype(np.int64))]
    return [[int(i), int(baseline[i]), int(trial[i])] for i in where]


class Tally:
    """A trial's predictions collected batch by batch during its top-1 pass; with a ``baseline`` and ``limits``
    (metric -> max, of ``BOUNDED_METRICS``), ``add`` says when the images seen so far already break a limit."""

    def __init__(self, baseline: Predictions | None = None, limits: dict[str, float] | None = None):
        self.baseline = baseline
        self.limits = {m: v for m, v in (limits or {}).items() if m in BOUNDED_METRICS}
        self.seen = 0
        self.num_classes = baseline.num_classes if baseline is not None else 0
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (labels, predicted, confidence)
        self._flips = self._flips_of_right = 0
        self._class_wrong = np.zeros(self.num_classes, dtype=np.int64)
        if baseline is not None:  # computed once: ``add`` runs per batch, batch 1 included
            self._base_correct = baseline.correct
            self._base_right = max(int(self._base_correct.sum()), 1)
            self._class_total = np.bincount(baseline.labels, minlength=baseline.num_classes)
            self._base_class_accuracy = baseline.class_accuracy

    def add(self, logits: np.ndarray, labels: np.ndarray) -> str | None:
        """Take one batch (the split's next rows); the reason the trial cannot meet its limits, or None."""
        logits, labels = np.asarray(logits), np.asarray(labels, dtype=np.int64)
        predicted = logits.argmax(axis=1).astype(np.int64)
        self.num_classes = max(self.num_classes, int(logits.shape[1]))
        rows = slice(self.seen, self.seen + len(labels))
        self.seen += len(labels)
        self._parts.append((labels, predicted, softmax_confidence(logits)))
        if self.baseline is None or not self.limits:
            return None
        base = self.baseline
        flipped = predicted != base.predicted[rows]
        self._flips += int(flipped.sum())
        self._flips_of_right += int((flipped & self._base_correct[rows]).sum())
        wrong = labels[predicted != labels]
        np.add.at(self._class_wrong, wrong, 1)
        return self._broken(len(base.labels), wrong)

    def _broken(self, n: int, wrong: np.ndarray) -> str | None:
        bounds = {
            "flip_rate": self._flips / max(n, 1),
            "flip_rate_correct": self._flips_of_right / self._base_right,
            "worst_class_drop": float("-inf"),
        }
        if "worst_class_drop" in self.limits and len(wrong):  # only the classes with a new error can newly break it
            total = self._class_total[wrong]  # > 0: each holds this batch's image
            at_most = (total - self._class_wrong[wrong]) / total
            bounds["worst_class_drop"] = float(np.max(100.0 * (self._base_class_accuracy[wrong] - at_most)))
        for metric, limit in self.limits.items():
            if bounds[metric] > limit + EPS:
                unit = " points" if metric == "worst_class_drop" else ""
                return (
                    f"stopped after {self.seen} of {n} validation images: {metric} is at least "
                    f"{bounds[metric]:.4g}{unit} already, above the {limit:g}{unit} allowed"
                )
        return None

    def predictions(self) -> Predictions:
        """Everything taken so far (the whole split once the pass ends)."""
        if not self._parts:
            return Predictions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), self.num_classes)
        labels, predicted, confidence = (np.concatenate(x) for x in zip(*self._parts))
        return Predictions(labels, predicted, confidence, self.num_classes)
