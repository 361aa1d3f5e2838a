"""Tune a model you have in memory, with a metric of your own and DataLoaders, as in a notebook.

Each ``# %%`` cell runs as is in Jupyter or VS Code; as a script it runs top to bottom, offline:

    python examples/tune_in_memory.py                       # a small CNN on digits at 32 px, 24 trials
    python examples/tune_in_memory.py --tiny --out DIR      # what CI runs: a tinier CNN at 16 px, 6 trials

Flags: ``--tiny`` (the CI settings), ``--n-trials N``, ``--studies-dir DIR`` (default ``studies``),
``--out DIR`` (the export, default ``deploy-in-memory``). It prints the Pareto rows of the result's DataFrame,
then exports the pick (the fastest point within 1 point of macro-F1 of the model as given) and prints where, and
writes the report beside the export (``DIR.html``: its figures and tables name macro_f1).
"""

# %% 0. Settings (argv in a script; the defaults in a notebook, whose argv is the kernel's)
import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tuner

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--tiny", action="store_true", help="CI settings: 16 px, a tinier model, 6 trials")
parser.add_argument("--n-trials", type=int, default=None)
parser.add_argument("--studies-dir", default="studies")
parser.add_argument("--out", default="deploy-in-memory")
args, _ = parser.parse_known_args()
SIZE, WIDTH = (16, 16) if args.tiny else (32, 32)
N_TRIALS = args.n_trials or (6 if args.tiny else 24)

# %% 1. Data: any torch Dataset / DataLoader of (image, label); here scikit-learn's digits as 3-channel images
digits = load_digits()
images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
images = nn.functional.interpolate(images, size=(SIZE, SIZE), mode="bilinear").repeat(1, 3, 1, 1)
images = (images - 0.5) / 0.25  # preprocessed as the model expects: the tuner feeds these inputs as they are
labels = torch.from_numpy(digits.target).long()
order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
val_idx, train_idx = order[:360], order[360:]
train = DataLoader(TensorDataset(images[train_idx], labels[train_idx]), batch_size=64, shuffle=True)
val = DataLoader(TensorDataset(images[val_idx], labels[val_idx]), batch_size=128)


# %% 2. Model: your nn.Module (defined here, in __main__: the tuner traces it with torch.fx to rebuild it in
# the trials' process), trained as you train it
class SmallNet(nn.Module):
    def __init__(self, width: int, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


torch.manual_seed(0)
model = SmallNet(WIDTH)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
for _epoch in range(3 if args.tiny else 6):
    for x, y in train:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
model.eval()


# %% 3. Metric: macro-F1 of (logits, labels) torch tensors, higher is better
def macro_f1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = logits.argmax(1)
    scores = []
    for c in labels.unique():
        tp = ((predicted == c) & (labels == c)).sum().item()
        fp = ((predicted == c) & (labels != c)).sum().item()
        fn = ((predicted != c) & (labels == c)).sum().item()
        scores.append(2 * tp / max(1, 2 * tp + fp + fn))
    return float(np.mean(scores))


# %% 4. Tune: every trial really builds and measures; the metric is what the study calls accuracy. The space is
# a mapping like search_spaces/default.yaml (or a name / path of such a file); the objectives are the default
# ones: max accuracy, min per-sample latency, within 1 point of the model as given
space = {
    "placement": {"choices": ["torch-cpu", "ort-cpu", "ov-cpu"]},
    "precision": {
        "per": "placement",
        "choices": {"torch-cpu": ["fp32"], "ort-cpu": ["fp32", "int8"], "ov-cpu": ["fp32", "int8"]},
    },
    "prune_ratio": {"choices": [0.0, 0.25]},
    "batch_size": {"choices": [1, 8]},
    "threads": 1,
}
result = tuner.tune(
    model,
    train,
    val,
    metric=macro_f1,
    space=space,
    n_trials=N_TRIALS,
    studies_dir=args.studies_dir,
    study=f"in-memory-{SIZE}px",
    recover_steps=10 if args.tiny else 40,
    remeasure_rounds=1 if args.tiny else 3,
)

# %% 5. The result as a DataFrame: one row per trial, every param and metric, both latency figures
df = result.to_dataframe()
columns = [
    "trial",
    "placement",
    "precision",
    "prune_ratio",
    "batch_size",
    "accuracy",
    "top1",
    "per_sample_ms",
    "remeasured_per_sample_ms",
    "speedup",
]
print("Pareto rows (accuracy = macro-F1):")
print(df[df.pareto][columns].sort_values("per_sample_ms").to_string(index=False))

# %% 6. Export the pick: the fastest point within 1 point of macro-F1, in its runtime's own format
pick = result.best(max_drop=1)
exported = result.export(args.out, trial=pick.trial)
print(
    f"picked trial #{pick.trial} ({pick.candidate.placement} {pick.candidate.precision}, "
    f"{pick.speedup:.1f}x the baseline): exported {exported.artifact} to {exported.out}"
)

# %% 7. The report: one HTML page, in the metric's own name
page = f"{exported.out}.html"
result.report(page)
print(f"report: {page}")
