"""Code the tests share (tiny models, toy problems, the ComfyUI server, script runner and browser); no tests here."""

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def stop_process(process: subprocess.Popen, grace_s: float = 15) -> None:
    """Ask a server process to exit (SIGTERM); kill it if it has not within `grace_s`."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test for a missing dependency, except in CI (`CI` set), where .ci/run installs every one
    and a skip would hide a suite that never ran: there the test fails with the reason."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason} (CI is set: .ci/run installs this, so its absence is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(reason)
