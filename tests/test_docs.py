"""Documentation that runs: every fenced code block of README.md and docs/*.md is executed here, at small scale.

* ``python`` blocks run verbatim in a fresh interpreter (cwd: a temporary folder, PYTHONPATH: this checkout) and
  must exit 0. README's Python example is the acceptance case (about two minutes on 2 vCPUs).
* ``bash`` blocks: each command runs in order, in one shared folder per session, after the substitutions
  ``substitute`` lists (the tests' tiny CNN at 16 px for a ResNet at 224, two trials for twenty, ...), and
  must exit 0. The files a command names as a user's own (``path/to/images``, ``net.pt``, ``model.onnx``,
  ``my_config.yaml``, ...) are made by the test under those very names (``PLACEHOLDERS``). A command that
  cannot run here is listed in ``SKIPPED`` with the reason; any other command, a new one too, runs, so a
  documented command that breaks is a failing test.
* ``yaml`` blocks are parsed as the tuner parses them: candidate keys load as a ``Candidate``, a search space
  through ``tuner.space``, objectives through ``tuner.objectives``.
* ``text`` blocks are what a command prints or a file tree: nothing to run.

Beside them: every relative link of these pages points to a file (and heading) that exists, README.md stays
within two screens (180 lines), and every entry of ``SKIPPED`` still names a documented command.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_image_folder

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TINY = str(ROOT / "tests" / "tiny_models.py")
TINY_MODEL = f"{TINY}:conv_net"
README_MAX_LINES = 180
SESSION_STUDY = "docs"  # what `NAME` (a study `tuner run` made) stands for
LANGUAGES = ("python", "bash", "yaml", "text")

# Documented commands that do not run here, each with the reason (the command as written, comment stripped).
SKIPPED = {
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e '.[test]' && .venv/bin/python -m tuner "
    "--model resnet18": "README's setup on a fresh machine: .ci/run makes that very install; the default study it "
    "ends with is README's `python -m tuner --model resnet18`, run here at small scale",
    ".venv/bin/python -m pytest -q": "the test suite itself (.ci/run runs it)",
    "pip install -e '.[postgres]'": "installs packages (the test environment has the postgres extra)",
    "python -m tuner --model resnet18 --storage postgresql://USER:PASSWORD@HOST/DB --study shared "
    "--studies-dir /mnt/shared/tuner": "needs a PostgreSQL server, its credentials and a shared folder; tests/test_distributed.py runs workers on a "
    "throwaway server, tests/test_claims.py two of them sharing one cache",
    "optuna-dashboard sqlite:///studies/NAME.db": "serves until stopped; tests/test_dashboard.py serves a tuner "
    "study with it on loopback",
}

WORKLOAD_COMMANDS = ("run", "measure")  # the commands that take --model, --data, --resolution, ...
COMMANDS = ("run", "measure", "report", "export", "verify", "explain")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text().splitlines()
    start, language, body = None, "", []
    for number, line in enumerate(lines, 1):
        if start is None and line.startswith("```"):
            start, language, body = number, line[3:].strip(), []
        elif start is not None and line.startswith("```"):
            blocks.append(Block(path, start, language, "\n".join(body) + "\n"))
            start = None
        elif start is not None:
            body.append(line)
    assert start is None, f"{path.name}:{start}: a code block that never closes"
    return blocks


BLOCKS = [b for path in DOCS for b in code_blocks(path)]


def _of(language: str) -> list[pytest.param]:
    return [pytest.param(b, id=b.where) for b in BLOCKS if b.language == language]


def commands(block: Block) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines left out."""
    out, pending = [], ""
    for raw in block.text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        if words:
            command = line.split(" #")[0].rstrip() if " #" in line else line
            out.append(" ".join(command.split()))
    return out


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _set(args: list[str], name: str, value: str) -> None:
    if name in args:
        args[args.index(name) + 1] = value
    else:
        args += [name, value]


def substitute(command: str, tag: str) -> list[str]:
    """The argv of a documented `tuner` command at small scale. The substitutions, and why:

    ==========================================  ====================================  ==================================
    as documented                               run here                              why
    ==========================================  ====================================  ==================================
    ``--model`` / ``--student`` a name or       ``tests/tiny_models.py:conv_net``     the tests' plain CNN trains in
    ``file.py:callable``, or no ``--model``                                           seconds (``model.onnx`` stays:
                                                                                      the test exports that CNN to it)
    ``--resolution N``, or none                 ``--resolution 16``                   the tiny CNN at 16 px
    no ``--weights`` (nor an ONNX model)        ``--train-steps 80``                  a baseline in seconds, cached
    run: ``--n-trials N``, or none              ``--n-trials 2``                      the baseline and the first anchor
    run: ``--remeasure-rounds``                 ``--remeasure-rounds 0``              tests/test_remeasure.py's job
    run: no ``--study``                         ``--study docs-<page>-<line>-<n>``    a study per command (one command's
                                                                                      weights never meet another's)
    ``NAME`` (a study ``tuner run`` made)       ``docs``                              made once per session
                                                                                      (``docs_folder``)
    export ``--trial N``                        ``--trial 1``                         a trial the small study has
    verify                                      ``--latency-tolerance 10`` added      accuracy is compared as
                                                                                      documented; latency, on a host
                                                                                      other tests load, is not
    ==========================================  ====================================  ==================================
    """
    words = shlex.split(command)
    head = (
        3 if words[:3] in (["python", "-m", "tuner"], ["python3", "-m", "tuner"]) else 1 if words[0] == "tuner" else 0
    )
    if not head:
        raise AssertionError(
            f"{command!r} is neither a `tuner` command nor in SKIPPED: run it here or list it with "
            "the reason it cannot run"
        )
    args = words[head:]
    sub = args.pop(0) if args and args[0] in COMMANDS else "run"
    if sub in WORKLOAD_COMMANDS:
        onnx = (_flag(args, "--model") or "").endswith(".onnx")
        if not onnx:
            _set(args, "--model", TINY_MODEL)
        if "--student" in args:
            _set(args, "--student", TINY_MODEL)
        _set(args, "--resolution", "16")
        if "--weights" not in args and not onnx:
            _set(args, "--train-steps", "80")
    if sub == "run":
        _set(args, "--n-trials", "2")
        _set(args, "--remeasure-rounds", "0")
        if "--study" not in args:
            _set(args, "--study", f"docs-{tag}")
    if _flag(args, "--study") == "NAME":
        _set(args, "--study", SESSION_STUDY)
    args = [a.replace("NAME", SESSION_STUDY) for a in args]  # --out studies/NAME.html
    if sub == "export" and "--trial" in args:
        _set(args, "--trial", "1")
    if sub == "verify":
        _set(args, "--latency-tolerance", "10")
    return [sys.executable, "-m", "tuner", sub, *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _placeholders(folder: Path) -> None:
    """What the documented commands name as the user's own files, made under those names (``PLACEHOLDERS``)."""
    import torch

    from tests.tiny_models import conv_net

    make_image_folder(folder / "path" / "to" / "images")  # 3 classes: train/ and val/
    model = conv_net(num_classes=3).eval()
    for name in PLACEHOLDERS["weights"]:
        torch.save(model.state_dict(), folder / name)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; the default one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 16, 16),),
            str(folder / "model.onnx"),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
            dynamo=False,
        )
    for name, config in PLACEHOLDERS["configs"].items():
        (folder / name).write_text(yaml.safe_dump(config))


PLACEHOLDERS = {
    "weights": (
        "resnet18_10class.pt",
        "resnet50_10class.pt",
        "net.pt",
    ),  # the tiny CNN's state_dict for the 3 classes of path/to/images
    "configs": {
        "my_config.yaml": {"placement": "ort-cpu", "precision": "int8"},
        "served.yaml": {"streams": 2, "threads": 1},
    },
    # also path/to/images (tests/conftest.py's make_image_folder) and model.onnx (the tiny CNN, 16 px)
}


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every documented command: the placeholders, and the study `NAME` stands for."""
    folder = tmp_path_factory.mktemp("docs")
    _placeholders(folder)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner",
            "--model",
            TINY_MODEL,
            "--resolution",
            "16",
            "--train-steps",
            "80",
            "--n-trials",
            "3",
            "--remeasure-rounds",
            "0",
            "--study",
            SESSION_STUDY,
        ],
        capture_output=True,
        text=True,
        cwd=folder,
        env=_env(),
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return folder


def test_every_block_has_a_language_the_test_runs():
    assert BLOCKS, "no code blocks found"
    for b in BLOCKS:
        assert b.language in LANGUAGES, f"{b.where}: a ```{b.language} block; use one of {', '.join(LANGUAGES)}"


def test_every_skip_names_a_documented_command():
    documented = {c for b in BLOCKS if b.language == "bash" for c in commands(b)}
    for command in SKIPPED:
        assert command in documented, f"SKIPPED lists {command!r}, which no page documents any more"


def test_readme_fits_two_screens():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; reference goes to docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_resolve():
    for page in [*DOCS, ROOT / "benchmarks" / "README.md", ROOT / "benchmarks" / "HISTORY.md"]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            assert path.exists(), f"{page.relative_to(ROOT)}: link to {target}, which does not exist"
            if anchor and path.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)}
                assert anchor in slugs, f"{page.relative_to(ROOT)}: link to {target}: no such heading"


@pytest.mark.parametrize("block", _of("yaml"))
def test_yaml_block_loads_as_the_tuner_reads_it(block: Block, tmp_path: Path):
    from tuner.candidate import Candidate
    from tuner.objectives import load_objectives
    from tuner.space import load_space

    data = yaml.safe_load(block.text)
    assert isinstance(data, dict) and data, f"{block.where}: not a YAML mapping"
    file = tmp_path / "block.yaml"
    file.write_text(block.text)
    if set(data) <= {"objectives", "constraints"}:
        load_objectives(str(file))
    elif any(isinstance(v, dict) for v in data.values()):
        load_space(str(file))
    else:
        Candidate.from_yaml(file)


@pytest.mark.slow
@pytest.mark.parametrize("block", _of("python"))
def test_python_block_runs_verbatim(block: Block, tmp_path: Path):
    r = subprocess.run(
        [sys.executable, "-c", block.text], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=900
    )
    assert r.returncode == 0, f"{block.where} exited {r.returncode}:\n{r.stderr[-4000:]}"


RAN: dict[str, str] = {}  # a study or measure command -> "" when it passed, else its failure: run once, though
# documented twice (an export or a verify runs again: what it reads may have changed in between)


@pytest.mark.slow
@pytest.mark.parametrize("block", _of("bash"))
def test_bash_block_runs_at_small_scale(block: Block, docs_folder: Path):
    for n, command in enumerate(commands(block)):
        if command in SKIPPED:
            continue
        argv = substitute(command, f"{block.path.stem}-{block.line}-{n}")
        if command not in RAN:
            r = subprocess.run(argv, capture_output=True, text=True, cwd=docs_folder, env=_env(), timeout=900)
            failure = (
                ""
                if r.returncode == 0
                else (
                    f"{block.where}: `{command}` as `{shlex.join(argv[1:])}` exited {r.returncode}:\n{r.stderr[-3000:]}"
                )
            )
            if argv[3] in WORKLOAD_COMMANDS:
                RAN[command] = failure
        else:
            failure = RAN[command]
        assert not failure, failure
