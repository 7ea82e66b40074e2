"""Code the tests share (tiny models, toy problems, the ComfyUI server, script runner and browser); no tests here."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "benchmarks"


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


def bench_module(name: str, siblings: Sequence[str] = ("_pack",)) -> ModuleType:
    """benchmarks/<name>.py imported under its own name after the `siblings` it imports, as running the script
    would (the benchmarks folder never goes on sys.path)."""
    for dep in (*siblings, name):
        if dep not in sys.modules:
            spec = importlib.util.spec_from_file_location(dep, BENCH / f"{dep}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[dep] = module
            spec.loader.exec_module(module)
    return sys.modules[name]
