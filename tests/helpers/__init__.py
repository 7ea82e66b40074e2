"""Code the tests share (tiny models, toy problems, the ComfyUI server, script runner and browser); no tests here."""

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def stop_process(process: subprocess.Popen, grace_s: float = 15) -> None:
    """Ask a server process to exit (SIGTERM); kill it if it has not within `grace_s`."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)
