"""The repository's `platform.py` must not shadow the standard library's `platform` for anything
run from the repository root."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from tests.server.helpers import ROOT, run_cli

STDLIB_PLATFORM = str(Path(sysconfig.get_path("stdlib")) / "platform.py")


def test_pytest_itself_sees_the_standard_platform():
    import platform

    assert platform.__file__ == STDLIB_PLATFORM
    assert platform.python_implementation() == "CPython"


@pytest.mark.parametrize(
    "code",
    [
        "import platform; print(platform.__file__); print(platform.system(), platform.machine())",
        "import numpy, pandas, uuid, platform; uuid.uuid4(); print(platform.__file__)",
        "import platform as p; from platform import python_version; print(p.__file__, python_version())",
    ],
)
def test_python_c_from_the_root_gets_the_standard_platform(code):
    result = run_cli("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[0] == STDLIB_PLATFORM


def test_python_m_pytest_from_the_root_works(tmp_path):
    test = tmp_path / "test_probe.py"
    test.write_text("import platform\n\ndef test_probe():\n    assert platform.system()\n")
    result = run_cli("-m", "pytest", "-q", "-p", "no:cacheprovider", str(test))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.parametrize("script", ["platform.py", "als_fit.py"])
def test_entry_points_start_from_the_root(script):
    result = run_cli(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_uvicorn_imports_the_app_module_from_the_root():
    result = run_cli(
        "-c",
        "import uvicorn.importer as i; app = i.import_from_string('streamrec.serve.app:app'); "
        "print(type(app).__name__)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FastAPI"


def test_root_is_the_project_root():
    assert (ROOT / "platform.py").is_file()
