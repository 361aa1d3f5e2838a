"""The house rules, checked on the source: small modules with a stated job, imports that point down only,
no private Optuna, and the light entry points (a Candidate, the report) that load no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tuner import hardware

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tuner"
# Formatted lines, as ruff format leaves them (CI checks the format): a module past this is split along its seams.
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path, name: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, the ones inside functions too, resolved to modules."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for a in node.names:  # `from tuner.measure import host` imports the module tuner.measure.host
                sub = f"{base}.{a.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return found


def test_every_module_is_small_and_says_its_job():
    for name, path in MODULES.items():
        source = path.read_text()
        assert len(source.splitlines()) <= MAX_LINES, f"{name} has {len(source.splitlines())} lines"
        doc = ast.get_docstring(ast.parse(source))
        assert doc and len(doc.split()) >= 4, f"{name} does not open with a docstring saying its job"


# PEP 562's lazy pair: a package may load its names on first use (`import tuner` loads no torch).
LAZY_HOOKS = {"__getattr__", "__dir__"}


def test_package_inits_hold_no_logic():
    """An __init__.py keeps its docstring and re-exports: a function or class there (other than the module-level
    lazy hooks) belongs in a named module, where its name says what it holds."""
    found = []
    for path in (p for p in MODULES.values() if p.name == "__init__.py"):
        tree = ast.parse(path.read_text())
        hooks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in LAZY_HOOKS]
        inside = {id(n) for h in hooks for n in ast.walk(h)}
        found += [
            f"{path.relative_to(ROOT)}:{n.lineno} defines {getattr(n, 'name', 'a lambda')}"
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) and id(n) not in inside
        ]
    assert not found, "logic in a package's __init__.py (move it to a named module):\n" + "\n".join(found)


def test_imports_point_down_only():
    """No cycle among tuner's modules, counting the imports inside functions (a lazy import is still an edge)."""
    graph = {name: {m for m, _ in _imports(path, name) if m in MODULES and m != name} for name, path in MODULES.items()}
    # A package's __init__ may re-export its own submodules; a submodule importing its package is the cycle.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert graph["tuner.candidate"] <= {"tuner.errors", "tuner.names"}  # the configuration type sits at the bottom


def test_no_private_optuna_anywhere():
    for folder in ("tuner", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for module, line in _imports(path, "x.y"):
                assert not (module.startswith("optuna") and any(p.startswith("_") for p in module.split("."))), (
                    f"{path.relative_to(ROOT)}:{line} imports the private {module}"
                )


@pytest.mark.parametrize(
    "code",
    [
        "from tuner.candidate import Candidate; Candidate()",
        "import tuner.report",
        "import tuner.cli",
        "import tuner.results, tuner.summary, tuner.study.loop",
        "import tuner; tuner.tune, tuner.TuneResult, tuner.TrialPoint, tuner.Candidate",  # the Python API, lazily
        "import tuner.measure.latency, tuner.measure.host",  # the timing statistics: numpy only
        "import tuner.record",  # the trial record
    ],
)
def test_light_entry_points_load_no_torch(code):
    check = (
        f"import sys; {code}; heavy = [m for m in ('torch', 'onnxruntime', 'openvino') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]


@pytest.mark.skipif(hardware.cuda_available(), reason="with a GPU driver present, torch is asked about the GPU")
def test_a_studys_parent_loads_no_torch_to_learn_what_runs_here():
    """The study's parent process reads the space (what runs here) and the hardware fingerprint; its trials run in
    a child. Importing torch there cost every `tuner` command about a second before its first line, an error's too
    (3.2 -> 2.3 s for an unknown --model)."""
    check = (
        "import sys; from tuner import hardware; from tuner.space import load_space; "
        "space = load_space('default'); hardware.fingerprint_id(); "
        "assert 'torch-cpu' in space.placements and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]


# The layers, bottom to top (docs/architecture.md): a module imports from its own layer or below, never above.
LAYERS = (
    (
        "tuner.names",
        "tuner.candidate",
        "tuner.errors",
        "tuner.table",
        "tuner.record",
        "tuner.progress",
        "tuner.logs",
        "tuner.defaults",
        "tuner.streams",
    ),
    (
        "tuner.dataset",
        "tuner.data",
        "tuner.image_folder",
        "tuner.decoded",
        "tuner.images",
        "tuner.models",
        "tuner.weights",
        "tuner.zoo",
        "tuner.onnx_model",
        "tuner.metric",
        "tuner.guardrails",
        "tuner.corruptions",
        "tuner.train",
        "tuner.workload_spec",
        "tuner.workload",
        "tuner.paths",
        "tuner.hardware",
        "tuner.cache",
        "tuner.claims",
    ),
    ("tuner.passes", "tuner.runtimes"),
    ("tuner.measure",),
    ("tuner.pipeline", "tuner.worker", "tuner.child"),
    ("tuner.results",),
    ("tuner.space", "tuner.objectives", "tuner.study"),
    ("tuner.summary", "tuner.remeasure", "tuner.report", "tuner.explain", "tuner.artifact"),
    ("tuner.api",),
    ("tuner.cli", "tuner.__main__", "tuner"),
)


def _layer(module: str) -> int:
    if module == "tuner":  # the package's lazy front door sits on top
        return len(LAYERS) - 1
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names if n != "tuner"):
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS: place it")


def test_imports_point_down_the_written_layer_order():
    upward = [
        f"{name}:{line} imports {target}"
        for name, path in MODULES.items()
        for target, line in _imports(path, name)
        if target in MODULES and target != "tuner" and _layer(target) > _layer(name)
    ]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)
