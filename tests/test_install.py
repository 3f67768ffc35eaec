"""The package as a team installs it: a wheel of `streamrec` only, installed in a fresh virtual
environment and used from another directory through its commands."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx2 as httpx
import pytest

from streamrec import __version__
from tests.helpers import block_sessions
from tests.server.helpers import ROOT, clean_env, start_process, stop_server

COMMANDS = ("streamrec-train", "streamrec-serve", "streamrec-evaluate")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"pip wheel failed (setuptools from requirements-dev.txt?): {result.stderr}"
    (path,) = out.glob("streamrec-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtual environment with the wheel installed; the dependencies come from this one's
    site-packages through a .pth file (no download), which holds no streamrec of its own."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return root


def run(venv: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_holds_the_package_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"streamrec", f"streamrec-{__version__}.dist-info"}
    assert "streamrec/__init__.py" in names and "streamrec/serve/routes.py" in names
    entry_points = zipfile.ZipFile(wheel).read(f"streamrec-{__version__}.dist-info/entry_points.txt").decode()
    assert all(f"{command} = streamrec.cli." in entry_points for command in COMMANDS)


def test_installed_it_imports_from_anywhere_without_shadowing_anything(venv, tmp_path):
    code = (
        "import sys, platform, importlib.util, streamrec; heavy = 'pandas' in sys.modules; "
        "from streamrec import process_data, fit_model, load_model, personal_recommendations; "
        "print(streamrec.__version__, platform.python_implementation(), "
        "importlib.util.find_spec('metrics') is None, importlib.util.find_spec('service') is None, heavy, "
        "callable(fit_model) and callable(personal_recommendations))"
    )
    result = run(venv, "python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # No module called metrics or service on the path; importing streamrec read nothing heavy.
    assert result.stdout.split() == [__version__, "CPython", "True", "True", "False", "True"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_its_version(venv, tmp_path, command):
    result = run(venv, command, "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{command} {__version__}"


def test_train_a_small_file_and_serve_the_model(venv, tmp_path):
    data, model = tmp_path / "sessions.csv", tmp_path / "model.pkl"
    block_sessions().to_csv(data, index=False)
    trained = run(venv, "streamrec-train", "--data", str(data), "--model", str(model), "--factors", "2", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert model.is_file()
    serve = [str(venv / "bin" / "streamrec-serve")]
    proc, base = start_process(["--model", str(model)], env=clean_env(), command=serve, cwd=tmp_path)
    try:
        body = httpx.get(f"{base}/recomendations/user/1", params={"k": 3}).json()
        again = httpx.get(f"{base}/recommendations/user/1", params={"k": 3}).json()
    finally:
        stop_server(proc)
    assert body["source"] == "personal" and len(body["recommendations"]) == 3
    assert again == body
