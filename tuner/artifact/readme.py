"""The README.md of an export directory: what the files are, the preprocessing, and the exact lines that load the
artifact in its own runtime and print a prediction (written from the export's ``config.yaml`` contents, so the
lines carry the recorded mean, std, classes, input and output names and runtime settings)."""

from __future__ import annotations

from typing import Any

from tuner.artifact.kinds import registry
from tuner.metric import top1_of
from tuner.names import CONFIG_FILE, INPUT, OUTPUT


def _concurrent(config: dict[str, Any]) -> bool:
    serving = config.get("serving") or {}
    return serving.get("streams", 1) > 1 or serving.get("requests", 1) > 1


def code_lines(config: dict[str, Any]) -> list[str]:
    """The Python lines that load and run the export's native artifact and print a prediction."""
    return registry.get(config["artifact"]["kind"]).code(config)


def _serve_code(config: dict[str, Any]) -> list[str]:
    """Lines that serve many requests at once, as measured: appended to ``code_lines`` (``batches``: your requests,
    each an N x 3 x H x W float32 array like ``x``)."""
    serving = config["serving"]
    streams, requests = int(serving["streams"]), int(serving["requests"])
    head = [
        "",
        f"# Serve as measured: {streams} stream(s) at once, {requests} request(s) in flight.",
        "batches = [x] * 16  # your requests, each N x 3 x H x W float32",
    ]
    return [*head, *registry.get(config["artifact"]["kind"]).serve_code(config)]


def _serving_text(config: dict[str, Any]) -> list[str]:
    serving, m = config["serving"], config["metrics"]["export"]
    text = (
        f"Streams {serving['streams']}, requests in flight {serving['requests']}, batch {serving['batch_size']}, "
        f"threads per stream {serving['threads']}"
        + (
            f" (the runtime reports {', '.join(f'{k} {v}' for k, v in serving['runtime'].items())})"
            if serving.get("runtime")
            else ""
        )
        + "."
    )
    if serving.get("load"):
        text += (
            f" Under load: {m['load_throughput']:.0f} samples/s with {serving['requests']} requests in flight "
            f"(p50 {m['load_p50_ms']:.3f}, p95 {m['load_p95_ms']:.3f} ms per request); requests arriving at "
            f"Poisson times at {serving['load']['open_rate_per_s']:.0f} per second ("
            + (
                "a rate given"
                if serving["load"].get("open_rate")
                else f"{serving['load'].get('utilisation', 0.5):.0%} of that rate"
            )
            + "): "
            f"p95 {m['open_p95_ms']:.3f} ms. "
            "`tuner verify .` re-checks them under the same load."
        )
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
    return [
        (
            f"On {held['images']} held-out images the search never saw: top-1 {held['accuracy']:.2%}, "
            f"{held['accuracy_drop']:.2f} points below the unchanged model's {held['reference_accuracy']:.2%}; the "
            f"worst class ({held['worst_class']}) {held['worst_class_drop']:+.2f} points; {held['flip_rate']:.1%} of "
            f"the images predicted otherwise than the unchanged model did ({held['flip_rate_correct']:.1%} of those it "
            f"had right); expected calibration error {held['ece']:.3f} ({held['ece_increase']:+.3f})."
        ),
        "",
    ]


def readme_text(config: dict[str, Any]) -> str:
    art, c, data = config["artifact"], config["candidate"], config["data"]
    m = config["metrics"]["export"]
    kind = registry.get(art["kind"])
    runtime = kind.runtime
    files = [f"- `{art['file']}`: the model ({runtime})", *kind.readme_files(config)]
    files += [f"- `{CONFIG_FILE}`: every setting, the measured figures, hardware, libraries and sha256 of each file"]
    size = int(data["resolution"])
    return "\n".join(
        [
            (
                f"# Trial #{config['study']['trial']} of study `{config['study']['name']}`: {c['precision']} on "
                f"{c['placement']}, batch {c['batch_size']}, prune {c['prune_ratio']}"
            ),
            "",
            (
                _accuracy_words(config["study"].get("metric", "top-1 accuracy"), m)
                + f" on {data['validation_images']} validation images of "
                f"`{data['name']}`; {m['per_sample_ms']:.4f} ms per sample at batch {c['batch_size']} "
                f"({m['executed_precision']} executed, threads: {m['threads']}) on the machine in `{CONFIG_FILE}`."
            ),
            "",
            *_holdout_lines(config.get("holdout")),
            *files,
            "",
            "## Preprocessing",
            "",
            (
                (
                    "The inputs exactly as the data given to the tuner held them (float32 NCHW): the tuner applied no "
                    "normalization of its own. "
                    if data.get("preprocessed")
                    else (
                        "scikit-learn's 8 x 8 digits (0-16) scaled to 0-255, "
                        if data["name"] == "digits"
                        else "RGB, centre-cropped to a square, "
                    )
                    + f"resized (bilinear) to {size} x {size}, uint8; then `(pixels / 255 - mean) / std`"
                    " per channel with the mean and std below; NCHW float32. "
                )
                + f"Input `{INPUT}` (N x 3 x {size} x {size}), "
                f"output `{OUTPUT}` (N x {len(data['classes'])}, class order as in `classes`)."
            ),
            "",
            f"## Run it in {runtime}",
            "",
            "```python",
            *code_lines(config),
            *(_serve_code(config) if _concurrent(config) else []),
            "```",
            "",
            *(_serving_text(config) if config.get("serving") else []),
            (
                "`tuner verify .` reloads the model the same way, re-measures accuracy and latency, and compares both with "
                f"`{CONFIG_FILE}`."
            ),
            "",
        ]
    )
