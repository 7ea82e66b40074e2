"""Fixtures of the end-to-end tests: the tiny SD3 checkpoint and one ComfyUI server per session, both built on first
use and skipped, with the reason, without COMFYUI_PATH; headless Chromium per module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from noise_search.tests.helpers.browser import launch_chromium
from noise_search.tests.helpers.comfy_server import ComfyClient, ComfyEnv, comfyui_path, start_env
from noise_search.tests.helpers.processes import ray_processes, since_boot
from noise_search.tests.helpers.tiny_sd3 import build_tiny_sd3


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory) -> Path:
    """A folder holding the tiny SD3 checkpoint."""
    comfyui_path()  # skips before anything is built
    directory = tmp_path_factory.mktemp("tiny_sd3")
    build_tiny_sd3(directory)
    return directory


@pytest.fixture(scope="session")
def comfy_env(tmp_path_factory, tiny_sd3_dir) -> Iterator[ComfyEnv]:
    """A running ComfyUI server with the pack and the tiny models, stopped when the session ends."""
    env = start_env(comfyui_path(), tmp_path_factory.mktemp("comfy_base"), tiny_sd3_dir)
    yield env
    env.server.stop()


@pytest.fixture
def comfy(comfy_env) -> ComfyClient:
    """The session server's client; fails with the server log when the server has exited."""
    if comfy_env.server.process.poll() is not None:
        pytest.fail(f"the ComfyUI server exited with {comfy_env.server.process.returncode}:\n{comfy_env.server.log()}")
    return comfy_env.client


@pytest.fixture(scope="module")
def chromium():
    """Debian's headless Chromium driven by Playwright; skips with the reason when either is missing."""
    with launch_chromium() as browser:
        yield browser


_STARTED = since_boot()


def pytest_sessionfinish(session, exitstatus) -> None:
    """After every server has stopped: a Ray process or ComfyUI test server started during this run and still
    alive fails the run (workers must never outlive their search or their server)."""
    deadline = time.monotonic() + 30
    while (left := ray_processes(after=_STARTED, servers=True)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("processes left after the test run:\n" + "\n".join(left), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
