"""benchmarks/overhead.py --smoke end to end: real ComfyUI processes, tiny models in ComfyUI's formats, the JSON rows
it writes (keys, shares, NFEs against the search's own plan, the stock ratio, peak RSS)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noise_search.search import estimate_nfe
from noise_search.tests.helpers.comfy_server import comfyui_path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def _overhead():
    """benchmarks/overhead.py as a module (it imports neither ComfyUI nor its siblings at import time)."""
    if "overhead_benchmark" not in sys.modules:
        spec = importlib.util.spec_from_file_location("overhead_benchmark", BENCH / "overhead.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["overhead_benchmark"] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules["overhead_benchmark"]


def planned_nfe(algorithm: str, steps: int, candidates: int) -> int:
    """The search's own plan for euler (one NFE per step) at the node's defaults: sigma values do not matter."""
    return estimate_nfe(algorithm, torch.linspace(1.0, 0.0, steps + 1), lambda s: len(s) - 1, n=candidates)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    comfyui = comfyui_path()
    out = tmp_path_factory.mktemp("overhead") / "rows.json"
    proc = subprocess.run([sys.executable, str(BENCH / "overhead.py"), "--smoke", "--comfyui", str(comfyui),
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text()), proc.stdout


def test_smoke_rows_have_exactly_the_keys_and_one_row_per_planned_configuration(smoke):
    rows, stdout = smoke
    bench = _overhead()
    config, memory = bench.SMOKE.configs[0], bench.SMOKE.memory
    expected = [(f"{config.name}:{a}", d) for a, d in bench.SMOKE.runs]
    expected += [(f"{config.name}:stock", "full VAE"), (f"{memory.name}:random", "full VAE")]
    assert [(r["algorithm"], r["decode"]) for r in rows] == expected
    assert {d for _, d in bench.SMOKE.runs} == set(bench.DECODES)  # every scoring decode goes through the script
    for r in rows:
        assert tuple(r) == bench.KEYS
        assert r["algorithm"] in stdout  # the printed table has every row


def test_smoke_shares_are_measured_and_sum_to_one(smoke):
    rows, _ = smoke
    for r in rows:
        shares = [r[k] for k in ("model_share", "decode_share", "verify_share", "other_share")]
        assert all(0.0 <= s <= 1.0 for s in shares), r
        assert abs(sum(shares) - 1.0) < 1e-3, r
        assert r["model_share"] > 0 and r["decode_share"] > 0, r  # the timers saw the model and the VAE
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 100, r
    searches = [r for r in rows if not r["algorithm"].endswith(":stock")]
    assert all(r["verify_share"] > 0 for r in searches)
    assert all(r["verify_share"] == 0 for r in rows if r["algorithm"].endswith(":stock"))


def test_smoke_nfe_equals_the_search_plan_and_ratio_is_against_stock(smoke):
    rows, _ = smoke
    bench = _overhead()
    config, memory = bench.SMOKE.configs[0], bench.SMOKE.memory
    by_label = {r["algorithm"]: r for r in rows}
    n = config.settings["candidates"]
    for r, (algorithm, _) in zip(rows, bench.SMOKE.runs):
        assert r["nfe"] == planned_nfe(algorithm, config.steps, n)
    assert by_label[f"{memory.name}:random"]["nfe"] == planned_nfe("random", memory.steps,
                                                                   memory.settings["candidates"])
    stock = by_label[f"{config.name}:stock"]
    assert stock["nfe"] == n * config.steps  # B = all candidates at once on the CPU
    assert stock["ratio_to_stock"] == 1.0
    assert all(r["ratio_to_stock"] > 0 for r in rows)


def test_video_rows_run_a_wan_class_model_with_the_real_wan_vae(tmp_path):
    """--video, shrunk to 32 px and 4 steps: a random and a racing search over Wan 2.1-layout clips, stock, and the
    memory row over clips of 9 frames."""
    out = tmp_path / "video.json"
    proc = subprocess.run([sys.executable, str(BENCH / "overhead.py"), "--video", "--size", "32", "--steps", "4",
                           "--memory-candidates", "3", "--memory-size", "32", "--memory-frames", "9",
                           "--comfyui", str(comfyui_path()), "--json", str(out)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    rows = {r["algorithm"]: r for r in json.loads(out.read_text())}
    assert list(rows) == ["video:random", "video:racing", "video:stock", "memory:random"]
    assert "memory: random over 3 clips of 9 frames at 32 px" in proc.stdout
    assert rows["memory:random"]["nfe"] == 3 and rows["memory:random"]["peak_rss_mb"] > 0
    n = _overhead().VIDEO.configs[0].settings["candidates"]
    assert rows["video:random"]["nfe"] == planned_nfe("random", 4, n)
    assert rows["video:racing"]["nfe"] == estimate_nfe("racing", torch.linspace(1.0, 0.0, 5), lambda s: len(s) - 1,
                                                       n=n) < rows["video:random"]["nfe"]
    assert all(r["decode_share"] > 0 and r["ratio_to_stock"] > 0 for r in rows.values())
