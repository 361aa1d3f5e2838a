"""The opening lines of every export README's code: imports, the recorded normalization and an input batch."""

from __future__ import annotations

from typing import Any


def prelude(config: dict[str, Any], imports: list[str]) -> list[str]:
    """Imports, then the recorded normalization and an input batch: RGB uint8 images -> NCHW float32."""
    data = config["data"]
    size = int(data["resolution"])
    if data.get("preprocessed"):  # float inputs given to tuner.tune ready for the model: no normalization here
        return [
            *imports,
            "",
            f"H = W = {size}",
            f"classes = {[str(c) for c in data['classes']]}",
            "",
            "# Your inputs, N x 3 x H x W float32, preprocessed exactly as the data the tuner was given",
            "x = np.zeros((1, 3, H, W), np.float32)",
            "",
        ]
    return [
        *imports,
        "",
        f"H = W = {size}",
        f"mean = np.array({[round(float(v), 8) for v in data['mean']]}, np.float32).reshape(1, 3, 1, 1)",
        f"std = np.array({[round(float(v), 8) for v in data['std']]}, np.float32).reshape(1, 3, 1, 1)",
        f"classes = {[str(c) for c in data['classes']]}",
        "",
        "# Your images, RGB uint8, N x H x W x 3: centre-cropped to a square and resized (bilinear) to H x W,",
        "# e.g. np.stack([np.asarray(Image.open(p).convert('RGB').resize((W, H), Image.BILINEAR)) for p in paths])",
        "pixels = np.zeros((1, H, W, 3), np.uint8)",
        "x = ((pixels.transpose(0, 3, 1, 2) / 255.0 - mean) / std).astype(np.float32)  # NCHW float32",
        "",
    ]
