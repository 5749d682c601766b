"""The Dockerfiles cannot be built here (no Docker engine): check everything they refer to exists."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.gpu"]


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in (REPO / name).read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (last matching rule wins)."""
    ignored = False
    for rule in (REPO / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_is_pinned(name):
    (image,) = [args for kw, args in instructions(name) if kw == "FROM"]
    repo, _, tag = image.partition(":")
    assert tag and tag != "latest" and re.match(r"\d+\.\d+", tag), f"{name}: unpinned base {image}"


def test_cpu_base_python_satisfies_the_package():
    (image,) = [args for kw, args in instructions("Dockerfile.cpu") if kw == "FROM"]
    minimum = pyproject()["project"]["requires-python"].removeprefix(">=")
    version = re.match(r"python:(\d+\.\d+)", image).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))
    runs = " ".join(args for kw, args in instructions("Dockerfile.cpu") if kw == "RUN")
    assert "openjdk-17-jre-headless" in runs  # Spark 4 needs Java 17


def test_gpu_base_carries_the_pinned_torch():
    (image,) = [args for kw, args in instructions("Dockerfile.gpu") if kw == "FROM"]
    pin = re.search(r"^torch==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert image.startswith(f"pytorch/pytorch:{pin}-cuda"), (image, pin)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_exists_and_is_in_the_build_context(name):
    copies = [shlex.split(args) for kw, args in instructions(name) if kw in ("COPY", "ADD")]
    assert copies
    for *sources, _dest in copies:
        for src in sources:
            assert not src.startswith("--"), f"{name}: COPY flags are not expected here"
            assert (REPO / src).exists(), f"{name}: COPY {src}: no such file in the repository"
            assert not dockerignored(src), f"{name}: COPY {src}: excluded by .dockerignore"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_install_goes_through_the_constraints_and_copied_files(name):
    steps = instructions(name)
    copied = {s for kw, args in steps if kw == "COPY" for s in shlex.split(args)[:-1]}
    pip = [args for kw, args in steps if kw == "RUN" and "pip install" in args]
    assert len(pip) == 1, f"{name}: expected one pip install"
    words = shlex.split(pip[0])
    assert words[words.index("-c") + 1] == "constraints.txt" and "constraints.txt" in copied
    assert any(w == "." or w.startswith(".[") for w in words) and "pyproject.toml" in copied \
        and "src" in copied
    # the readme named by pyproject must be in the image for the build to succeed
    assert pyproject()["project"]["readme"] in copied


@pytest.mark.parametrize("name", DOCKERFILES)
def test_non_root_user_and_cli_entrypoint(name):
    steps = instructions(name)
    users = [(i, args) for i, (kw, args) in enumerate(steps) if kw == "USER"]
    assert users and users[-1][1] not in ("root", "0")
    assert all(kw != "RUN" for kw, _ in steps[users[-1][0] :]), "RUN after USER runs as that user"
    created = " ".join(args for kw, args in steps if kw == "RUN")
    assert f"useradd --create-home --uid 10001 {users[-1][1]}" in created
    (entry,) = [json.loads(args) for kw, args in steps if kw == "ENTRYPOINT"]
    assert entry[0] in pyproject()["project"]["scripts"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_usage_lines_name_configs_that_exist(name):
    text = (REPO / name).read_text()
    for ref in re.findall(r"/opt/propensity/(configs/\S+\.yaml)", text):
        assert (REPO / ref).is_file(), f"{name} mentions {ref}"
    for cmd in re.findall(r"propensity-(?:cpu|gpu):\S+ (\w+)", text):
        assert cmd in {"daily", "train", "score", "aggregate", "monitor", "--help"}


def test_dockerignore_excludes_local_state():
    for path in (".venv/bin/python", "demo/data", "propensity-data/x", ".git/HEAD", "tests/conftest.py"):
        assert dockerignored(path), path
