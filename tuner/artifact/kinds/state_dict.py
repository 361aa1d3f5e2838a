"""The ``state_dict`` export kind: the torch module's ``state_dict.pt`` and what it takes to rebuild the module
(``tuner.passes.chain.rebuild_module``): ``--torch-format state_dict``, and torch.export's fallback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.artifact.kinds.base import ExportKind, Saved, SaveJob
from tuner.artifact.kinds.prelude import prelude
from tuner.artifact.kinds.torch_export import torch_module, torch_serve_code
from tuner.names import EXPORT_STATE_DICT, STATE_FILE

if TYPE_CHECKING:
    from tuner.candidate import Candidate
    from tuner.dataset import Dataset
    from tuner.passes.chain import Built


def _off_default(candidate: dict[str, Any]) -> dict[str, Any]:
    """The candidate's keys off their defaults: what the rebuild needs, readable by a tuner that lacks later keys."""
    from tuner.candidate import Candidate

    defaults = Candidate().to_dict()
    return {k: v for k, v in candidate.items() if k not in defaults or v != defaults[k]}


class StateDict(ExportKind):
    name, runtime, files = EXPORT_STATE_DICT, "PyTorch (state_dict, rebuilt with the tuner package)", (STATE_FILE,)

    def serves(self, job: SaveJob) -> bool:
        return job.built.model is not None

    def save(self, job: SaveJob, directory: Path) -> Saved:
        import torch

        model, _, input_dtype = torch_module(job)
        torch.save(model.state_dict(), str(directory / STATE_FILE))
        c, spec = job.candidate, job.spec
        return Saved(
            STATE_FILE,
            input_dtype,
            {
                "rebuild": {
                    "model": spec.student if c.student else spec.model,
                    "num_classes": job.data.num_classes,
                    "prune_ratio": c.prune_ratio,
                    "drop_blocks": c.drop_blocks,
                    "fold_bn": c.fold_bn,
                    "precision": c.precision,
                    "steps": "create_model(model, num_classes) -> drop the blocks and prune the groups the state_dict's "
                    "shapes say -> fold_bn -> cast(precision) -> load_state_dict",
                }
            },
        )

    def load(self, directory: Path, config: dict[str, Any], candidate: Candidate, data: Dataset) -> Built:
        """The module rebuilt by ``tuner.passes.chain.rebuild_module`` from its state_dict."""
        import torch

        from tuner import models
        from tuner.passes.chain import Built, rebuild_module

        r, path = config["artifact"]["rebuild"], directory / config["artifact"]["file"]
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        module = rebuild_module(
            models.create_model(r["model"], int(r["num_classes"])), candidate, torch.from_numpy(data.example(1)), state
        )
        return Built(candidate, module, None, 0, 0, path.stat().st_size)

    def code(self, config: dict[str, Any]) -> list[str]:
        r, state = config["artifact"]["rebuild"], config["artifact"]["file"]
        return [
            *prelude(
                config,
                [
                    "import numpy as np",
                    "import torch",
                    "",
                    "from tuner.passes.chain import rebuild_module  # the tuner package rebuilds the module",
                    "from tuner.candidate import Candidate",
                    "from tuner.models import create_model",
                ],
            ),
            f"candidate = Candidate.from_dict({_off_default(config['candidate'])!r})",
            f"module = rebuild_module(create_model({r['model']!r}, {int(r['num_classes'])}), candidate,",
            "                        torch.from_numpy(x[:1]),",
            f'                        torch.load("{state}", map_location="cpu", weights_only=True))',
            "with torch.inference_mode():",
            (
                f"    logits = module(torch.from_numpy(x).to(torch.{config['artifact']['input']['dtype']}))"
                ".float().numpy()"
            ),
            "print([classes[i] for i in logits.argmax(1)])",
        ]

    def serve_code(self, config: dict[str, Any]) -> list[str]:
        return torch_serve_code(config)
