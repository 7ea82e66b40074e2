"""The processes a test run leaves behind: Ray's (workers, raylet, GCS, dashboard) and ComfyUI test servers."""

from __future__ import annotations

import os
from pathlib import Path

RAY = ("raylet", "gcs_server", "ray::", "ray/dashboard", "ray/_private", "ray/autoscaler")
SERVER = ("main.py", "--base-directory", "pytest-of-")


def _started_at(pid: str) -> float:
    """A process's start, in seconds since boot."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def since_boot() -> float:
    """Now, in seconds since boot (as _started_at counts)."""
    return float(Path("/proc/uptime").read_text().split()[0])


def ray_processes(after: float = 0.0, servers: bool = False) -> list[str]:
    """Ray processes on this machine started `after` seconds since boot (and, with `servers`, ComfyUI test
    servers), as "pid: command line"."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if int(pid) == os.getpid() or _started_at(pid) < after:
                continue
        except (OSError, IndexError, ValueError):
            continue
        if any(name in cmd for name in RAY) or (servers and all(part in cmd for part in SERVER)):
            out.append(f"{pid}: {cmd[:160]}")
    return out
