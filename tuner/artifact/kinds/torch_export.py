"""The ``torch.export`` export kind: the torch module of a torch placement as a ``torch.export`` program
(``model.pt2``) with a dynamic batch axis, checked to reload and reproduce the module's outputs before it is kept;
where torch.export cannot capture the module, the ``state_dict`` kind takes it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.artifact.kinds.base import ExportKind, Saved, SaveJob
from tuner.artifact.kinds.prelude import prelude
from tuner.errors import one_line
from tuner.names import EXPORT_TORCH_PROGRAM, PROGRAM_FILE

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tuner.candidate import Candidate
    from tuner.dataset import Dataset
    from tuner.passes.chain import Built


def torch_module(job: SaveJob) -> tuple[Any, Any, str]:
    """The rebuilt module on the CPU in eval mode, an example batch in its dtype, and that dtype's name."""
    import torch

    assert job.built.model is not None
    model = job.built.model.to("cpu").eval()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    example = torch.from_numpy(job.data.example(max(2, job.candidate.batch_size))).to(dtype)
    return model, example, str(dtype).replace("torch.", "")


def torch_serve_code(config: dict[str, Any]) -> list[str]:
    """README lines serving ``batches`` from threads that share the loaded ``module``."""
    dtype, streams = config["artifact"]["input"]["dtype"], int(config["serving"]["streams"])
    return [
        "from concurrent.futures import ThreadPoolExecutor",
        "",
        "def infer(batch):  # the threads share the module (inference only reads it)",
        "    with torch.inference_mode():",
        f"        return module(torch.from_numpy(batch).to(torch.{dtype})).float().numpy()",
        "",
        f"with ThreadPoolExecutor({streams}) as pool:  # {streams} stream(s), each with torch's intra-op threads",
        "    answers = list(pool.map(infer, batches))",
    ]


class TorchProgram(ExportKind):
    name, runtime, files = EXPORT_TORCH_PROGRAM, "PyTorch (torch.export)", (PROGRAM_FILE,)

    def serves(self, job: SaveJob) -> bool:
        return job.built.model is not None and job.torch_format == "export"

    def save(self, job: SaveJob, directory: Path) -> Saved | None:
        """torch.export the module with a dynamic batch axis and check it reloads; None where it does not."""
        import torch

        model, example, input_dtype = torch_module(job)
        try:
            dim = torch.export.Dim.DYNAMIC if hasattr(torch.export.Dim, "DYNAMIC") else torch.export.Dim("batch")
            with torch.no_grad():
                program = torch.export.export(model, (example,), dynamic_shapes=({0: dim},))
            torch.export.save(program, str(directory / PROGRAM_FILE))
            loaded = torch.export.load(str(directory / PROGRAM_FILE)).module()
            with torch.inference_mode():
                for x in (example, example[:1]):  # two batch sizes: the batch axis really is dynamic
                    want, got = model(x).float(), loaded(x).float()
                    if not torch.allclose(want, got, rtol=1e-3, atol=1e-3 * float(want.abs().max()) + 1e-5):
                        raise RuntimeError("the reloaded program's outputs differ from the module's")
            return Saved(PROGRAM_FILE, input_dtype)
        except Exception as err:  # noqa: BLE001 - torch.export fails in many ways; the state_dict always works
            _log.info(
                f"torch.export did not work ({one_line(err, 160)}); writing a state_dict and the "
                "config to rebuild the module instead"
            )
            (directory / PROGRAM_FILE).unlink(missing_ok=True)
            return None

    def load(self, directory: Path, config: dict[str, Any], candidate: Candidate, data: Dataset) -> Built:
        import torch

        from tuner.passes.chain import Built

        path = directory / config["artifact"]["file"]
        return Built(candidate, torch.export.load(str(path)).module(), None, 0, 0, path.stat().st_size)

    def code(self, config: dict[str, Any]) -> list[str]:
        dtype = config["artifact"]["input"]["dtype"]
        threads = int(config["metrics"]["export"].get("threads") or config["candidate"].get("threads") or 0)
        return [
            *prelude(config, ["import numpy as np", "import torch"]),
            *([f"torch.set_num_threads({threads})"] if threads else []),
            f'module = torch.export.load("{config["artifact"]["file"]}").module()',
            "with torch.inference_mode():",
            f"    logits = module(torch.from_numpy(x).to(torch.{dtype})).float().numpy()",
            "print([classes[i] for i in logits.argmax(1)])",
        ]

    def serve_code(self, config: dict[str, Any]) -> list[str]:
        return torch_serve_code(config)
