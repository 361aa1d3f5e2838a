"""The ``onnx`` export kind: the ONNX file an ONNX Runtime placement ran (``model.onnx``), loaded by ONNX Runtime
with the recorded graph optimization level, threads and execution provider."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.artifact.kinds.base import ExportKind, Saved, SaveJob
from tuner.artifact.kinds.prelude import prelude
from tuner.names import EXPORT_ONNX, INPUT, ONNX_FILE, OUTPUT, PLACEMENTS

if TYPE_CHECKING:
    from tuner.candidate import Candidate
    from tuner.dataset import Dataset
    from tuner.passes.chain import Built

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def load_onnx(directory: Path, config: dict[str, Any], candidate: Candidate) -> Built:
    """A model file its runtime reads as is (an ONNX file, an OpenVINO IR) as a ``Built``."""
    from tuner.passes.chain import Built

    path = directory / config["artifact"]["file"]
    return Built(candidate, None, path, 0, 0, path.stat().st_size)


class Onnx(ExportKind):
    name, runtime, files = EXPORT_ONNX, "ONNX Runtime", (ONNX_FILE,)

    def serves(self, job: SaveJob) -> bool:
        return job.built.onnx_path is not None

    def save(self, job: SaveJob, directory: Path) -> Saved:
        assert job.built.onnx_path is not None
        shutil.copyfile(job.built.onnx_path, directory / ONNX_FILE)
        return Saved(ONNX_FILE)

    def load(self, directory: Path, config: dict[str, Any], candidate: Candidate, data: Dataset) -> Built:
        return load_onnx(directory, config, candidate)

    def code(self, config: dict[str, Any]) -> list[str]:
        c = config["candidate"]
        device = PLACEMENTS[c["placement"]].device
        threads = int(config["metrics"]["export"].get("threads") or c.get("threads") or 0)
        return [
            *prelude(config, ["import numpy as np", "import onnxruntime as ort"]),
            "options = ort.SessionOptions()",
            f"options.graph_optimization_level = ort.GraphOptimizationLevel.{_ORT_LEVELS[c['graph_opt']]}",
            f"options.intra_op_num_threads = {threads}",
            (
                f'session = ort.InferenceSession("{config["artifact"]["file"]}", options, '
                f'providers=["{PROVIDERS[device]}"])'
            ),
            f'logits = session.run(["{OUTPUT}"], {{"{INPUT}": x}})[0]',
            "print([classes[i] for i in logits.argmax(1)])",
        ]

    def serve_code(self, config: dict[str, Any]) -> list[str]:
        c, streams = config["candidate"], int(config["serving"]["streams"])
        return [
            "import queue",
            "from concurrent.futures import ThreadPoolExecutor",
            "",
            "sessions = queue.SimpleQueue()  # one session per stream, each with its own intra-op threads",
            f"for _ in range({streams}):",
            (
                f'    sessions.put(ort.InferenceSession("{config["artifact"]["file"]}", options, '
                f'providers=["{PROVIDERS[PLACEMENTS[c["placement"]].device]}"]))'
            ),
            "",
            "def infer(batch):",
            "    s = sessions.get()",
            "    try:",
            f'        return s.run(["{OUTPUT}"], {{"{INPUT}": batch}})[0]',
            "    finally:",
            "        sessions.put(s)",
            "",
            (
                f"with ThreadPoolExecutor({int(config['serving']['requests'])}) as pool:  "
                "# requests beyond the streams wait for a session"
            ),
            "    answers = list(pool.map(infer, batches))",
        ]
