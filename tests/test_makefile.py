"""`make install` on a fresh machine asks PyTorch's CPU index (PyPI's Linux torch is the CUDA
build); where pip's own sources are set, as on the development machine, they stand alone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def install_command(tmp_path, *make_args: str, **env: str) -> str:
    """The pip command `make install` would run for a venv that does not exist yet (dry run)."""
    base = {k: v for k, v in os.environ.items() if k not in ("PIP_INDEX_URL", "PIP_FIND_LINKS")}
    venv = tmp_path / "venv"
    out = subprocess.run(
        ["make", "-n", "-B", f"VENV={venv}", *make_args, f"{venv}/bin/propensity"],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (pip,) = [line for line in out.splitlines() if " install " in line]
    assert "-c constraints.txt" in pip and "-e '.[dev,spark]'" in pip
    return pip


def test_a_fresh_machine_gets_the_cpu_index(tmp_path):
    assert CPU_INDEX in install_command(tmp_path)


@pytest.mark.parametrize("variable", ["PIP_FIND_LINKS", "PIP_INDEX_URL"])
def test_pip_sources_set_in_the_environment_stand_alone(tmp_path, variable):
    assert "--extra-index-url" not in install_command(tmp_path, **{variable: "/opt/wheels"})


def test_torch_index_names_another_index_or_none(tmp_path):
    mirror = install_command(tmp_path, "TORCH_INDEX=https://mirror.example/whl/cpu")
    assert "--extra-index-url https://mirror.example/whl/cpu" in mirror
    assert "--extra-index-url" not in install_command(tmp_path, "TORCH_INDEX=")
