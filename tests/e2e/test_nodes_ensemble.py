"""The search node with a Verifier Ensemble (in a subprocess with ComfyUI on its path, the tiny SD3): every final's
score is the ensemble's aggregate over all finals and the winner is its argmax, at batch_size 1 and 4 alike."""

from __future__ import annotations

import pytest
import torch

from noise_search.tests.helpers import REPO_ROOT
from noise_search.tests.helpers.comfy_script import run_script
from noise_search.tests.helpers.tiny_sd3 import FILENAME
from noise_search.verifiers.ensemble import combine

pytestmark = pytest.mark.comfyui

# Runs with cwd=COMFYUI_PATH (`-c`, so sys.path[0] is ComfyUI, never this repository).
SCRIPT = r'''
import json, sys
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import importlib.util
spec = importlib.util.spec_from_file_location("_pack", REPO + "/benchmarks/_pack.py")
pack = importlib.util.module_from_spec(spec); spec.loader.exec_module(pack); pack.load_pack()

import torch
import comfy.model_patcher, comfy.sd
from noise_search.nodes import NoiseSearchSampler, NoiseSearchVerifierEnsemble
from noise_search.nodes.types import LoadedVerifier, VerifierWeights
from noise_search.verifiers.base import Verifier

class Tint(Verifier):
    """Mean of a weighted sum of the colour channels: "red" and "blue minus red" rank images differently."""
    def __init__(self, name, weights):
        super().__init__()
        self.name, self.weights, self.model = name, torch.tensor(weights), torch.nn.Linear(1, 1)
    def _score(self, images, prompt, references):
        return (images.float() * self.weights).sum(-1).mean(dim=(1, 2))

def handle(verifier):
    cpu = torch.device("cpu")
    return LoadedVerifier(verifier, [comfy.model_patcher.ModelPatcher(VerifierWeights(verifier.model), cpu, cpu)])

model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(PATH, output_vae=True, output_clip=True)
cond, pooled = clip.encode_from_tokens(clip.tokenize("a red cube"), return_pooled=True)
positive = [[cond, {"pooled_output": pooled}]]
negative = [[torch.zeros_like(cond), {"pooled_output": torch.zeros_like(pooled)}]]
ensemble = NoiseSearchVerifierEnsemble.execute(handle(Tint("red", [1.0, 0.0, 0.0])),
                                               handle(Tint("blue_red", [-1.0, 0.0, 1.0])), "1, 2", "rank").args[0]
SET = dict(candidates=4, zo_rounds=2, zo_step_cos=0.9, paths_branches=2, paths_sigma_start=0.75, paths_delta_f=0.25,
           paths_delta_b=0.5, paths_max_rounds=2, budget_nfe=0, top_k=3)
out = {}
for algorithm in ("random", "zero_order", "paths"):
    for batch_size in (1, 4):
        report = NoiseSearchSampler.execute(model, positive, negative, {"samples": torch.zeros(1, 16, 8, 8)}, 7, 4,
                                            3.0, "euler", "simple", 1.0, vae, ensemble, "",
                                            algorithm=algorithm, batch_size=batch_size, **SET).args[4]
        r = report.results[0]
        out[f"{algorithm}_{batch_size}"] = {
            "candidates": [[c.id, c.parent, c.round, c.sigma, c.score, c.members] for c in r.candidates],
            "best_id": r.best_id, "topk_ids": r.topk_ids, "notes": r.notes, "members": report.members}
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def result(tiny_sd3_dir) -> dict:
    script = SCRIPT.replace("PATH", repr(str(tiny_sd3_dir / FILENAME))).replace("REPO", repr(str(REPO_ROOT)))
    return run_script(script, timeout=600)


def _decided_over(cands: list) -> list:
    """combine over this set of logged candidates [id, parent, round, sigma, score, members], as the node weighs it."""
    raw = {n: torch.tensor([c[5][n] for c in cands]) for n in ("red", "blue_red")}
    return combine(raw, weights=[1.0, 2.0]).tolist()


@pytest.mark.parametrize("algorithm", ["random", "zero_order", "paths"])
def test_node_ensemble_decides_over_whole_sets_at_every_batch_size(result, algorithm):
    runs = [result[f"{algorithm}_{b}"] for b in (1, 4)]
    for run in runs:
        assert run["members"] == ["red", "blue_red"]
        finals = [c for c in run["candidates"] if c[3] == 0.0]
        expected = _decided_over(finals)
        assert [c[4] for c in finals] == expected  # scores over all finals, whatever chunk they came in
        order = sorted(range(len(finals)), key=lambda j: (-expected[j], finals[j][0]))
        assert run["best_id"] == finals[order[0]][0] and run["topk_ids"] == [finals[j][0] for j in order[:3]]
        for r in {c[2] for c in run["candidates"] if c[3] != 0.0 and c[4] is not None}:  # Paths: each whole round
            same_round = [c for c in run["candidates"] if c[2] == r]
            assert [c[4] for c in same_round] == _decided_over(same_round)
        red, blue_red = (sorted(finals, key=lambda c: c[5][n]) for n in ("red", "blue_red"))
        assert red != blue_red, "the members rank the finals alike: the test would prove little"
    # batched model calls round differently (up to 1e-4 in the latents), so raw members may differ in their last
    # bits, but every decision (pivots, kept paths, winner, top-k) is the same
    assert [c[:4] for c in runs[0]["candidates"]] == [c[:4] for c in runs[1]["candidates"]]
    assert (runs[0]["best_id"], runs[0]["topk_ids"], runs[0]["notes"]) == (runs[1]["best_id"], runs[1]["topk_ids"],
                                                                           runs[1]["notes"])
