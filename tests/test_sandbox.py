"""The sandbox itself: what a jailed process can still reach."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from darwin_git import sandbox


@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap unavailable here")
def test_a_virtualenv_under_tmp_still_runs_inside_the_jail(tmp_path, monkeypatch):
    """The jail mounts an empty /tmp; an interpreter installed under /tmp must still start."""
    venv = Path(tempfile.mkdtemp(prefix="venv-", dir="/tmp"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    monkeypatch.setattr(sys, "prefix", str(venv))  # as if darwin-git were installed in that venv
    work = tmp_path / "work"
    work.mkdir()
    out = sandbox.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.prefix)"], work,
                      sandbox.clean_env({}), 30, 2**30, sandbox.Jail(writable=[work]), tmp_path / "log")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(venv)
    hidden = sandbox.run(["ls", str(tmp_path)], work, sandbox.clean_env({}), 30, 2**30,
                         sandbox.Jail(writable=[work]), tmp_path / "log2")
    assert "log" not in hidden.stdout  # the rest of /tmp stays hidden


def test_the_harness_makes_itself_non_dumpable_for_unsandboxed_genomes():
    """Its /proc/<pid>/environ (an API key) is then out of reach of the user's other processes."""
    script = ("import ctypes; from darwin_git import sandbox; libc = ctypes.CDLL(None)\n"
              "before = libc.prctl(3, 0, 0, 0, 0); sandbox.guard_harness(); print(before, libc.prctl(3, 0, 0, 0, 0))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "0"]  # PR_GET_DUMPABLE before and after
