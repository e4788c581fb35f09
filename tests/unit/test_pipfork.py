"""`support.pipfork`: a pip command run in a fork of a pip server behaves as the same
command in a subprocess (exit code, output, working directory, environment, interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import pipfork
from support.wheels import build_plugin_wheel

PIP = [sys.executable, "-m", "pip"]


@pytest.fixture(params=["fork", "subprocess"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DIHYA_TEST_PIP_FORK", "1" if request.param == "fork" else "0")
    return str(request.param)


def test_an_install_into_a_target_lands_there(tmp_path: Path, mode: str) -> None:
    wheel = build_plugin_wheel(tmp_path / "w", "forked")
    site = tmp_path / "site"
    result = pipfork.run([*PIP, "install", "--quiet", "--no-deps", "--target", str(site),
                          str(wheel)], check=True, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == ""
    assert (site / "dihya_plugin_forked" / "__init__.py").is_file()
    assert (site / "dihya_plugin_forked-1.0.0.dist-info" / "RECORD").is_file()


def test_exit_codes_and_output_are_those_of_pip(mode: str) -> None:
    missing = pipfork.run([*PIP, "show", "no-such-dist-xyz"], capture_output=True, text=True)
    assert missing.returncode == 1 and "not found: no-such-dist-xyz" in missing.stderr
    usage = pipfork.run([*PIP, "install", "--no-such-option"], capture_output=True)
    assert usage.returncode == 2 and b"no such option" in usage.stderr
    assert isinstance(usage.stdout, bytes)
    with pytest.raises(subprocess.CalledProcessError) as failed:
        pipfork.run([*PIP, "show", "no-such-dist-xyz"], check=True, capture_output=True)
    assert failed.value.returncode == 1
    shown = pipfork.run([*PIP, "show", "pytest"], capture_output=True, text=True, check=True)
    assert "Name: pytest" in shown.stdout


def test_working_directory_and_environment_are_the_callers(tmp_path: Path, mode: str) -> None:
    build_plugin_wheel(tmp_path / "w", "here")
    (tmp_path / "reqs.txt").write_text("dihya-plugin-here\n")
    env = {**os.environ, "PIP_FIND_LINKS": str(tmp_path / "w"), "PIP_NO_INDEX": "1"}
    pipfork.run([*PIP, "install", "--quiet", "--no-deps", "--target", "site", "-r", "reqs.txt"],
                cwd=tmp_path, env=env, check=True)
    assert (tmp_path / "site" / "dihya_plugin_here" / "__init__.py").is_file()
    # the variables are this command's only: the next one, without them, finds nothing
    again = pipfork.run([*PIP, "install", "--quiet", "--no-deps", "--no-index", "--target",
                         "site2", "-r", "reqs.txt"], cwd=tmp_path, capture_output=True)
    assert again.returncode == 1 and not (tmp_path / "site2").exists()


def test_a_venv_gets_its_own_install(tmp_path: Path, mode: str) -> None:
    """The command runs under the interpreter it names: a venv's python installs there."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    python = venv / "bin" / "python"
    if subprocess.run([str(python), "-c", "import pip"], capture_output=True).returncode:
        pytest.skip("the base interpreter has no pip for a --without-pip venv to share")
    wheel = build_plugin_wheel(tmp_path / "w", "venvonly")
    pipfork.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                 "--disable-pip-version-check", str(wheel)], check=True)
    assert Path(origin(python)).is_relative_to(venv)
    assert origin(Path(sys.executable)) == "None"  # not in the test's own environment
    pipfork.run([str(python), "-m", "pip", "uninstall", "--quiet", "-y",
                 "dihya-plugin-venvonly"], check=True)
    assert origin(python) == "None"


def origin(python: Path) -> str:
    code = ("import importlib.util as u; s = u.find_spec('dihya_plugin_venvonly'); "
            "print(s and s.origin)")
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_other_commands_run_as_subprocesses(tmp_path: Path) -> None:
    result = pipfork.run([sys.executable, "-c", "import os; print(os.getcwd())"],
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(tmp_path)
    assert not pipfork.is_pip([sys.executable, "-m", "pytest", "--version"])


def test_a_pip_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    fifo = tmp_path / "reqs.txt"
    os.mkfifo(fifo)  # pip blocks reading it: nobody ever writes
    with pytest.raises(subprocess.TimeoutExpired):
        pipfork.run([*PIP, "install", "--no-deps", "--target", str(tmp_path / "s"), "-r",
                     str(fifo)], timeout=2)
    ok = pipfork.run([*PIP, "show", "pytest"], capture_output=True, check=True)
    assert ok.returncode == 0  # a fresh server serves the next command


def test_servers_per_environment_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command in another environment gets a server of its own; the oldest stop."""
    monkeypatch.setenv("DIHYA_TEST_PIP_FORK", "1")
    monkeypatch.setattr(pipfork, "MAX_SERVERS", 2)
    for i in range(3):
        monkeypatch.setenv("PIPFORK_TEST_ROUND", str(i))
        shown = pipfork.run([*PIP, "show", "pytest"], capture_output=True, text=True)
        assert shown.returncode == 0 and "Name: pytest" in shown.stdout
    assert len(pipfork._servers) <= 2
