"""The Score Viewer on a real ComfyUI server: outputs the picked candidate from the stored report (no re-sampling),
shows the report JSON, thumbnails and the chart (PNG with the report in its metadata)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from noise_search.tests.helpers.workflows import widget_defaults

pytestmark = pytest.mark.comfyui


def viewer_prompt(comfy, env, pick: int, batch: int = 2, seed: int = 5) -> dict:
    """Tiny SD3 -> random search (3 candidates, CLIPScore) -> Score Viewer -> SaveImage of every image output."""
    info = comfy.object_info()

    def node(class_type: str, **inputs) -> dict:
        return {"class_type": class_type, "inputs": {**widget_defaults(info[class_type]), **inputs}}

    text = "a red cube on a wooden table"
    return {
        "1": node("CheckpointLoaderSimple", ckpt_name=env.checkpoint),
        "2": node("CLIPTextEncode", clip=["1", 1], text=text),
        "3": node("CLIPTextEncode", clip=["1", 1], text=""),
        "4": node("EmptySD3LatentImage", width=64, height=64, batch_size=batch),
        "5": node("NoiseSearchVerifierLoader", kind="clip_score", model=env.verifier_models["clip_score"],
                  device="cpu"),
        "6": node("NoiseSearchSampler", model=["1", 0], positive=["2", 0], negative=["3", 0], latent_image=["4", 0],
                  vae=["1", 2], verifier=["5", 0], prompt=text, seed=seed, steps=3, cfg=4.0, sampler_name="euler",
                  scheduler="simple", algorithm="random", candidates=3, budget_nfe=0, top_k=1),
        "7": node("NoiseSearchScoreViewer", report=["6", 4], pick=pick),
        "8": node("SaveImage", images=["6", 1], filename_prefix="viewer_test/best"),
        "9": node("SaveImage", images=["7", 2], filename_prefix="viewer_test/picked"),
        "10": node("VAEDecode", samples=["7", 1], vae=["1", 2]),
        "11": node("SaveImage", images=["10", 0], filename_prefix="viewer_test/picked_decoded"),
        "12": node("SaveImage", images=["7", 0], filename_prefix="viewer_test/chart"),
    }


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def cached_nodes(run) -> set:
    data = run.message("execution_cached") or {}
    return set(data.get("nodes", []))


def test_viewer_outputs_the_best_and_reports_everything(comfy, comfy_env):
    run = comfy.run(viewer_prompt(comfy, comfy_env, pick=-1), timeout=300).check()
    ui = run.outputs["7"]
    report = ui["noise_search"][0]
    assert len(report["items"]) == 2 and report["pick"] == -1
    assert report["picked"] == [item["best_id"] for item in report["items"]]
    for i, item in enumerate(report["items"]):
        assert item["algorithm"] == "random" and len(item["candidates"]) == 3
        assert item["best_score"] == max(c["score"] for c in item["candidates"])
        thumbs = report["thumbnails"][i]
        assert sorted(map(int, thumbs)) == [0, 1, 2]
        for entry in thumbs.values():
            thumb = Image.open(io.BytesIO(comfy.view(entry["filename"], entry["subfolder"], entry["type"])))
            assert thumb.format == "PNG" and thumb.size == (64, 64)  # 64 px images stay at their size (<= 192)

    best, picked = comfy.images(run, "8"), comfy.images(run, "9")
    assert len(best) == len(picked) == 2
    for a, b in zip(best, picked):
        assert np.array_equal(pixels(a), pixels(b)), "pick=-1 must output the sampler's best image"

    (chart_entry,) = ui["images"]
    assert chart_entry["type"] == "temp"
    chart = Image.open(io.BytesIO(comfy.view(chart_entry["filename"], chart_entry["subfolder"], "temp")))
    meta = json.loads(chart.text["noise_search"])
    assert [it["best_id"] for it in meta["items"]] == report["picked"]
    assert meta["items"] == report["items"]
    assert "prompt" in chart.text and json.loads(chart.text["prompt"])["7"]["class_type"] == "NoiseSearchScoreViewer"
    (saved_chart,) = comfy.images(run, "12")
    # SaveImage truncates
    assert np.abs(pixels(saved_chart) - np.asarray(chart.convert("RGB"), dtype=np.int16)).max() <= 1
    assert chart.size[0] == 1024 and chart.size[1] > 600


def test_pick_outputs_that_candidate_without_sampling_again(comfy, comfy_env):
    first = comfy.run(viewer_prompt(comfy, comfy_env, pick=-1), timeout=300).check()
    items = first.outputs["7"]["noise_search"][0]["items"]
    other = next(i for i in (0, 1, 2) if all(i != it["best_id"] for it in items))

    run = comfy.run(viewer_prompt(comfy, comfy_env, pick=other), timeout=300).check()
    assert {"1", "5", "6"} <= cached_nodes(run), "the sampler ran again: picking must reuse the stored report"
    report = run.outputs["7"]["noise_search"][0]
    assert report["pick"] == other and report["picked"] == [other, other]
    best, picked, decoded = comfy.images(run, "8"), comfy.images(run, "9"), comfy.images(run, "11")
    for b, p, d in zip(best, picked, decoded):
        assert not np.array_equal(pixels(b), pixels(p)), "the picked candidate must differ from the best"
        # the output latent is the picked candidate's: decoding it again gives the stored image
        assert np.abs(pixels(p) - pixels(d)).max() <= 2


def test_pick_that_is_not_a_final_candidate_names_the_valid_ids(comfy, comfy_env):
    run = comfy.run(viewer_prompt(comfy, comfy_env, pick=7, batch=1), timeout=300)
    err = run.error
    assert run.status == "error" and err is not None and err["node_type"] == "NoiseSearchScoreViewer"
    assert "pick=7 is not a final candidate" in err["exception_message"]
    assert "valid ids: 0, 1, 2, or -1 for the best" in err["exception_message"]
