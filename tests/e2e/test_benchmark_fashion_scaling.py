"""benchmarks/fashion_scaling.py on the trained world, one seed per class: at 1x every search is the plain sample
(candidate 0 is the stock KSampler's), so its row equals the steps row; at 4x no method spends over its budget; real
test images of the same count, the floor the Frechet distances are read against, score far below the plain sample."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from noise_search.tests.helpers.comfy_server import comfyui_path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("fashion_scaling") / "rows.json"
    proc = subprocess.run([sys.executable, str(BENCH / "fashion_scaling.py"), "--comfyui", str(comfyui_path()),
                           "--seeds", "1", "--multiples", "1", "4", "--methods", "steps", "random", "trust_region",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "| method | 1× (20 NFE) | 4× (80 NFE) |" in proc.stdout
    assert "| random | 0:0 (p 1.000) | " in proc.stdout  # at 1x the plain sample itself
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def rows(output) -> list:
    return output["rows"]


def test_at_1x_every_method_is_the_plain_sample(rows):
    at1 = [r for r in rows if r["multiple"] == 1]
    assert [r["method"] for r in at1] == ["steps", "random", "trust_region"]
    assert len({(r["eval_accuracy"], r["frechet"]) for r in at1}) == 1
    assert all(r["samples"] == 10 and r["nfe_spent"] == 20 for r in at1)


def test_no_method_spends_over_its_budget(rows):
    at4 = {r["method"]: r for r in rows if r["multiple"] == 4}
    assert at4["steps"]["nfe_spent"] == at4["random"]["nfe_spent"] == 80
    assert 0 < at4["trust_region"]["nfe_spent"] <= 80


def test_each_row_keeps_its_per_sample_verdicts(rows):
    for r in rows:
        assert len(r["correct"]) == r["samples"]
        assert sum(r["correct"]) / r["samples"] == pytest.approx(r["eval_accuracy"])


def test_real_images_of_the_same_count_are_the_floor(output):
    real, plain = output["real"], output["rows"][0]
    assert real["samples"] == plain["samples"] == 10 and real["draws"] == 20
    assert real["frechet_sd"] > 0
    assert real["frechet_mean"] + 3 * real["frechet_sd"] < plain["frechet"]
