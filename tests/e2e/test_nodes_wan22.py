"""Wan 2.2 A14B's two experts in one search: the Noise Search Sampler with model_2 and switch_step against the stock
template's chain of two KSamplerAdvanced nodes (the high-noise expert up to the switch step with its leftover noise,
the low-noise expert from there without new noise), both with seed + i. Tiny Wan 2.1-layout experts, each patched
with ModelSamplingSD3 shift 8 as the template does, loaded through ComfyUI's UNET loader.
"""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.comfy_script import run_in_comfyui
from noise_search.tests.helpers.tiny_video import (
    MODEL_HIGH,
    MODEL_I2V_HIGH,
    MODEL_I2V_LOW,
    MODEL_LOW,
    VAE,
    build_tiny_wan,
)

pytestmark = pytest.mark.comfyui

SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m_sde", "heun")
ALGORITHMS = ("random", "zero_order", "paths", "smc", "trust_region", "evolution", "racing")

BODY = r'''
import comfy.sd, comfy.utils, nodes
from comfy_extras.nodes_model_advanced import ModelSamplingSD3
shifted = lambda m, shift=8.0: ModelSamplingSD3().patch(m, shift)[0]
high = shifted(comfy.sd.load_diffusion_model(__WAN__ + "/__HIGH__"))
low = shifted(comfy.sd.load_diffusion_model(__WAN__ + "/__LOW__"))
wan_vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(__WAN__ + "/__VAE__"))
video = {"samples": torch.zeros(1, 16, 2, 4, 4)}
STEPS, SWITCH = 6, 3

def chain(seed, name, latent=video, switch=SWITCH):
    """The stock template: KSamplerAdvanced (high, add noise, 0 -> switch, leftover noise), then KSamplerAdvanced
    (low, no noise, switch -> end), both with the same seed."""
    first = nodes.KSamplerAdvanced().sample(high, "enable", seed, STEPS, 3.0, name, "simple", positive, negative,
                                            latent, 0, switch, "enable")[0]
    return nodes.KSamplerAdvanced().sample(low, "disable", seed, STEPS, 3.0, name, "simple", positive, negative,
                                           first, switch, 10000, "disable")[0]["samples"]

def search2(seed, name, latent=video, model_2=low, switch=SWITCH, model=high, **settings):
    return NoiseSearchSampler.execute(model, positive, negative, latent, seed, STEPS, 3.0, name, "simple", 1.0,
                                      wan_vae, handle(Brightness()), "", model_2=model_2, switch_step=switch,
                                      **dict(SET, **settings)).args

for name in __SAMPLERS__:
    lat, img, topk, noise, report, seed_out = search2(60, name)
    r = report.results[0]
    one_model = nodes.common_ksampler(high, 60, STEPS, 3.0, name, "simple", positive, negative, video)[0]["samples"]
    out[name] = {
        "stock": [max_diff(report.latents[0][i], chain(60 + i, name)) for i in range(3)],
        "output": max_diff(lat["samples"], chain(seed_out, name)),
        "image": max_diff(img, wan_vae.decode(lat["samples"]).reshape(img.shape)),
        "differ": [max_diff(chain(60, name), chain(61, name)) > 0, max_diff(report.latents[0][0], one_model) > 0],
        "nfe": [r.nfe, r.nfe_planned],
        "notes": report.notes,
    }

# the search spans the switch for every algorithm; racing's finishers are the stock chain of their seeds
for algorithm in __ALGORITHMS__:
    # Paths' segments (steps): 1-3, 2-4, 3-5, 4-6: ending at, across, starting at and after the switch (3)
    r = search2(61, "euler", algorithm=algorithm, candidates=4, zo_rounds=1, paths_branches=2,
                paths_sigma_start=0.67, paths_delta_f=0.17, paths_delta_b=0.34, race_eta=2, race_rungs="0.7, 0.3",
                evo_generations=1, tr_rounds=1, tr_regions=1, tr_per_region=1, smc_sigma_start=0.67,
                smc_sigma_end=0.0, smc_interval=0.17, smc_delta_f=0.17)[4].results[0]
    out["algo_" + algorithm] = [r.nfe, r.nfe_planned, r.best_id in [c.id for c in r.candidates if c.final],
                                sorted({round(c.sigma, 4) for c in r.candidates})]
lat, img, topk, noise, report, seed_out = search2(62, "euler_ancestral", algorithm="racing", candidates=6, race_eta=2,
                                                  race_rungs="0.7, 0.3")
r = report.results[0]
out["racing"] = {"finishers": [max_diff(report.latents[0][c.id], chain(62 + c.id, "euler_ancestral"))
                               for c in r.candidates if c.final],
                 "rung_sigmas": sorted({round(c.sigma, 4) for c in r.candidates if not c.final}),
                 "output": max_diff(lat["samples"], chain(seed_out, "euler_ancestral"))}
import comfy.samplers
out["sigmas"] = [round(float(s), 4) for s in comfy.samplers.KSampler(high, STEPS, "cpu", "euler", "simple",
                                                                     model_options=high.model_options).sigmas]

# two batch items, and an inpainting mask over frames: carried across the switch as the stock chain carries them
g = torch.Generator().manual_seed(7)
batch = {"samples": torch.randn(2, 16, 2, 4, 4, generator=g)}
masked = {"samples": batch["samples"][:1], "noise_mask": torch.zeros(1, 1, 2, 4, 4)}
masked["noise_mask"][:, :, 1] = 1.0
for label, latent, name in (("batch", batch, "euler_ancestral"), ("masked", masked, "euler")):
    report = search2(63, name, latent=latent, candidates=2)[4]
    items = latent["samples"].shape[0]
    out[label] = [max_diff(report.latents[b][i], chain(63 + i, name, latent=latent)[b])
                  for b in range(items) for i in range(2)]

# Wan 2.2 image-to-video: both experts take WanImageToVideo's start-image latent and mask (no CLIP vision)
from comfy_extras.nodes_wan import WanImageToVideo
i2v_high = shifted(comfy.sd.load_diffusion_model(__WAN__ + "/__I2V_HIGH__"))
i2v_low = shifted(comfy.sd.load_diffusion_model(__WAN__ + "/__I2V_LOW__"))
ipos, ineg, ilat = WanImageToVideo.execute(positive, negative, wan_vae, 32, 32, 5, 1,
                                           start_image=torch.rand(1, 32, 32, 3, generator=g)).args
first = lambda seed: nodes.KSamplerAdvanced().sample(i2v_high, "enable", seed, STEPS, 3.0, "euler", "simple", ipos,
                                                     ineg, ilat, 0, SWITCH, "enable")[0]
i2v_chain = lambda seed: nodes.KSamplerAdvanced().sample(i2v_low, "disable", seed, STEPS, 3.0, "euler", "simple",
                                                         ipos, ineg, first(seed), SWITCH, 10000, "disable")[0]
report = NoiseSearchSampler.execute(i2v_high, ipos, ineg, ilat, 64, STEPS, 3.0, "euler", "simple", 1.0, wan_vae,
                                    handle(Brightness()), "", model_2=i2v_low, switch_step=SWITCH,
                                    **dict(SET, candidates=2)).args[4]
out["i2v"] = [type(i2v_high.model.model_config).__name__,
              [max_diff(report.latents[0][i], i2v_chain(64 + i)["samples"]) for i in range(2)]]

out["errors"] = {
    "switch": error(lambda: search2(1, "euler", switch=STEPS)),
    "same": error(lambda: search2(1, "euler", model_2=high)),
    "shift": error(lambda: search2(1, "euler", model_2=shifted(low, 5.0))),
    "family": error(lambda: search2(1, "euler", model_2=model)),
}
'''


@pytest.fixture(scope="module")
def tiny_wan_dir(tmp_path_factory):
    return build_tiny_wan(tmp_path_factory.mktemp("tiny_wan22"))


@pytest.fixture(scope="module")
def result(tiny_sd3_dir, tiny_wan_dir) -> dict:
    body = (BODY.replace("__WAN__", repr(str(tiny_wan_dir))).replace("__HIGH__", MODEL_HIGH)
            .replace("__LOW__", MODEL_LOW).replace("__I2V_HIGH__", MODEL_I2V_HIGH)
            .replace("__I2V_LOW__", MODEL_I2V_LOW).replace("__VAE__", VAE).replace("__SAMPLERS__", repr(SAMPLERS))
            .replace("__ALGORITHMS__", repr(ALGORITHMS)))
    return run_in_comfyui(body, tiny_sd3_dir)


@pytest.mark.parametrize("name", SAMPLERS)
def test_candidate_i_is_the_stock_two_expert_chain_with_seed_plus_i(result, name):
    r = result[name]
    assert r["stock"] == [0.0, 0.0, 0.0]
    assert r["output"] == 0.0 and r["image"] < 1e-5
    assert r["differ"] == [True, True]  # seeds differ, and the low-noise expert changed the result
    assert any(n.startswith("two experts: model runs steps 0-3, model_2 steps 3-6") for n in r["notes"]), r["notes"]
    nfe, planned = r["nfe"]
    assert nfe == planned == 3 * (6 if name != "heun" else 11)  # heun: 2 calls a step, 1 on the last


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_searches_across_the_switch(result, algorithm):
    nfe, planned, best_is_final, _ = result["algo_" + algorithm]
    assert nfe == planned > 0 and best_is_final


@pytest.mark.parametrize("algorithm", ["paths", "smc", "racing"])
def test_searches_that_score_partial_states_score_them_on_both_sides_of_the_switch(result, algorithm):
    switch_sigma = result["sigmas"][3]
    scored = [s for s in result["algo_" + algorithm][3] if s > 0]
    assert any(s >= switch_sigma for s in scored) and any(s < switch_sigma for s in scored), (scored, switch_sigma)


def test_racing_across_the_switch_finishes_stock_chains(result):
    r = result["racing"]
    switch_sigma = result["sigmas"][3]
    assert r["finishers"] and r["finishers"] == [0.0] * len(r["finishers"])
    assert r["output"] == 0.0
    assert any(s > switch_sigma for s in r["rung_sigmas"]) and any(s < switch_sigma for s in r["rung_sigmas"])


def test_a_mask_over_frames_crosses_the_switch_as_in_the_stock_chain(result):
    assert result["masked"] == [0.0, 0.0]


def test_each_batch_item_crosses_the_switch_as_in_the_stock_chain(result):
    # the stock chain runs both items in one batched model call, which rounds differently; the noise is identical
    assert len(result["batch"]) == 4 and max(result["batch"]) < 1e-4


def test_wan22_image_to_video_experts_carry_the_start_image_across_the_switch(result):
    kind, diffs = result["i2v"]
    assert kind == "WAN21_T2V"  # ComfyUI's class for Wan 2.2's 36-channel experts without CLIP vision
    assert diffs == [0.0, 0.0]


@pytest.mark.parametrize("case, needles", [
    ("switch", ["Noise Search Sampler:", "switch_step=6", "between 1 and steps - 1 = 5"]),
    ("same", ["Noise Search Sampler:", "model_2 is the same model as model"]),
    ("shift", ["Noise Search Sampler:", "different noise schedules", "ModelSamplingSD3"]),
    ("family", ["Noise Search Sampler:", "model_2 makes", "same model family"]),
])
def test_bad_two_expert_inputs_are_refused_before_sampling(result, case, needles):
    message = result["errors"][case]
    assert message is not None, f"{case} did not raise"
    for needle in needles:
        assert needle in message, message
