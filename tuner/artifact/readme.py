"""The README.md of an export directory: what the files are, the preprocessing, and the exact lines that load the
artifact in its own runtime and print a prediction (written from the export's ``config.yaml`` contents, so the
lines carry the recorded mean, std, classes, input and output names and runtime settings)."""

from __future__ import annotations

from typing import Any

from tuner.metric import top1_of
from tuner.names import CONFIG_FILE, INPUT, IR_BIN_FILE, IR_XML_FILE, ONNX_FILE, OUTPUT, PLACEMENTS

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_ORT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


def _prelude(config: dict[str, Any], imports: list[str]) -> list[str]:
    """Imports, then the recorded normalization and an input batch: RGB uint8 images -> NCHW float32."""
    data = config["data"]
    size = int(data["resolution"])
    if data.get("preprocessed"):  # float inputs given to tuner.tune ready for the model: no normalization here
        return [*imports, "", f"H = W = {size}", f"classes = {[str(c) for c in data['classes']]}", "",
                "# Your inputs, N x 3 x H x W float32, preprocessed exactly as the data the tuner was given",
                "x = np.zeros((1, 3, H, W), np.float32)", ""]
    return [*imports, "",
            f"H = W = {size}",
            f"mean = np.array({[round(float(v), 8) for v in data['mean']]}, np.float32).reshape(1, 3, 1, 1)",
            f"std = np.array({[round(float(v), 8) for v in data['std']]}, np.float32).reshape(1, 3, 1, 1)",
            f"classes = {[str(c) for c in data['classes']]}",
            "",
            "# Your images, RGB uint8, N x H x W x 3: centre-cropped to a square and resized (bilinear) to H x W,",
            "# e.g. np.stack([np.asarray(Image.open(p).convert('RGB').resize((W, H), Image.BILINEAR)) for p in paths])",
            "pixels = np.zeros((1, H, W, 3), np.uint8)",
            "x = ((pixels.transpose(0, 3, 1, 2) / 255.0 - mean) / std).astype(np.float32)  # NCHW float32",
            ""]


def _onnxruntime(config: dict[str, Any]) -> list[str]:
    c = config["candidate"]
    device = PLACEMENTS[c["placement"]].device
    threads = int(config["metrics"]["export"].get("threads") or c.get("threads") or 0)
    return [*_prelude(config, ["import numpy as np", "import onnxruntime as ort"]),
            "options = ort.SessionOptions()",
            f"options.graph_optimization_level = ort.GraphOptimizationLevel.{_ORT_LEVELS[c['graph_opt']]}",
            f"options.intra_op_num_threads = {threads}",
            f'session = ort.InferenceSession("{ONNX_FILE}", options, providers=["{_PROVIDERS[device]}"])',
            f'logits = session.run(["{OUTPUT}"], {{"{INPUT}": x}})[0]',
            "print([classes[i] for i in logits.argmax(1)])"]


def _openvino(config: dict[str, Any]) -> list[str]:
    settings = config["artifact"]["openvino"]["compile_config"]
    return [*_prelude(config, ["import numpy as np", "import openvino as ov"]),
            "core = ov.Core()",
            f'model = core.read_model("{IR_XML_FILE}")  # reads {IR_BIN_FILE} beside it',
            f'model.reshape({{"{INPUT}": list(x.shape)}})  # static shapes: compile for the batch size you run',
            f"compiled = core.compile_model(model, \"CPU\", {settings!r})",
            f'logits = compiled(x)[compiled.output("{OUTPUT}")]',
            "print([classes[i] for i in logits.argmax(1)])"]


def _torch_export(config: dict[str, Any], program: str) -> list[str]:
    dtype = config["artifact"]["input"]["dtype"]
    threads = int(config["metrics"]["export"].get("threads") or config["candidate"].get("threads") or 0)
    return [*_prelude(config, ["import numpy as np", "import torch"]),
            *([f"torch.set_num_threads({threads})"] if threads else []),
            f'module = torch.export.load("{program}").module()',
            "with torch.inference_mode():",
            f"    logits = module(torch.from_numpy(x).to(torch.{dtype})).float().numpy()",
            "print([classes[i] for i in logits.argmax(1)])"]


def _off_default(candidate: dict[str, Any]) -> dict[str, Any]:
    """The candidate's keys off their defaults: what the rebuild needs, readable by a tuner that lacks later keys."""
    from tuner.candidate import Candidate

    defaults = Candidate().to_dict()
    return {k: v for k, v in candidate.items() if k not in defaults or v != defaults[k]}


def _state_dict(config: dict[str, Any], state: str) -> list[str]:
    r = config["artifact"]["rebuild"]
    return [*_prelude(config, ["import numpy as np", "import torch", "",
                               "from tuner.build import rebuild_module  # the tuner package rebuilds the module",
                               "from tuner.candidate import Candidate", "from tuner.models import create_model"]),
            f"candidate = Candidate.from_dict({_off_default(config['candidate'])!r})",
            f"module = rebuild_module(create_model({r['model']!r}, {int(r['num_classes'])}), candidate,",
            "                        torch.from_numpy(x[:1]),",
            f'                        torch.load("{state}", map_location="cpu", weights_only=True))',
            "with torch.inference_mode():",
            (f"    logits = module(torch.from_numpy(x).to(torch.{config['artifact']['input']['dtype']}))"
            ".float().numpy()"),
            "print([classes[i] for i in logits.argmax(1)])"]


def _concurrent(config: dict[str, Any]) -> bool:
    serving = config.get("serving") or {}
    return serving.get("streams", 1) > 1 or serving.get("requests", 1) > 1


def code_lines(config: dict[str, Any]) -> list[str]:
    """The Python lines that load and run the export's native artifact and print a prediction."""
    art = config["artifact"]
    if art["kind"] == "openvino-ir":
        return _openvino(config)
    if art["kind"] == "onnx":
        return _onnxruntime(config)
    if art["kind"] == "torch.export":
        return _torch_export(config, art["file"])
    return _state_dict(config, art["file"])


def _serve_code(config: dict[str, Any]) -> list[str]:
    """Lines that serve many requests at once, as measured: appended to ``code_lines`` (``batches``: your requests,
    each an N x 3 x H x W float32 array like ``x``)."""
    art, serving = config["artifact"], config["serving"]
    streams, requests = int(serving["streams"]), int(serving["requests"])
    head = ["", f"# Serve as measured: {streams} stream(s) at once, {requests} request(s) in flight.",
            "batches = [x] * 16  # your requests, each N x 3 x H x W float32"]
    if art["kind"] == "openvino-ir":
        return [*head,
                f"queue = ov.AsyncInferQueue(compiled, {requests})  # one infer request each; OpenVINO queues the rest",
                "answers = {}",
                "def answered(request, i):  # runs in OpenVINO's thread as each request completes",
                "    answers[i] = request.get_output_tensor(0).data.copy()",
                "queue.set_callback(answered)",
                "for i, batch in enumerate(batches):",
                "    queue.start_async({0: batch}, i)  # returns at once while a request is free",
                "queue.wait_all()"]
    if art["kind"] == "onnx":
        c = config["candidate"]
        return [*head, "import queue", "from concurrent.futures import ThreadPoolExecutor", "",
                "sessions = queue.SimpleQueue()  # one session per stream, each with its own intra-op threads",
                f"for _ in range({streams}):",
                (f'    sessions.put(ort.InferenceSession("{ONNX_FILE}", options, '
                 f'providers=["{_PROVIDERS[PLACEMENTS[c["placement"]].device]}"]))'),
                "",
                "def infer(batch):",
                "    s = sessions.get()",
                "    try:",
                f'        return s.run(["{OUTPUT}"], {{"{INPUT}": batch}})[0]',
                "    finally:",
                "        sessions.put(s)",
                "",
                f"with ThreadPoolExecutor({requests}) as pool:  # requests beyond the streams wait for a session",
                "    answers = list(pool.map(infer, batches))"]
    dtype = art["input"]["dtype"]
    return [*head, "from concurrent.futures import ThreadPoolExecutor", "",
            "def infer(batch):  # the threads share the module (inference only reads it)",
            "    with torch.inference_mode():",
            f"        return module(torch.from_numpy(batch).to(torch.{dtype})).float().numpy()",
            "",
            f"with ThreadPoolExecutor({streams}) as pool:  # {streams} stream(s), each with torch's intra-op threads",
            "    answers = list(pool.map(infer, batches))"]


def _serving_text(config: dict[str, Any]) -> list[str]:
    serving, m = config["serving"], config["metrics"]["export"]
    text = (f"Streams {serving['streams']}, requests in flight {serving['requests']}, batch {serving['batch_size']}, "
            f"threads per stream {serving['threads']}"
            + (f" (the runtime reports {', '.join(f'{k} {v}' for k, v in serving['runtime'].items())})"
               if serving.get("runtime") else "") + ".")
    if serving.get("load"):
        text += (f" Under load: {m['load_throughput']:.0f} samples/s with {serving['requests']} requests in flight "
                 f"(p50 {m['load_p50_ms']:.3f}, p95 {m['load_p95_ms']:.3f} ms per request); requests arriving at "
                 f"Poisson times at {serving['load']['open_rate_per_s']:.0f} per second ("
                 + ("a rate given" if serving["load"].get("open_rate") else
                    f"{serving['load'].get('utilisation', 0.5):.0%} of that rate") + "): "
                 f"p95 {m['open_p95_ms']:.3f} ms. "
                 "`tuner verify .` re-checks them under the same load.")
    return ["## Serve it as measured", "", text, ""]


def _accuracy_words(metric: str, m: dict[str, Any]) -> str:
    """``Top-1 accuracy 91.20%``, or the user's metric by name with top-1 beside it."""
    if metric == "top-1 accuracy":
        return f"Top-1 accuracy {top1_of(m):.2%}"
    return f"{metric} {m['accuracy']:.4f} (top-1 {top1_of(m):.2%})"


def _holdout_lines(held: dict[str, Any] | None) -> list[str]:
    """What the held-out split (images the search never saw) says of the model against the unchanged one."""
    if not held or "flip_rate" not in held:
        return []
    return [(f"On {held['images']} held-out images the search never saw: top-1 {held['accuracy']:.2%}, "
            f"{held['accuracy_drop']:.2f} points below the unchanged model's {held['reference_accuracy']:.2%}; the "
            f"worst class ({held['worst_class']}) {held['worst_class_drop']:+.2f} points; {held['flip_rate']:.1%} of "
            f"the images predicted otherwise than the unchanged model did ({held['flip_rate_correct']:.1%} of those it "
            f"had right); expected calibration error {held['ece']:.3f} ({held['ece_increase']:+.3f})."), ""]


def readme_text(config: dict[str, Any]) -> str:
    art, c, data = config["artifact"], config["candidate"], config["data"]
    m = config["metrics"]["export"]
    runtime = {"openvino-ir": "OpenVINO", "onnx": "ONNX Runtime", "torch.export": "PyTorch (torch.export)",
               "state_dict": "PyTorch (state_dict, rebuilt with the tuner package)"}[art["kind"]]
    files = [f"- `{art['file']}`: the model ({runtime})"]
    if art["kind"] == "openvino-ir":
        files += [f"- `{IR_BIN_FILE}`: its weights", f"- `{ONNX_FILE}`: the same model as ONNX (what the study ran)"]
    files += [f"- `{CONFIG_FILE}`: every setting, the measured figures, hardware, libraries and sha256 of each file"]
    size = int(data["resolution"])
    return "\n".join([
        (f"# Trial #{config['study']['trial']} of study `{config['study']['name']}`: {c['precision']} on "
        f"{c['placement']}, batch {c['batch_size']}, prune {c['prune_ratio']}"),
        "",
        (_accuracy_words(config["study"].get("metric", "top-1 accuracy"), m)
         + f" on {data['validation_images']} validation images of "
        f"`{data['name']}`; {m['per_sample_ms']:.4f} ms per sample at batch {c['batch_size']} "
        f"({m['executed_precision']} executed, threads: {m['threads']}) on the machine in `{CONFIG_FILE}`."),
        "",
        *_holdout_lines(config.get("holdout")),
        *files,
        "",
        "## Preprocessing",
        "",
        (("The inputs exactly as the data given to the tuner held them (float32 NCHW): the tuner applied no "
          "normalization of its own. " if data.get("preprocessed") else
          ("scikit-learn's 8 x 8 digits (0-16) scaled to 0-255, " if data["name"] == "digits" else
           "RGB, centre-cropped to a square, ")
          + f"resized (bilinear) to {size} x {size}, uint8; then `(pixels / 255 - mean) / std`"
          " per channel with the mean and std below; NCHW float32. ")
         + f"Input `{INPUT}` (N x 3 x {size} x {size}), "
        f"output `{OUTPUT}` (N x {len(data['classes'])}, class order as in `classes`)."),
        "",
        f"## Run it in {runtime}",
        "",
        "```python",
        *code_lines(config),
        *(_serve_code(config) if _concurrent(config) else []),
        "```",
        "",
        *(_serving_text(config) if config.get("serving") else []),
        ("`tuner verify .` reloads the model the same way, re-measures accuracy and latency, and compares both with "
        f"`{CONFIG_FILE}`."),
        ""])
