"""The ``openvino-ir`` export kind: the OpenVINO IR (``model.xml`` + ``model.bin``) saved from the ONNX file an
OpenVINO placement ran (kept beside it), with the compile config it was measured under; verify compiles it with
that config and checks it against what this machine's session would use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.artifact.check import Check, settings_text
from tuner.artifact.kinds.base import ExportKind, Saved, SaveJob
from tuner.artifact.kinds.onnx import Onnx, load_onnx
from tuner.artifact.kinds.prelude import prelude
from tuner.names import EXPORT_OPENVINO_IR, INPUT, IR_BIN_FILE, IR_XML_FILE, ONNX_FILE, OUTPUT, PLACEMENTS

if TYPE_CHECKING:
    from tuner.candidate import Candidate
    from tuner.dataset import Dataset
    from tuner.passes.chain import Built


class OpenVinoIR(ExportKind):
    name, runtime, files = EXPORT_OPENVINO_IR, "OpenVINO", (ONNX_FILE, IR_XML_FILE, IR_BIN_FILE)

    def serves(self, job: SaveJob) -> bool:
        return job.built.onnx_path is not None and PLACEMENTS[job.candidate.placement].runtime == "openvino"

    def save(self, job: SaveJob, directory: Path) -> Saved:
        from tuner.runtimes.openvino import model_config, read_model, save_ir

        Onnx().save(job, directory)
        save_ir(directory / ONNX_FILE, directory / IR_XML_FILE)
        c = job.candidate
        return Saved(
            IR_XML_FILE,
            details={
                "openvino": {
                    "read_from": ONNX_FILE,
                    "device": "CPU",
                    "compile_config": model_config(
                        read_model(directory / IR_XML_FILE), c.precision, int(job.metrics["threads"]), c.streams
                    ),
                }
            },
        )

    def load(self, directory: Path, config: dict[str, Any], candidate: Candidate, data: Dataset) -> Built:
        return load_onnx(directory, config, candidate)  # the runtime reads the IR from onnx_path as it is

    def readme_files(self, config: dict[str, Any]) -> list[str]:
        return [f"- `{IR_BIN_FILE}`: its weights", f"- `{ONNX_FILE}`: the same model as ONNX (what the study ran)"]

    def code(self, config: dict[str, Any]) -> list[str]:
        settings = config["artifact"]["openvino"]["compile_config"]
        return [
            *prelude(config, ["import numpy as np", "import openvino as ov"]),
            "core = ov.Core()",
            f'model = core.read_model("{IR_XML_FILE}")  # reads {IR_BIN_FILE} beside it',
            f'model.reshape({{"{INPUT}": list(x.shape)}})  # static shapes: compile for the batch size you run',
            f'compiled = core.compile_model(model, "CPU", {settings!r})',
            f'logits = compiled(x)[compiled.output("{OUTPUT}")]',
            "print([classes[i] for i in logits.argmax(1)])",
        ]

    def serve_code(self, config: dict[str, Any]) -> list[str]:
        requests = int(config["serving"]["requests"])
        return [
            f"queue = ov.AsyncInferQueue(compiled, {requests})  # one infer request each; OpenVINO queues the rest",
            "answers = {}",
            "def answered(request, i):  # runs in OpenVINO's thread as each request completes",
            "    answers[i] = request.get_output_tensor(0).data.copy()",
            "queue.set_callback(answered)",
            "for i, batch in enumerate(batches):",
            "    queue.start_async({0: batch}, i)  # returns at once while a request is free",
            "queue.wait_all()",
        ]

    def verify(self, session: Any, config: dict[str, Any], same_machine: bool) -> list[Check]:
        """Compiled as recorded (and as its README does), checked against the config this machine would use."""
        recorded = dict(config["artifact"]["openvino"]["compile_config"])
        ours, session.config = session.config, recorded
        return [
            Check(
                "OpenVINO compile config",
                settings_text(recorded),
                settings_text(ours),
                ours == recorded if same_machine else None,
                "the export's config is the one compiled and timed here",
            )
        ]
