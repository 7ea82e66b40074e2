"""benchmarks/rank_agreement.py end to end in a real ComfyUI process: the tiny SD3 checkpoint, a TAESD decoder in
models/vae_approx and a tiny CLIP verifier; both searches sample the same candidates and the statistics are the
ones of the two score lists it reports (random weights: the values themselves mean nothing)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file

from noise_search.tests.helpers import bench_module
from noise_search.tests.helpers.comfy_server import comfyui_path
from noise_search.tests.helpers.tiny_models import make_hf_clip
from noise_search.tests.helpers.tiny_sd3 import FILENAME, build_tiny_sd3, tiny_taesd_state_dict

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("rank_base")
    build_tiny_sd3(base / "models" / "checkpoints")
    approx = base / "models" / "vae_approx"
    approx.mkdir(parents=True)
    save_file({k[len("taesd_decoder."):]: v for k, v in tiny_taesd_state_dict(16, seed=3).items()
               if k.startswith("taesd_decoder.")}, str(approx / "taesd3_decoder.safetensors"))
    make_hf_clip(base / "clip", seed=4)  # a seed whose cosines are positive: CLIPScore clamps the rest to 0
    return base


def agreement(base: Path, decode: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH / "rank_agreement.py"), "--comfyui", str(comfyui_path()),
                           "--base-directory", str(base), "--checkpoint", FILENAME, "--verifier-model",
                           str(base / "clip"), "--decode", decode, "--candidates", "6", "--steps", "2", "--size",
                           "64", "--prompts", "a red cube", "a blue dog", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text())


def test_taesd_scores_are_compared_with_vae_scores_of_the_same_candidates(base, tmp_path):
    ra = _module()
    result = agreement(base, "TAESD for all", tmp_path / "taesd.json")
    assert [r["prompt"] for r in result["prompts"]] == ["a red cube", "a blue dog"]
    for row in result["prompts"]:
        assert len(row["full"]) == len(row["fast"]) == 6
        assert row["latent_max_diff"] == 0.0  # same seed, same candidates: only the decode differs
        assert row["full"] != row["fast"]  # TAESD's images are not the VAE's
        assert row["spearman"] == pytest.approx(ra.spearman(row["full"], row["fast"]))
        assert row["kendall"] == pytest.approx(ra.kendall(row["full"], row["fast"]))
    assert result["mean_spearman"] == pytest.approx(sum(r["spearman"] for r in result["prompts"]) / 2)


def test_the_full_vae_against_itself_agrees_exactly(base, tmp_path):
    result = agreement(base, "full VAE", tmp_path / "vae.json")
    for row in result["prompts"]:
        assert row["full"] == row["fast"]
        assert math.isclose(row["spearman"], 1.0) and row["same_winner"] and row["top4_overlap"] == 1.0


def _module():
    return bench_module("rank_agreement")
