"""The ComfyUI adapter in-process (in a subprocess with ComfyUI on its path), against ComfyUI's own samplers.

Candidates must equal stock KSampler / SamplerCustomAdvanced runs (seed + i), batching must not change them,
img2img and inpainting masks must behave as in ComfyUI, NFE counts must match real model calls, and bad inputs
must fail before any sampling with the node name and the input in the message.
"""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.comfy_script import run_in_comfyui

pytestmark = pytest.mark.comfyui

# Runs after comfy_script.PRELUDE in a ComfyUI process (cwd=COMFYUI_PATH, never this repository on sys.path).
BODY = r'''
from comfy.k_diffusion import sampling as k_sampling
from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise, Noise_RandomNoise, SamplerCustomAdvanced

empty = {"samples": torch.zeros(1, 16, 8, 8)}

# Candidates equal stock runs with seed + i, for an ancestral and a Brownian-tree SDE sampler.
for name in ("euler_ancestral", "dpmpp_2m_sde"):
    lat, img, topk, noise, report, seed_out = search(empty, 40, name)
    r = report.results[0]
    out[f"stock_{name}"] = [max_diff(report.latents[0][i], stock(empty, 40 + i, name)) for i in range(3)]
    out[f"best_{name}"] = max_diff(lat["samples"][0], report.latents[0][r.best_id])
    out[f"nfe_{name}"] = [r.nfe, r.nfe_planned]
    out[f"topk_{name}"] = [list(topk["samples"].shape), r.topk_ids, max_diff(topk["samples"][0], lat["samples"][0])]
    out[f"image_{name}"] = [list(img.shape), max_diff(img[0], vae.decode(lat["samples"])[0])]
    batched = search(empty, 40, name, batch_size=3)[4]
    out[f"batched_{name}"] = max(max_diff(batched.latents[0][i], report.latents[0][i]) for i in range(3))

# heun: 2 model calls per step but 1 on the last (to sigma 0): 2 * 4 - 1 per candidate.
r = search(empty, 3, "heun")[4].results[0]
out["nfe_heun"] = [r.nfe, r.nfe_planned]

# A batch of 2 latents: candidate i of item b is row b of the stock batch run with seed + i.
pair = {"samples": torch.zeros(2, 16, 8, 8)}
lat, img, topk, noise, report, seed_out = search(pair, 5, "euler", candidates=2, top_k=1)
out["batch"] = [list(lat["samples"].shape), list(img.shape), list(topk["samples"].shape), list(noise.noises.shape),
                max_diff(report.latents[1][1], stock(pair, 5 + 1, "euler")[1]),
                max_diff(report.latents[0][0], stock(pair, 5, "euler")[0])]

# img2img (denoise 0.5 on a non-empty latent) and an inpainting mask: candidate 0 is the stock run.
source = {"samples": torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))}
report = search(source, 11, "euler", steps=4, denoise=0.5)[4]
out["img2img"] = max_diff(report.latents[0][0], stock(source, 11, "euler", denoise=0.5))
mask = torch.zeros(1, 64, 64)
mask[:, :, :32] = 1.0
masked = dict(source, noise_mask=mask)
report = search(masked, 12, "ddim", candidates=2)[4]  # ddim: KSAMPLER's random inpaint noise, seeded seed + 1
out["inpaint"] = [max_diff(report.latents[0][i], stock(masked, 12 + i, "ddim")) for i in range(2)]
out["inpaint_kept"] = max_diff(report.latents[0][1][:, :, 4:], source["samples"][0][:, :, 4:])

# The Custom node: candidates are SamplerCustomAdvanced runs; the NOISE output replays the winner (zero-order).
guider = comfy.samplers.CFGGuider(model)
guider.set_conds(positive, negative)
guider.set_cfg(3.0)
sampler = comfy.samplers.ksampler("euler_ancestral")
sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4).cpu()
lat, img, topk, noise, report, seed_out = NoiseSearchSamplerCustom.execute(
    Noise_RandomNoise(21), guider, sampler, sigmas, empty, vae, handle(Brightness()), "",
    **dict(SET, algorithm="zero_order", candidates=2, zo_rounds=2)).args
replay = SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, empty)[0]["samples"]
plain = SamplerCustomAdvanced().sample(Noise_RandomNoise(21), guider, sampler, sigmas, empty)[0]["samples"]
out["custom"] = [max_diff(replay, lat["samples"]), max_diff(plain[0], report.latents[0][0]),
                 report.results[0].nfe, report.results[0].nfe_planned, noise.seed - 21 == report.results[0].best_id]

# Paths: NFEs as planned, every final candidate stored, the NOISE is the root's noise.
lat, img, topk, noise, report, seed_out = search(empty, 8, "euler", algorithm="paths", candidates=2)
r = report.results[0]
finals = [c.id for c in r.candidates if c.sigma == 0.0]
best = next(c for c in r.candidates if c.id == r.best_id)
out["paths"] = [r.nfe, r.nfe_planned, sorted(finals) == sorted(report.latents[0]),
                bool(torch.equal(noise.noises[0], r.best_noise)) and noise.seed == 8 + best.root and best.root < 2]

# self-similarity style verifier: references are the decoded x0 prediction made closest to flow time 0.4.
ref_verifier = Brightness(needs={"reference"}, reference_sigma=0.4)
report = search(empty, 30, "euler", verifier=handle(ref_verifier), candidates=1, steps=5)[4]
seen = {}
def capture(step, x0, x, total):
    seen[step] = x0.clone()
stock_sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 5)
noise0 = comfy.sample.prepare_noise(empty["samples"], 30)
comfy.sample.sample(model, noise0, 5, 3.0, "euler", "simple", positive, negative, empty["samples"], seed=30,
                    callback=capture, disable_pbar=True)
step = min(range(5), key=lambda i: (abs(float(stock_sigmas[i]) - 0.4), -i))
expected = vae.decode(model.model.process_latent_out(seen[step]))
images, references = ref_verifier.seen[-1]
neighbour = vae.decode(model.model.process_latent_out(seen[step - 1]))
out["reference"] = [max_diff(references, expected), max_diff(neighbour, references), step]

# Errors, all before sampling (error() comes with the prelude).
custom = lambda noise, sampler, **kw: NoiseSearchSamplerCustom.execute(noise, guider, sampler, sigmas, empty, vae,
                                                                      handle(Brightness()), "", **dict(SET, **kw))
out["errors"] = {
    "budget": error(lambda: search(empty, 1, "heun", budget_nfe=5)),
    "deltas": error(lambda: search(empty, 1, "euler", algorithm="paths", paths_delta_f=0.3, paths_delta_b=0.2)),
    "prompt": error(lambda: search(empty, 1, "euler", verifier=handle(Brightness(needs={"prompt"})))),
    "empty_noise": error(lambda: custom(Noise_EmptyNoise(), sampler)),
    "adaptive": error(lambda: custom(Noise_RandomNoise(1), comfy.samplers.ksampler("dpm_adaptive"))),
    "not_ksampler": error(lambda: custom(Noise_RandomNoise(1), comfy.samplers.Sampler())),
    "step_cos": error(lambda: search(empty, 1, "euler", algorithm="zero_order", zo_step_cos=1.0)),
}

# Verifier nodes: what models/verifiers offers, and their input errors.
import tempfile, pathlib, folder_paths
from noise_search.nodes import verifier_nodes as vn
tmp = pathlib.Path(tempfile.mkdtemp())
(tmp / "my-clip").mkdir(); (tmp / "my-clip" / "config.json").write_text("{}")
(tmp / "org" / "model").mkdir(parents=True); (tmp / "org" / "model" / "model.safetensors").write_bytes(b"")
(tmp / "head.pth").write_bytes(b""); (tmp / "notes.txt").write_text("")
folder_paths.add_model_folder_path("verifiers", str(tmp))
options = vn.model_options()
out["models"] = [options[:3], "openai/clip-vit-large-patch14" in options, "notes.txt" in options,
                 str(tmp) in [str(d) for d in
                              __import__("noise_search.verifiers.loading", fromlist=["x"]).model_dirs()]]
out["verifier_errors"] = {
    "labels": error(lambda: vn.verifier_options("clip_score", "cat, dog", "")),
    "target": error(lambda: vn.verifier_options("dino_classifier", "", "")),
    "weights": error(lambda: vn.parse_weights("1, 2, 3", 2)),
}
out["weights"] = [vn.parse_weights("", 2), vn.parse_weights("1 2.5", 2)]
'''


@pytest.fixture(scope="module")
def result(tiny_sd3_dir) -> dict:
    return run_in_comfyui(BODY, tiny_sd3_dir)


EXACT = 0.0


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde"])
def test_candidate_i_is_the_stock_ksampler_with_seed_plus_i(result, name):
    assert result[f"stock_{name}"] == [EXACT] * 3
    assert result[f"best_{name}"] == EXACT
    shape, topk_ids, first = result[f"topk_{name}"]
    assert shape == [2, 16, 8, 8] and len(topk_ids) == 2 and first == EXACT
    image_shape, decoded = result[f"image_{name}"]
    assert image_shape == [1, 64, 64, 3] and decoded < 1e-5


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde"])
def test_batching_rows_does_not_change_candidates(result, name):
    assert result[f"batched_{name}"] < 1e-4  # batched matmuls round differently; the noise is identical


def test_nfe_is_counted_exactly(result):
    assert result["nfe_euler_ancestral"] == [12, 12]
    assert result["nfe_dpmpp_2m_sde"] == [12, 12]
    assert result["nfe_heun"] == [3 * 7, 3 * 7]


def test_latent_batch_items_are_searched_independently(result):
    latent, image, top_k, noise, item1, item0 = result["batch"]
    assert latent == [2, 16, 8, 8] and image == [2, 64, 64, 3] and top_k == [2, 16, 8, 8] and noise == [2, 16, 8, 8]
    assert item1 < 1e-5 and item0 < 1e-5  # the stock run evaluates both rows in one batched model call


def test_img2img_and_inpainting_match_comfyui(result):
    assert result["img2img"] == EXACT
    assert result["inpaint"] == [EXACT, EXACT]
    assert result["inpaint_kept"] < 1e-5  # the unmasked half keeps the source latent


def test_custom_sampler_noise_output_replays_the_winner(result):
    replay, candidate0, nfe, planned, seed_is_winner = result["custom"]
    assert replay == EXACT and candidate0 == EXACT
    assert nfe == planned == (1 + 2 * 2) * 4
    assert seed_is_winner


def test_paths_spends_its_plan_and_stores_every_final(result):
    nfe, planned, stored, noted = result["paths"]
    assert nfe == planned and stored and noted


def test_references_are_x0_predictions_near_flow_time_04(result):
    diff, neighbour_step, step = result["reference"]
    assert step > 0 and diff == EXACT
    assert neighbour_step > 1e-4  # the x0 of the step before is a different picture


@pytest.mark.parametrize("case, needles", [
    ("budget", ["Noise Search Sampler:", "budget_nfe=5", "7 NFEs", "at least 7"]),
    ("deltas", ["Noise Search Sampler:", "paths_delta_b", "paths_delta_f"]),
    ("prompt", ["Noise Search Sampler:", "prompt"]),
    ("empty_noise", ["Noise Search Sampler (Custom):", "Noise_EmptyNoise", "RandomNoise"]),
    ("adaptive", ["Noise Search Sampler (Custom):", "dpm_adaptive", "sampler"]),
    ("not_ksampler", ["Noise Search Sampler (Custom):", "sampler input", "KSamplerSelect"]),
    ("step_cos", ["Noise Search Sampler:", "zo_step_cos"]),
])
def test_bad_inputs_fail_with_node_and_input_names(result, case, needles):
    message = result["errors"][case]
    assert message is not None, f"{case} did not raise"
    for needle in needles:
        assert needle in message, message


def test_model_dropdown_lists_local_models_first(result):
    first, known, junk, registered = result["models"]
    assert first == ["head.pth", "my-clip", "org/model"]
    assert known and not junk and registered


@pytest.mark.parametrize("case, needles", [
    ("labels", ["Load Verifier:", "clip_score", "labels"]),
    ("target", ["Load Verifier:", "dino_classifier", "target"]),
    ("weights", ["Verifier Ensemble:", "2 verifiers", "3 number"]),
])
def test_verifier_node_inputs_are_checked(result, case, needles):
    message = result["verifier_errors"][case]
    assert message is not None, f"{case} did not raise"
    for needle in needles:
        assert needle in message, message
    assert result["weights"] == [None, [1.0, 2.5]]
