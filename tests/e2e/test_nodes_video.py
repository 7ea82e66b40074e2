"""Video latents in ComfyUI: tiny Wan 2.1 (text- and image-to-video) and HunyuanVideo models (real formats, ComfyUI's
loaders) searched through the Noise Search Sampler. Candidate i equals the stock KSampler with seed + i on the same
video latent; every algorithm runs; image verifiers score a video on frames spread over it (mean or min), video
verifiers on the whole clip; the image output is the best video's frames as VAE Decode gives them; a video latent for
an image model, and a video verifier on images, are refused before sampling.
"""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.comfy_script import run_in_comfyui
from noise_search.tests.helpers.tiny_video import HUNYUAN, MODEL, MODEL_I2V, VAE, build_tiny_wan

pytestmark = pytest.mark.comfyui

ALGORITHMS = ("random", "zero_order", "paths", "smc", "trust_region", "evolution", "racing")

BODY = r'''
import comfy.sd, comfy.utils, nodes
wan = comfy.sd.load_diffusion_model(__WAN__ + "/__MODEL__")
wan_vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(__WAN__ + "/__VAE__"))
video = {"samples": torch.zeros(1, 16, 2, 4, 4)}  # 5 frames at 32 x 32, as EmptyHunyuanLatentVideo makes them
out["kind"] = [type(wan.model.model_config).__name__, wan_vae.latent_dim]

def vsearch(seed, name, verifier=None, **settings):
    return search(video, seed, name, model=wan, vae=wan_vae, verifier=verifier, **settings)

for name in ("euler", "euler_ancestral"):
    lat, img, topk, noise, report, seed_out = vsearch(30, name)
    r = report.results[0]
    out[name] = {
        "stock": [max_diff(report.latents[0][i], stock(video, 30 + i, name, model=wan)) for i in range(3)],
        "image": [list(img.shape), max_diff(img, wan_vae.decode(lat["samples"]).reshape(-1, 32, 32, 3))],
        "latent": list(lat["samples"].shape),
        "thumb": list(report.thumbs[0][r.best_id].shape),
        "nfe": [r.nfe, r.nfe_planned],
    }

for algorithm in __ALGORITHMS__:
    r = vsearch(31, "euler", algorithm=algorithm, candidates=3, zo_rounds=1, paths_branches=2,
                paths_delta_f=0.25, paths_delta_b=0.5, race_eta=2, evo_generations=1, tr_rounds=1,
                tr_regions=1, tr_per_region=1)[4].results[0]
    out["algo_" + algorithm] = [r.nfe, r.nfe_planned, r.best_id in [c.id for c in r.candidates if c.final]]

# frames: the score is the mean (or min) of the verifier's scores of frames spread over the clip
for how in ("mean", "min"):
    v = handle(Brightness())
    v.frames, v.frame_aggregate = 3, how
    lat, img, topk, noise, report, seed_out = vsearch(32, "euler", verifier=v, candidates=2)
    r = report.results[0]
    best = next(c for c in r.candidates if c.id == r.best_id)
    frames = best.extra["frames"]
    decoded = wan_vae.decode(lat["samples"])[0]
    out["frames_" + how] = [frames["indices"], frames["aggregate"], frames["scores"]["brightness"], best.score,
                            [float(decoded[i].float().mean()) for i in frames["indices"]]]

# a racing search on a video: every finisher is the stock run of its seed
lat, img, topk, noise, report, seed_out = vsearch(33, "euler_ancestral", algorithm="racing", candidates=4, race_eta=2)
r = report.results[0]
out["racing"] = [max_diff(report.latents[0][c.id], stock(video, 33 + c.id, "euler_ancestral", model=wan))
                 for c in r.candidates if c.final] + [max_diff(lat["samples"], stock(video, seed_out,
                                                                                      "euler_ancestral", model=wan))]

from noise_search.nodes import NoiseSearchVerifierEnsemble
from noise_search.nodes.score_images import NoiseSearchScoreImages
from noise_search.verifiers import load_verifier
one, two = handle(Brightness()), handle(Brightness())
two.frames = 2
motion = handle(load_verifier("motion"))

# the recommended video setup: a per-frame image verifier with a video verifier, in one ensemble
mixed = NoiseSearchVerifierEnsemble.execute(handle(Brightness()), motion, "", "rank").args[0]
lat, img, topk, noise, report, seed_out = vsearch(34, "euler", verifier=mixed, candidates=3)
r = report.results[0]
out["mixed"] = [sorted(c.members) for c in r.candidates], [sorted(c.extra["frames"]["scores"]) for c in r.candidates]

# image to video: WanImageToVideo's start image and CLIP-vision conditioning carried as the stock sampler carries them
import types
from comfy_extras.nodes_wan import WanImageToVideo
wan_i2v = comfy.sd.load_diffusion_model(__WAN__ + "/__MODEL_I2V__")
g = torch.Generator().manual_seed(5)
vision = types.SimpleNamespace(penultimate_hidden_states=torch.randn(1, 257, 1280, generator=g))
ipos, ineg, ilat = WanImageToVideo.execute(positive, negative, wan_vae, 32, 32, 5, 1,
                                           start_image=torch.rand(1, 32, 32, 3, generator=g),
                                           clip_vision_output=vision).args
for name in ("euler", "euler_ancestral"):
    args = NoiseSearchSampler.execute(wan_i2v, ipos, ineg, ilat, 40, 4, 3.0, name, "simple", 1.0, wan_vae,
                                      handle(Brightness()), "", **dict(SET, candidates=3)).args
    report = args[4]
    stock_i2v = [nodes.common_ksampler(wan_i2v, 40 + i, 4, 3.0, name, "simple", ipos, ineg, ilat)[0]["samples"]
                 for i in range(3)]
    out["i2v_" + name] = [type(wan_i2v.model.model_config).__name__,
                          [max_diff(report.latents[0][i], stock_i2v[i]) for i in range(3)],
                          max_diff(stock_i2v[0], stock_i2v[1]) > 0]

# HunyuanVideo: another family sampling a 5-D latent through the same code (CLIP-L pooled vector, its own shift)
hunyuan = comfy.sd.load_diffusion_model(__WAN__ + "/__HUNYUAN__")
g = torch.Generator().manual_seed(6)
text = torch.randn(1, 12, 4096, generator=g)
hpos = [[text, {"pooled_output": torch.randn(1, 768, generator=g)}]]
hneg = [[torch.zeros_like(text), {"pooled_output": torch.zeros(1, 768)}]]
for name in ("euler", "dpmpp_2m_sde"):
    report = NoiseSearchSampler.execute(hunyuan, hpos, hneg, video, 50, 4, 3.0, name, "simple", 1.0, wan_vae,
                                        handle(Brightness()), "", **dict(SET, candidates=3)).args[4]
    out["hunyuan_" + name] = [type(hunyuan.model.model_config).__name__,
                              [max_diff(report.latents[0][i], nodes.common_ksampler(
                                  hunyuan, 50 + i, 4, 3.0, name, "simple", hpos, hneg, video)[0]["samples"])
                               for i in range(3)]]

out["errors"] = {
    "image_model": error(lambda: search({"samples": torch.zeros(1, 16, 3, 8, 8)}, 1, "euler")),
    "ensemble_frames": error(lambda: NoiseSearchVerifierEnsemble.execute(one, two, "", "rank")),
    "motion_on_image": error(lambda: search({"samples": torch.zeros(1, 16, 8, 8)}, 1, "euler", verifier=motion)),
    "motion_on_images": error(lambda: NoiseSearchScoreImages.execute(torch.rand(2, 8, 8, 3), motion, "", 1)),
}
'''


@pytest.fixture(scope="module")
def tiny_wan_dir(tmp_path_factory):
    return build_tiny_wan(tmp_path_factory.mktemp("tiny_wan"))


@pytest.fixture(scope="module")
def result(tiny_sd3_dir, tiny_wan_dir) -> dict:
    body = (BODY.replace("__WAN__", repr(str(tiny_wan_dir))).replace("__MODEL_I2V__", MODEL_I2V)
            .replace("__HUNYUAN__", HUNYUAN)
            .replace("__MODEL__", MODEL).replace("__VAE__", VAE).replace("__ALGORITHMS__", repr(ALGORITHMS)))
    return run_in_comfyui(body, tiny_sd3_dir)


def test_the_tiny_wan_loads_through_comfyuis_loaders_as_wan21_t2v(result):
    assert result["kind"] == ["WAN21_T2V", 3]


@pytest.mark.parametrize("name", ["euler", "euler_ancestral"])
def test_candidate_i_is_the_stock_ksampler_with_seed_plus_i_on_the_video_latent(result, name):
    r = result[name]
    assert r["stock"] == [0.0, 0.0, 0.0]
    assert r["latent"] == [1, 16, 2, 4, 4] and r["nfe"] == [3 * 4, 3 * 4]
    shape, diff = r["image"]
    assert shape == [5, 32, 32, 3] and diff < 1e-5  # the best video's frames, as VAE Decode outputs them
    h, w, c = r["thumb"]
    assert c == 3 and w == 4 * h  # a strip of four frames


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_runs_on_a_video_latent(result, algorithm):
    nfe, planned, best_is_final = result["algo_" + algorithm]
    assert nfe == planned > 0 and best_is_final


@pytest.mark.parametrize("how", ["mean", "min"])
def test_a_video_scores_the_aggregate_of_frames_spread_over_it(result, how):
    indices, aggregate, per_frame, score, brightness = result["frames_" + how]
    assert indices == [0, 2, 4] and aggregate == how  # 3 frames: first, middle, last
    assert per_frame == pytest.approx(brightness, abs=1e-6)
    expected = sum(per_frame) / 3 if how == "mean" else min(per_frame)
    assert score == pytest.approx(expected, abs=1e-6)


def test_racing_finishers_on_a_video_are_stock_runs(result):
    assert result["racing"] == [0.0] * len(result["racing"])


def test_a_video_latent_for_an_image_model_is_refused_before_sampling(result):
    message = result["errors"]["image_model"]
    assert message is not None
    for needle in ("Noise Search Sampler:", "latent_image", "3 frames", "video model"):
        assert needle in message, message


def test_an_ensemble_of_verifiers_that_score_videos_differently_is_refused(result):
    message = result["errors"]["ensemble_frames"]
    assert message is not None and "Verifier Ensemble:" in message
    assert "(2, 'mean'), (4, 'mean')" in message and "same frames and frame_aggregate" in message


def test_an_image_verifier_and_a_video_verifier_score_a_video_together(result):
    members, frame_scores = result["mixed"]
    assert members == [["brightness", "motion"]] * 3  # motion on the whole clip, brightness on its frames
    assert frame_scores == [["brightness"]] * 3


@pytest.mark.parametrize("case, needles", [
    ("motion_on_image", ["Noise Search Sampler:", "motion", "scores videos", "image latent"]),
    ("motion_on_images", ["Score Images:", "motion", "scores videos", "image verifier"]),
])
def test_a_video_verifier_on_images_is_refused_before_sampling(result, case, needles):
    message = result["errors"][case]
    assert message is not None, f"{case} did not raise"
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("name", ["euler", "euler_ancestral"])
def test_image_to_video_conditioning_is_carried_as_the_stock_sampler_carries_it(result, name):
    kind, diffs, seeds_differ = result["i2v_" + name]
    assert kind == "WAN21_I2V" and seeds_differ
    assert diffs == [0.0, 0.0, 0.0]  # start image, mask and CLIP-vision features through the stock guider


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m_sde"])
def test_hunyuan_video_candidates_are_stock_ksampler_runs_too(result, name):
    kind, diffs = result["hunyuan_" + name]
    assert kind == "HunyuanVideo" and diffs == [0.0, 0.0, 0.0]
