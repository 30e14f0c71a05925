"""The Dockerfiles cannot be built here (no Docker engine); check everything they copy and run exists."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from chart_helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
DOCKERFILES = {"service": ROOT / "service" / "Dockerfile", "operator": ROOT / "operator" / "Dockerfile"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def command_words(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_everything_copied_exists(name: str) -> None:
    copies = [args for word, args in instructions(DOCKERFILES[name]) if word in ("COPY", "ADD")]
    assert copies
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"{name}/Dockerfile copies {source}, which does not exist"


@pytest.mark.parametrize("name, script", [("service", "musetalk-server"), ("operator", "musetalk-operator")])
def test_the_image_runs_a_declared_console_script(name: str, script: str) -> None:
    steps = instructions(DOCKERFILES[name])
    cmd = [args for word, args in steps if word in ("CMD", "ENTRYPOINT")][-1]
    assert command_words(cmd)[0] == script and script in SCRIPTS
    module, _, func = SCRIPTS[script].partition(":")
    code = f"import importlib; assert callable(getattr(importlib.import_module({module!r}), {func!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120,
                   env={"PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'operator'}", "PATH": "/usr/bin:/bin"})


def test_the_operator_image_needs_only_its_requirements() -> None:
    """The slim image installs the project --no-deps, so the operator must not import torch & co."""
    code = ("import sys, musetalk_operator.__main__, musetalk_operator.handlers, musetalk_operator.volume; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120, capture_output=True,
                         text=True, env={"PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'operator'}", "PATH": "/usr/bin:/bin"})
    loaded = set(json.loads(out.stdout.strip().replace("'", '"')))
    heavy = {"torch", "fastapi", "starlette", "mediapipe", "librosa", "diffusers", "transformers", "av", "pydantic_settings",
             "numpy", "cv2"}
    assert not loaded & heavy
    wanted = {re.split(r"[<>=!~ ]", line)[0].strip() for line in (ROOT / "operator" / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    declared = {re.split(r"[<>=!~\[ ]", d)[0] for d in PYPROJECT["project"]["dependencies"]}
    # Every operator requirement is a project dependency too (opencv: the headless twin of contrib).
    assert wanted - {"opencv-python-headless"} <= declared and "opencv-contrib-python" in declared
