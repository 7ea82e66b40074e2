"""benchmarks/train_fashion.py in smoke mode (three steps a stage) from Debian's Fashion-MNIST: every stage writes
its file, the checkpoint assembled from them samples through ComfyUI's loader and KSampler (the check stage), and a
stage run again from the same inputs writes the same bytes (own generators, fixed threads)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from noise_search.tests.helpers import bench_module, unavailable
from noise_search.tests.helpers.comfy_server import comfyui_path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def train(out: Path, *only: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH / "train_fashion.py"), "--comfyui", str(comfyui_path()), "--smoke",
                           "--out", str(out), *(("--only", *only) if only else ())],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads((out / "fashion_training.json").read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    world = bench_module("fashion_world")
    if not (world.DATA / "train-images-idx3-ubyte.gz").is_file():
        unavailable(f"no Fashion-MNIST at {world.DATA}: apt-get install dataset-fashion-mnist")
    out = tmp_path_factory.mktemp("fashion_smoke")
    return out, train(out)


def test_every_stage_writes_its_weights_and_the_checkpoint_samples(smoke):
    out, record = smoke
    files = bench_module("fashion_world").FILES
    for name in ("mmdit", "vae", "preview", "evaluator"):
        assert (out / files[name]).stat().st_size > 100_000, name
    assert (out / files["clip"] / "model.safetensors").is_file() and (out / files["clip"] / "vocab.json").is_file()
    assert set(record) >= {"evaluator", "clip", "vae", "mmdit", "preview", "check"}
    assert 0.0 <= record["check"]["class_accuracy_one_seed"] <= 1.0  # ten samples drawn and classified


def test_a_stage_run_again_writes_the_same_bytes(smoke, tmp_path):
    out, _ = smoke
    again = tmp_path / "again"
    shutil.copytree(out, again)
    files = bench_module("fashion_world").FILES
    for name in ("evaluator", "mmdit"):
        (again / files[name]).unlink()
    train(again, "evaluator", "mmdit")
    for name in ("evaluator", "mmdit"):
        assert (again / files[name]).read_bytes() == (out / files[name]).read_bytes(), name
