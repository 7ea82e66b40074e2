"""A video search on the real server: the tiny Wan 2.1 through UNETLoader and VAELoader, an Empty Hunyuan Latent
Video, CLIPScore on three frames per clip, the winner saved by the stock Save Animated WEBP and shown by the Score
Viewer."""

from __future__ import annotations

import io

import pytest

pytestmark = pytest.mark.comfyui


def video_prompt(env, seed: int) -> dict:
    def link(node, index=0):
        return [str(node), index]

    nodes = {
        1: ("UNETLoader", {"unet_name": env.wan_model, "weight_dtype": "default"}),
        2: ("VAELoader", {"vae_name": env.wan_vae}),
        3: ("CheckpointLoaderSimple", {"ckpt_name": env.checkpoint}),  # its CLIP gives Wan's 4096-wide text states
        4: ("CLIPTextEncode", {"text": "a red ball bouncing", "clip": link(3, 1)}),
        5: ("CLIPTextEncode", {"text": "", "clip": link(3, 1)}),
        6: ("EmptyHunyuanLatentVideo", {"width": 32, "height": 32, "length": 5, "batch_size": 1}),
        7: ("NoiseSearchVerifierLoader", {"kind": "clip_score", "model": env.verifier_models["clip_score"],
                                          "device": "auto", "dtype": "auto", "allow_download": False, "labels": "",
                                          "target": "", "frames": 3, "frame_aggregate": "min"}),
        8: ("NoiseSearchSampler", {"model": link(1), "positive": link(4), "negative": link(5), "latent_image": link(6),
                                   "seed": seed, "steps": 3, "cfg": 3.0, "sampler_name": "euler",
                                   "scheduler": "simple", "denoise": 1.0, "vae": link(2), "verifier": link(7),
                                   "prompt": "a red ball bouncing", "algorithm": "racing", "candidates": 4,
                                   "zo_rounds": 1, "zo_step_cos": 0.9, "paths_branches": 2, "paths_sigma_start": 0.75,
                                   "paths_delta_f": 0.25, "paths_delta_b": 0.5, "paths_max_rounds": 0,
                                   "budget_nfe": 0, "batch_size": 0, "top_k": 2, "race_eta": 2,
                                   "race_rungs": "0.7"}),
        9: ("SaveAnimatedWEBP", {"images": link(8, 1), "filename_prefix": "e2e_video/winner", "fps": 8.0,
                                 "lossless": True, "quality": 80, "method": "fastest"}),
        10: ("NoiseSearchScoreViewer", {"report": link(8, 4), "pick": -1}),
    }
    return {str(k): {"class_type": kind, "inputs": inputs} for k, (kind, inputs) in nodes.items()}


def test_a_video_search_runs_through_the_server_into_stock_video_nodes(comfy_env, comfy):
    run = comfy.run(video_prompt(comfy_env, 7), timeout=600).check()
    (webp,) = comfy.images(run, "9")
    from PIL import Image

    clip = Image.open(io.BytesIO(webp))
    assert clip.size == (32, 32) and clip.n_frames == 5  # the winner's five frames, in order

    report = run.outputs["10"]["noise_search"][0]
    item = report["items"][0]
    assert item["algorithm"] == "racing" and item["nfe"] == item["nfe_planned"]
    finals = [c for c in item["candidates"] if c["final"]]
    assert len(finals) == 2
    for c in finals:
        frames = c["extra"]["frames"]
        assert frames["indices"] == [0, 2, 4] and frames["aggregate"] == "min"
        assert c["score"] == pytest.approx(min(frames["scores"]["clip_score"]), abs=1e-5)
    assert run.outputs["10"]["images"], "Score Viewer drew no chart"
