"""The trained miniature world (benchmarks/train_fashion.py) through the real server: its checkpoint, preview decoder
and scoring CLIP load through ComfyUI's and the pack's loaders, and a Random search of 8 candidates scored by the
CLIP makes the prompted garment more often than the plain KSampler sample of the same seed, as judged by the
evaluator (trained on a disjoint split and never a verifier)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from noise_search.tests.e2e.test_e2e_nodes import SETTINGS, Graph
from noise_search.tests.helpers import bench_module
from noise_search.tests.helpers.comfy_server import comfyui_path, start_env

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

SEEDS = range(100, 112)  # 12 seeds x 10 classes: 120 paired samples
STEPS, CFG, CANDIDATES = 20, 1.0, 8  # guidance 1.0 as the paper samples (and the digits benchmark)
MARGIN = 0.05  # the search's accuracy over the plain sample's, at least
ALPHA = 0.05  # and McNemar's exact one-sided test rejects "no better" at this level
SPEARMAN_AT_LEAST = 0.5


def world():
    return bench_module("fashion_world")


@pytest.fixture(scope="module")
def fashion_env(tmp_path_factory, tiny_sd3_dir):
    base = tmp_path_factory.mktemp("comfy_fashion")
    env = start_env(comfyui_path(), base, tiny_sd3_dir)
    world().install(base / "models")
    yield env
    env.server.stop()


def png_to_tensor(data: bytes) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0)


def class_graph(label: int) -> tuple[dict, dict]:
    """For one class: per seed, the stock KSampler's image and the Random search's best image (previews)."""
    w = world()
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=w.CHECKPOINT)
    text = g.node("PrimitiveStringMultiline", value=w.caption(label))
    pos = g.node("CLIPTextEncode", text=g.out(text), clip=g.out(ckpt, 1))
    neg = g.node("CLIPTextEncode", text="", clip=g.out(ckpt, 1))
    latent = g.node("EmptySD3LatentImage", width=w.SIZE, height=w.SIZE, batch_size=1)
    verifier = g.node("NoiseSearchVerifierLoader", kind="clip_score", model=w.FILES["clip"], device="auto",
                      dtype="auto", allow_download=False, labels="", target="")
    common = dict(model=g.out(ckpt), positive=g.out(pos), negative=g.out(neg), steps=STEPS, cfg=CFG,
                  sampler_name="euler", scheduler="simple", denoise=1.0, latent_image=g.out(latent))
    out = {}
    for seed in SEEDS:
        plain = g.node("KSampler", seed=seed, **common)
        decoded = g.node("VAEDecode", samples=g.out(plain), vae=g.out(ckpt, 2))
        search = g.node("NoiseSearchSampler", seed=seed, **common, vae=g.out(ckpt, 2), verifier=g.out(verifier),
                        prompt=g.out(text), **dict(SETTINGS, algorithm="random", candidates=CANDIDATES, top_k=1))
        out[seed] = (g.node("PreviewImage", images=g.out(decoded)), g.node("PreviewImage", images=g.out(search, 1)))
    return g.nodes, out


@pytest.fixture(scope="module")
def judged(fashion_env) -> dict:
    """Per (class, seed): whether the evaluator finds the prompted class in the plain and in the searched image."""
    evaluator, _ = world().load_evaluator()
    out = {}
    for label in range(len(world().CLASSES)):
        prompt, nodes = class_graph(label)
        run = fashion_env.client.run(prompt, timeout=900).check()
        for seed, (plain, search) in nodes.items():
            images = [png_to_tensor(fashion_env.client.images(run, node)[0]) for node in (plain, search)]
            with torch.no_grad():
                guess = evaluator(torch.stack(images).movedim(-1, 1)).argmax(1).tolist()
            out[label, seed] = (guess[0] == label, guess[1] == label)
    return out


def test_the_trained_models_load_through_comfyuis_loaders(fashion_env):
    info = fashion_env.client.object_info(refresh=True)
    w = world()
    assert w.CHECKPOINT in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    models = Path(fashion_env.base) / "models"
    assert (models / "vae_approx" / w.PREVIEW).is_file() and (models / "verifiers" / w.FILES["clip"]).is_dir()


def test_random_search_makes_the_prompted_garment_more_often(judged):
    plain = sum(p for p, _ in judged.values()) / len(judged)
    search = sum(s for _, s in judged.values()) / len(judged)
    better = sum(s and not p for p, s in judged.values())
    worse = sum(p and not s for p, s in judged.values())
    p_value = world().mcnemar_one_sided(better, worse)
    print(f"plain {plain:.3f}, search {search:.3f}, discordant {better}:{worse}, p {p_value:.4f}")
    assert search >= plain + MARGIN and p_value < ALPHA, (
        f"evaluator accuracy: plain {plain:.2f}, search {search:.2f}; discordant pairs {better} for, {worse} "
        f"against (p = {p_value:.3f})")


RANK_CANDIDATES = 16


@pytest.fixture(scope="module")
def rank_agreement(tmp_path_factory) -> dict:
    """benchmarks/rank_agreement.py on the world, one prompt per class: the README's figures."""
    base = tmp_path_factory.mktemp("fashion_rank")
    w = world()
    paths = w.install(base / "models")
    out = base / "agreement.json"
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "rank_agreement.py"
    proc = subprocess.run([sys.executable, str(bench), "--comfyui", str(comfyui_path()), "--base-directory", str(base),
                           "--checkpoint", w.CHECKPOINT, "--verifier-model", str(paths["clip"]), "--decode",
                           "TAESD for all", "--candidates", str(RANK_CANDIDATES), "--steps", str(STEPS), "--size",
                           str(w.SIZE), "--cfg", str(CFG), "--prompts", *[w.caption(c) for c in range(len(w.CLASSES))],
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text())


def test_the_preview_decoder_ranks_candidates_like_the_vae(rank_agreement):
    """The distilled TAESD decoder's scores order the same candidates as the full VAE's, far above chance (0)."""
    assert len(rank_agreement["prompts"]) == 10
    assert all(r["latent_max_diff"] == 0.0 for r in rank_agreement["prompts"])  # the same candidates
    assert rank_agreement["mean_spearman"] > SPEARMAN_AT_LEAST, rank_agreement
