"""The README's test command is what CI runs, and its Chromium step works with or without apt-get."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-chromium"


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("Install and run the tests"):]
    return re.search(r"^    (\S.*pytest.*)$", section, re.MULTILINE)[1]


def test_ci_runs_exactly_the_readmes_test_command():
    command = _readme_test_command()
    assert command.startswith("scripts/install-chromium && ")  # a fresh machine gets the browser test's Chromium
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def _run(tmp_path: Path, *tools: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in tools:
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n[ "{tool}" = id ] && echo 1000\nexit 0\n')
        (bin_dir / tool).chmod(0o755)
    return subprocess.run(["/bin/bash", str(SCRIPT)], env={"PATH": str(bin_dir)}, capture_output=True, text=True,
                          timeout=30)


def test_with_chromium_present_nothing_is_installed(tmp_path):
    done = _run(tmp_path, "chromium", "apt-get", "sudo", "id")
    assert done.returncode == 0 and done.stderr == "" and not (tmp_path / "calls.log").exists()


def test_without_chromium_apt_get_installs_it(tmp_path):
    done = _run(tmp_path, "apt-get", "sudo", "id")
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[1:] == ["sudo apt-get update -qq", "sudo apt-get install -y -qq chromium"]


def test_without_apt_get_it_says_what_to_do_and_lets_the_tests_run(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 0
    assert "install Chromium (or Chrome) yourself" in done.stderr
    assert os.access(SCRIPT, os.X_OK)
