"""Scoring decode and memory (issue 12), in a ComfyUI process: TAESD preview decoders found where ComfyUI's previewer
finds them, every output decoded by the VAE, full images kept only for the winners, any candidate decoded on pick."""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.comfy_script import run_in_comfyui

pytestmark = pytest.mark.comfyui

BODY = r'''
import os, tempfile
import folder_paths
from safetensors.torch import save_file
from comfy.taesd.taesd import TAESD
from noise_search.nodes import NoiseSearchScoreViewer
from noise_search.search.types import Candidate
from noise_search.tests.helpers.tiny_sd3 import tiny_taesd_state_dict
from noise_search.verifiers.grading import UnparsedAnswer

empty = {"samples": torch.zeros(1, 16, 8, 8)}
counted = {"calls": 0}

def counting(apply_model, args):
    counted["calls"] += 1
    return apply_model(args["input"], args["timestep"], **args["c"])

watched = model.clone()
watched.set_model_unet_function_wrapper(counting)

# no preview decoder yet: refused before the model runs, naming the file and the folder
folder = tempfile.mkdtemp()
folder_paths.set_temp_directory(tempfile.mkdtemp())
folder_paths.add_model_folder_path("vae_approx", folder, is_default=True)
out["missing"] = error(lambda: search(empty, 1, "euler", model=watched, scoring_decode="TAESD for all"))
out["missing_calls"] = counted["calls"]
out["folder"] = folder

# newer ComfyUI previews video TAEs through its VAE class (latent_preview.VIDEO_TAES): refused, not misloaded
import latent_preview
from types import SimpleNamespace
from noise_search.nodes.preview_decode import find_preview_decoder
video_taes = getattr(latent_preview, "VIDEO_TAES", None)
latent_preview.VIDEO_TAES = ["lighttaew2_1"]
out["video"] = error(lambda: find_preview_decoder("Noise Search Sampler", SimpleNamespace(
    taesd_decoder_name="lighttaew2_1", latent_channels=16), "TAESD for all"))
if video_taes is None:
    del latent_preview.VIDEO_TAES
else:
    latent_preview.VIDEO_TAES = video_taes

path = os.path.join(folder, "taesd3_decoder.safetensors")
save_file({k[len("taesd_decoder."):]: v for k, v in tiny_taesd_state_dict(16, seed=3).items()
           if k.startswith("taesd_decoder.")}, path)
preview = TAESD(None, path, latent_channels=16).eval()
latent_in = model.model.process_latent_in

def taesd_image(latent):
    with torch.no_grad():
        return ((preview.decode(latent_in(latent.unsqueeze(0).float()))[0, :3] + 1) / 2).clamp(0, 1).movedim(0, -1)

# TAESD for all: every score on TAESD previews of the final latents; the outputs are VAE decodes
v = Brightness()
lat, image, top, noise, report, seed_out = search(empty, 1, "euler", verifier=handle(v), candidates=4, top_k=2,
                                        scoring_decode="TAESD for all")
r = report.results[0]
seen = torch.cat([images for images, _ in v.seen])
out["all"] = {
    "decodes": sorted({c.decode for c in r.candidates}),
    "scored_vs_taesd": max(max_diff(seen[i], taesd_image(report.latents[0][i])) for i in range(4)),
    "image_vs_vae": max_diff(image[0], vae.decode(lat["samples"])[0]),
    "kept": sorted(report.images[0]), "wanted": sorted({r.best_id, *r.topk_ids}),
    "thumbs": sorted(report.thumbs[0]), "thumb_dtype": str(report.thumbs[0][0].dtype),
    "note": [n for n in report.notes if "scoring decode" in n],
}

# TAESD for x0 previews: paths scores its intermediate x0 predictions on TAESD, finished candidates on the VAE
lat, image, top, noise, report, seed_out = search(empty, 2, "euler", algorithm="paths", candidates=2, paths_branches=2,
                                        scoring_decode="TAESD for x0 previews")
r = report.results[0]
out["x0"] = sorted({(c.final, c.decode) for c in r.candidates if c.decode is not None})
# racing: every rung scores x0 previews on TAESD, the finishers are scored on the VAE
lat, image, top, noise, report, seed_out = search(empty, 2, "euler", algorithm="racing", candidates=4, race_eta=2,
                                                  race_rungs="0.5", scoring_decode="TAESD for x0 previews")
r = report.results[0]
out["race_x0"] = [sorted({rung["decode"] for c in r.candidates for rung in c.extra["rungs"]}),
                  sorted({c.decode for c in r.candidates if c.final}), len(r.candidates)]

# full VAE (the default): the `keep` best full images stay while scoring, then exactly the winners
v = Brightness()
lat, image, top, noise, report, seed_out = search(empty, 4, "euler", verifier=handle(v), candidates=6, top_k=2)
r = report.results[0]
seen = torch.cat([images for images, _ in v.seen])
best_rest = sorted(set(range(6)) - {r.best_id, *r.topk_ids})
other = best_rest[0]
chart, picked_latent, picked_image = NoiseSearchScoreViewer.execute(report, other).args
out["full"] = {
    "decodes": sorted({c.decode for c in r.candidates}),
    "kept": sorted(report.images[0]), "wanted": sorted({r.best_id, *r.topk_ids}),
    "latents": sorted(report.latents[0]), "thumbs": sorted(report.thumbs[0]),
    "image_is_scored": max_diff(image[0], seen[r.best_id]),
    "pick_decoded": max_diff(picked_image[0], vae.decode(report.latents[0][other].unsqueeze(0))[0]),
    "pick_latent": max_diff(picked_latent["samples"][0], report.latents[0][other]),
    "pick_is_scored": max_diff(picked_image[0], seen[other]),
}

# RAM for two latents and three thumbnails: the same search keeps the others in temporary files, reads them exactly
import noise_search.nodes.comfy_search as comfy_search
kept_before = {i: report.latents[0][i] for i in range(6)}
thumbs_before = {i: report.thumbs[0][i] for i in range(6)}
budgets = comfy_search.LATENT_RAM, comfy_search.THUMB_RAM
comfy_search.LATENT_RAM, comfy_search.THUMB_RAM = 2 * 16 * 8 * 8 * 4, 3 * thumbs_before[0].numel()
try:
    lat, image, top, noise, spilled, seed_out = search(empty, 4, "euler", candidates=6, top_k=2)
finally:
    comfy_search.LATENT_RAM, comfy_search.THUMB_RAM = budgets
chart, spilled_latent, spilled_image = NoiseSearchScoreViewer.execute(spilled, other).args
out["spill"] = {
    "spilled": (spilled.latents[0].spilled[0], spilled.thumbs[0].spilled[0]),
    "same": max(max_diff(spilled.latents[0][i], kept_before[i]) for i in range(6)),
    "same_thumbs": all(torch.equal(spilled.thumbs[0][i], thumbs_before[i]) for i in range(6)),
    "pick_latent": max_diff(spilled_latent["samples"][0], picked_latent["samples"][0]),
    "pick_image": max_diff(spilled_image[0], picked_image[0]),
    "note": sorted(n for n in spilled.all_notes() if "temporary file" in n),
    "temp": folder_paths.get_temp_directory(),
}

class Grader(Brightness):
    def _score(self, images, prompt, references):
        raise UnparsedAnswer("grader", 1, "no idea", ["accuracy to prompt"])

out["grader"] = error(lambda: search(empty, 7, "euler", verifier=handle(Grader()), candidates=2, batch_size=2))
'''


@pytest.fixture(scope="module")
def ran(tiny_sd3_dir) -> dict:
    return run_in_comfyui(BODY, tiny_sd3_dir)


def test_a_missing_preview_decoder_is_refused_before_sampling_naming_file_and_folder(ran):
    assert ran["missing_calls"] == 0
    assert "taesd3_decoder.safetensors" in ran["missing"] and ran["folder"] in ran["missing"]
    assert "full VAE" in ran["missing"] and "github.com/madebyollin/taesd" in ran["missing"]


def test_a_video_preview_decoder_is_refused_naming_it(ran):
    assert "lighttaew2_1 is a video decoder" in ran["video"] and "'full VAE'" in ran["video"]


def test_taesd_for_all_scores_on_previews_and_outputs_vae_decodes(ran):
    r = ran["all"]
    assert r["decodes"] == ["taesd"]
    assert r["scored_vs_taesd"] < 1e-5, "scores must be taken on ComfyUI's TAESD decode of each candidate"
    assert r["image_vs_vae"] < 1e-5, "the image output must be the VAE's decode"
    assert r["kept"] == r["wanted"] and r["thumbs"] == [0, 1, 2, 3] and r["thumb_dtype"] == "torch.uint8"
    assert len(r["note"]) == 1 and "taesd3_decoder.safetensors" in r["note"][0]


def test_taesd_for_x0_previews_scores_intermediates_only(ran):
    assert ran["x0"] == [[False, "taesd"], [True, "vae"]]
    assert ran["race_x0"] == [["taesd"], ["vae"], 4]  # racing's rungs are x0 previews too


def test_full_images_only_for_the_winners_and_any_other_is_decoded_on_pick(ran):
    r = ran["full"]
    assert r["decodes"] == ["vae"]
    assert r["kept"] == r["wanted"] and len(r["kept"]) <= 2
    assert r["latents"] == r["thumbs"] == list(range(6))
    assert r["image_is_scored"] == 0.0
    assert r["pick_decoded"] < 1e-6 and r["pick_latent"] == 0.0 and r["pick_is_scored"] < 1e-5


def test_latents_and_thumbnails_beyond_their_ram_go_to_a_temporary_file_and_are_read_back_exactly(ran):
    r = ran["spill"]
    assert r["spilled"] == [4, 3]
    assert r["same"] == 0.0 and r["same_thumbs"] and r["pick_latent"] == 0.0 and r["pick_image"] == 0.0
    assert [n[:26] for n in r["note"]] == ["3 of 6 thumbnails (0 MiB) ", "4 of 6 final latents (0 Mi"]
    assert all(r["temp"] in n for n in r["note"])


def test_an_unparsable_grader_answer_names_the_candidate(ran):
    assert "candidate 1:" in ran["grader"] and "'no idea'" in ran["grader"]
