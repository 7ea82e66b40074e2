"""A search spread over Ray workers (Noise Search Workers, two CPU-only workers on a local Ray) through the real
server with the tiny SD3: every algorithm gives the one-process result; a worker killed mid-search changes nothing,
with one progress bar over the workers' NFEs and the best-so-far preview;
Cancel stops every worker; a two-node cluster on loopback gives the same result; a model file a worker cannot find
fails the search naming the worker's host and the file; a local Ray listens on 127.0.0.1 only; no Ray process is
left after a search.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import pytest

from noise_search.tests.e2e.test_e2e_nodes import SETTINGS, add_sampler, base_graph, report_of
from noise_search.tests.helpers import unavailable
from noise_search.tests.helpers.comfy_server import comfyui_path, free_port, start_env
from noise_search.tests.helpers.processes import ray_processes, since_boot

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

ALGORITHMS = ("random", "zero_order", "paths", "smc", "trust_region", "evolution", "racing")
SEARCH = dict(candidates=4, evo_generations=1, tr_rounds=1, tr_regions=2, tr_per_region=1, race_eta=2,
              race_rungs="0.75, 0.5", smc_interval=0.25)


@pytest.fixture(scope="module")
def ray_available():
    try:
        import ray  # noqa: F401
    except ImportError:
        unavailable("Ray is not installed (pip install ray, the dev extra has it)")


def pair(env, algorithm: str, seed: int, workers: dict | None, **settings):
    """One prompt: the search without workers and the same search with them; returns (prompt, viewers)."""
    g, n = base_graph(env)
    viewers = []
    for spread in (None, workers):
        extra = {}
        if spread is not None:
            extra["workers"] = g.out(g.node("NoiseSearchWorkers", **spread))
        search = add_sampler(g, n, "ksampler", seed, **dict(SEARCH, algorithm=algorithm, **settings), **extra)
        viewers.append(g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1))
    return g.nodes, viewers


def compare(run, viewers) -> tuple[dict, dict]:
    """The first item of each search's report, with the report's notes."""
    reports = [report_of(run, v) for v in viewers]
    one, spread = (dict(r["items"][0], notes=r["notes"]) for r in reports)
    return one, spread


def assert_same_search(one: dict, spread: dict) -> None:
    """Same winner, candidates, lineages, NFEs; scores equal within the batch-size tests' tolerance."""
    assert spread["best_id"] == one["best_id"]
    assert spread["nfe"] == one["nfe"] == one["nfe_planned"]
    assert [(c["id"], c["parent"], c["kind"], c["final"]) for c in spread["candidates"]] == [
        (c["id"], c["parent"], c["kind"], c["final"]) for c in one["candidates"]]
    assert [c["score"] for c in spread["candidates"]] == pytest.approx([c["score"] for c in one["candidates"]],
                                                                     abs=1e-3)


LOCAL = dict(address="", workers=2, gpus_per_worker=0.0)
LOOPBACK = ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")  # as `ss` shows a listening socket's local address


def local_search(env, seed: int, **settings) -> dict:
    """A search over two local workers (4096 candidates, long enough to stop while they run, unless told
    otherwise), with a Score Viewer as its output."""
    g, n = base_graph(env)
    workers = g.out(g.node("NoiseSearchWorkers", **LOCAL))
    search = add_sampler(g, n, "ksampler", seed, **dict(dict(candidates=4096, batch_size=1), **settings),
                         workers=workers)
    g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    return g.nodes


def wait_ready(env, mark: int, prompt_id: Optional[str] = None) -> None:
    """Until the server logs that the search's workers are ready (after log offset `mark`)."""
    deadline = time.monotonic() + 300
    while "Ray workers ready" not in env.server.log(10 ** 9)[mark:]:
        assert time.monotonic() < deadline, "the workers never became ready"
        if prompt_id is not None:
            assert env.client.history(prompt_id) is None, "the search ended before its workers were ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def every_algorithm(comfy_env, ray_available) -> dict:
    out = {}
    for i, algorithm in enumerate(ALGORITHMS):
        prompt, viewers = pair(comfy_env, algorithm, 300 + i, LOCAL)
        run = comfy_env.client.run(prompt, timeout=900).check()
        out[algorithm] = compare(run, viewers)
        out[algorithm + ":leftover"] = ray_processes()
    return out


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_two_local_workers_give_the_one_process_result(every_algorithm, algorithm):
    one, spread = every_algorithm[algorithm]
    assert_same_search(one, spread)
    workers = {c["extra"].get("worker") for c in spread["candidates"]}
    assert workers == {0, 1}, f"candidates ran on workers {workers}"
    assert any(n.startswith("spread over 2 Ray workers: worker 0") for n in spread["notes"]), spread["notes"]


def test_no_ray_process_is_left_after_a_search(every_algorithm):
    for algorithm in ALGORITHMS:
        assert every_algorithm[algorithm + ":leftover"] == [], algorithm


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory, tiny_sd3_dir, ray_available):
    """A second server whose worker 1 exits at the start of its third call (a process lost mid-search), with
    previews on."""
    env = start_env(comfyui_path(), tmp_path_factory.mktemp("comfy_fault"), tiny_sd3_dir,
                    env={"NOISE_SEARCH_TEST_WORKER_EXIT": "1:3"}, args=("--preview-method", "auto"))
    yield env
    env.server.stop()


@pytest.mark.parametrize("algorithm", ["random", "racing"])
def test_a_worker_lost_mid_search_changes_nothing(fault_env, algorithm):
    prompt, viewers = pair(fault_env, algorithm, 400, LOCAL, candidates=6, batch_size=1)  # worker 1: 3+ calls
    run, events = fault_env.client.watch(prompt, timeout=900)
    one, spread = compare(run.check(), viewers)
    assert_same_search(one, spread)
    assert any("worker 1" in n and "was lost mid-search" in n for n in spread["notes"]), spread["notes"]
    assert ray_processes() == []
    node = prompt[viewers[1]]["inputs"]["report"][0]
    bar = [(e["data"]["value"], e["data"]["max"]) for e in events
           if e["type"] == "progress" and e["data"].get("node") == node]
    assert bar and bar[-1] == (spread["nfe"], spread["nfe"]) and {m for _, m in bar} == {spread["nfe"]}, bar
    assert [v for v, _ in bar] == sorted(v for v, _ in bar), bar
    previews = [e for e in events if e["type"] == "binary" and e["event"] in (1, 4) and e["node"] == node]
    assert previews, "no best-so-far preview came from the spread search"


@pytest.fixture(scope="module")
def interrupted(comfy_env, ray_available) -> dict:
    """One long search over local workers: the sockets Ray listens on while they run, then Cancel."""
    comfy = comfy_env.client
    mark = len(comfy_env.server.log(10 ** 9))
    prompt_id = comfy.queue(local_search(comfy_env, 500))
    try:
        wait_ready(comfy_env, mark, prompt_id)
        listening = (subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
                     if shutil.which("ss") else None)
        time.sleep(2.0)
        running = comfy.history(prompt_id) is None
    finally:
        start = time.monotonic()
        comfy.interrupt()
        run = comfy.wait(prompt_id, timeout=120)
    return dict(listening=listening, running=running, run=run, stopped_after=time.monotonic() - start,
                leftover=ray_processes())


def test_cancel_stops_every_worker(interrupted):
    run = interrupted["run"]
    assert interrupted["running"], "the search finished before it could be interrupted"
    assert run.status == "error" and run.message("execution_interrupted") is not None, run.messages
    stopped_after = interrupted["stopped_after"]
    assert stopped_after < 20.0, f"the search took {stopped_after:.1f}s to stop after /interrupt (Ray shut down)"
    assert interrupted["leftover"] == []


def test_a_local_ray_listens_on_loopback_only(interrupted):
    """While workers run: every listening socket of a Ray process is bound to the loopback address."""
    listening = interrupted["listening"]
    if listening is None:
        unavailable("`ss` (Debian's iproute2) lists the listening sockets")
    ray_lines = [line for line in listening.splitlines()
                 if any(name in line for name in ("raylet", "gcs_server", "ray::", "dashboard"))]
    assert ray_lines, listening
    exposed = [line for line in ray_lines if line.split()[3].rsplit(":", 1)[0] not in LOOPBACK]
    assert exposed == [], exposed


@pytest.fixture
def cluster(ray_available):
    """`ray start --head` on 127.0.0.1 and a second node joining it, each with its own temp folder and one CPU.
    The folders are short (Ray's socket paths must fit in 107 bytes); the cluster runs without Ray's token
    authentication."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    port = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    tmp_path = Path(tempfile.mkdtemp(prefix="nsray"))
    started = since_boot()
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]

    def ray(*args: str) -> None:
        proc = subprocess.run([ray_cli, *args], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"ray {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    try:
        ray("start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir",
            str(tmp_path / "head"), *common)
        ray("start", "--address", f"127.0.0.1:{port}", "--temp-dir", str(tmp_path / "second"), *common)
        yield f"127.0.0.1:{port}"
    finally:
        stop_cluster(tmp_path, started)
        shutil.rmtree(tmp_path, ignore_errors=True)


def stop_cluster(folder: Path, started: float) -> None:
    """Stop the test cluster as `ray stop --force` would, but only its own processes (`ray stop` would stop every
    Ray on the machine): those naming its temp `folder`, then the Ray processes started since `started` that
    outlive them (renamed ones, such as ray::DashboardAgent, name no folder)."""
    def kill(lines: list) -> None:
        for line in lines:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)

    kill([line for line in ray_processes(after=started) if str(folder) in line])
    deadline = time.monotonic() + 10
    while ray_processes(after=started) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill(ray_processes(after=started))
    deadline = time.monotonic() + 10
    while ray_processes(after=started) and time.monotonic() < deadline:
        time.sleep(0.5)


def test_a_two_node_cluster_on_loopback_gives_the_same_result(comfy, comfy_env, cluster):
    """After a search over a local Ray (which turns Ray's token authentication on in the server's process), a
    cluster without tokens: the workers it places still run."""
    comfy.run(local_search(comfy_env, 599, candidates=2), timeout=900).check()
    prompt, viewers = pair(comfy_env, "random", 600, dict(address=cluster, workers=2, gpus_per_worker=0.0))
    one, spread = compare(comfy.run(prompt, timeout=900).check(), viewers)
    assert_same_search(one, spread)


def test_a_model_file_a_worker_lacks_fails_naming_the_host_and_the_file(comfy, comfy_env, ray_available):
    """The master loaded (and cached) a checkpoint that has since gone: the workers, which load it themselves,
    cannot find it, as a cluster machine without the file."""
    checkpoints = comfy_env.base / "models" / "checkpoints"
    name = "worker_lacks_this.safetensors"
    (checkpoints / name).symlink_to((checkpoints / comfy_env.checkpoint).resolve())
    try:
        g, n = base_graph(comfy_env)
        g.nodes[n["ckpt"]]["inputs"]["ckpt_name"] = name
        first = add_sampler(g, n, "ksampler", 700, **dict(SETTINGS, candidates=1))
        g.node("NoiseSearchScoreViewer", report=g.out(first, 4), pick=-1)
        comfy.run(g.nodes, timeout=300).check()  # the master loads it; ComfyUI caches the loader's output
        (checkpoints / name).unlink()
        (checkpoints / name).symlink_to(checkpoints / "gone.safetensors")  # listed, but no file behind it
        g2, n2 = base_graph(comfy_env)
        g2.nodes[n2["ckpt"]]["inputs"]["ckpt_name"] = name
        workers = g2.out(g2.node("NoiseSearchWorkers", **LOCAL))
        search = add_sampler(g2, n2, "ksampler", 700, **dict(SETTINGS, candidates=1), workers=workers)
        g2.node("NoiseSearchScoreViewer", report=g2.out(search, 4), pick=-1)
        run = comfy.run(g2.nodes, timeout=900)
        assert run.status == "error", run.messages
        message = run.error["exception_message"]
        for needle in ("Noise Search Sampler: worker", "CheckpointLoaderSimple", name, "not found"):
            assert needle in message, message
        assert ray_processes() == []
    finally:
        (checkpoints / name).unlink(missing_ok=True)


AGENTS_S = 180  # Ray's agents (ray::DashboardAgent, ray::RuntimeEnvAgent) notice a dead cluster late


def test_comfyui_exiting_mid_search_leaves_no_worker(tmp_path, tiny_sd3_dir, ray_available):
    """A server stopped (SIGTERM, as a service manager does) while its workers search: the workers go with it, and
    Ray's own agents, which notice the lost cluster later, within AGENTS_S."""
    env = start_env(comfyui_path(), tmp_path, tiny_sd3_dir)
    try:
        env.client.queue(local_search(env, 502))
        wait_ready(env, 0)
        assert any("ray::SearchWorker" in p for p in ray_processes()), "no worker ran while the search did"
    finally:
        env.server.stop()
    stopped = time.monotonic()
    while any("ray::SearchWorker" in p for p in ray_processes()) and time.monotonic() - stopped < 60:
        time.sleep(0.5)
    assert not any("ray::SearchWorker" in p for p in ray_processes()), "a worker outlived ComfyUI by a minute"
    while ray_processes() and time.monotonic() - stopped < AGENTS_S:
        time.sleep(0.5)
    assert ray_processes() == [], f"Ray's own processes outlived ComfyUI by {AGENTS_S} s"


def test_the_workers_benchmark_gives_a_ratio_per_row_and_the_same_winner(comfy_env, tmp_path, ray_available):
    """benchmarks/workers.py against the session server: a row without workers, one per worker count, ratios."""
    out = tmp_path / "rows.json"
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "workers.py"
    proc = subprocess.run([sys.executable, str(bench), "--url", comfy_env.client.url, "--checkpoint",
                           comfy_env.checkpoint, "--latent-node", "EmptySD3LatentImage", "--verifier-model",
                           comfy_env.verifier_models["clip_score"], "--size", "64", "--steps", "4", "--cfg", "3",
                           "--candidates", "4", "--workers", "1", "2", "--gpus-per-worker", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rows = json.loads(out.read_text())
    assert [r["workers"] for r in rows] == [0, 1, 2]
    assert {r["nfe"] for r in rows} == {16} and all(r["same_winner"] for r in rows)
    assert rows[0]["ready_s"] == 0 and rows[0]["search_ratio"] == rows[0]["total_ratio"] == 1.0
    for r in rows[1:]:
        assert 0 < r["ready_s"] < r["seconds"]
        assert r["search_ratio"] == pytest.approx(rows[0]["search_s"] / r["search_s"], abs=1e-3)
        assert r["total_ratio"] == pytest.approx(rows[0]["seconds"] / r["seconds"], abs=1e-3)
    assert "search x" in proc.stdout and proc.stdout.count("same") == 3
    assert ray_processes() == []
