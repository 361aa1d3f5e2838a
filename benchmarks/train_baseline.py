"""Train a baseline to convergence with the tuner's own training loop, for benchmarks that need a well-trained
model (`--weights`): one cosine schedule over --epochs passes of the train split, the validation top-1 printed
after every epoch so that the plateau is visible, the final weights saved.

    python benchmarks/train_baseline.py --data ../shared/data/imagenette-224 --resolution 128 --epochs 60 \
        --out studies/weights/resnet18-imagenette-128.pt

Data, model and normalization are resolved exactly as `python -m tuner` resolves them (tuner.workload), so
the saved weights are what a user would bring with `--weights`. The last line is one JSON object: the curve
(epoch, top-1), the best and final top-1, the wall time and the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_workload_args, machine_json, print_machine, workload_spec


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p)
    p.add_argument("--epochs", type=int, default=60, help="passes over the train split (default 60)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the tuner's baseline rate)")
    p.add_argument("--out", required=True, help="where to save the state_dict")
    args = p.parse_args(argv)
    fp = print_machine()

    import torch

    from tuner import models
    from tuner.data import load_dataset
    from tuner.train import steps_per_epoch, torch_accuracy, train
    from tuner.workload import BASELINE_LR

    spec = workload_spec(args)
    data = load_dataset(spec.data, spec.resolution, spec.mean, spec.std, spec.seed, Path(spec.cache_dir))
    torch.manual_seed(spec.seed)
    model = models.create_model(spec.model, data.num_classes)
    steps = args.epochs * steps_per_epoch(data)
    curve: list[tuple[int, float]] = []
    start = time.perf_counter()

    def on_epoch(step: int) -> None:
        acc = torch_accuracy(model, data)
        curve.append((step // steps_per_epoch(data), acc))
        print(f"epoch {curve[-1][0]:3d}  top-1 {acc:.2%}  ({time.perf_counter() - start:.0f} s)", flush=True)

    print(
        f"training {spec.model} on {data.name} at {data.resolution} px: {len(data.train)} train / "
        f"{len(data.val)} val images, {args.epochs} epochs = {steps} steps",
        flush=True,
    )
    train(model, data, steps, lr=args.lr or BASELINE_LR, seed=spec.seed, on_epoch=on_epoch)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    best = max(a for _, a in curve)
    print(f"saved {out}: final top-1 {curve[-1][1]:.2%}, best {best:.2%}")
    print(
        json.dumps(
            {
                "weights": str(out),
                "epochs": args.epochs,
                "steps": steps,
                "final": curve[-1][1],
                "best": best,
                "curve": curve,
                "seconds": time.perf_counter() - start,
                **machine_json(fp),
            }
        )
    )


if __name__ == "__main__":
    main()
