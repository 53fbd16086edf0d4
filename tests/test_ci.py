"""The CI script's package step (.ci/run): installs the missing Debian packages as root, else nothing."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / ".ci" / "run"
PACKAGES = ["dataset-fashion-mnist", "iverilog", "yosys"]


def ci(*args, **env):
    r = subprocess.run(["bash", str(RUN), *args], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=60)
    return r.returncode, r.stdout, r.stderr


def test_package_step_is_a_no_op_when_present():
    rc, out, err = ci("--dry-run", CI_PKG_CHECK="true", CI_EUID="0")
    assert rc == 0 and "apt-get" not in out + err
    assert "packages present: dataset-fashion-mnist iverilog yosys" in out


def test_package_step_installs_only_the_missing_as_root(tmp_path):
    check = tmp_path / "check"  # "installed" for iverilog and yosys only
    check.write_text('#!/bin/sh\n[ "$1" = iverilog ] || [ "$1" = yosys ]\n')
    check.chmod(0o755)
    rc, out, _ = ci("--dry-run", CI_PKG_CHECK=str(check), CI_EUID="0")
    assert rc == 0
    lines = out.splitlines()
    assert "apt-get update -q" in lines
    assert "apt-get install -y -q --no-install-recommends dataset-fashion-mnist" in lines


def test_package_step_without_root_warns_and_installs_nothing():
    rc, out, err = ci("--dry-run", CI_PKG_CHECK="false", CI_EUID="1000")
    assert rc == 0 and "apt-get" not in out
    assert "not root, not installing dataset-fashion-mnist iverilog yosys" in err


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system (no dpkg-query)")
def test_real_check_on_this_machine():
    """With the real dpkg check: a no-op exactly when all the packages are installed here."""
    present = all(subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout == "install ok installed" for p in PACKAGES)
    rc, out, err = ci("--dry-run", CI_EUID="0")
    assert rc == 0
    assert ("apt-get" not in out) == present


def test_unknown_option_is_refused():
    rc, _, err = ci("--bogus")
    assert rc == 2 and "unknown option --bogus" in err
