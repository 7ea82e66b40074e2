"""The example workflows against a real server: they load (node types, widget values, links) and they run.

`example_workflows/*.json` are in ComfyUI's UI (graph) format. Each is checked against /object_info the way
the frontend reads it, converted to the API format the frontend would queue, shrunk to the tiny models
(64x64, few steps, few candidates) and run to completion.
"""

from __future__ import annotations

import copy
import io
import uuid

import pytest

from noise_search.tests.helpers.workflows import (
    WORKFLOW_DIR,
    WORKFLOWS,
    load,
    localize,
    widget_index,
    workflow_problems,
    workflow_to_api,
)


def shrink(prompt: dict, env) -> dict:
    """The same graph on the tiny models: 64x64, 4 steps, a handful of candidates. Paths' re-noise/denoise
    fractions become 1 and 2 of the 4 steps (the examples' 5%/10% of 28 steps round to nothing on 4)."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("EmptyLatentImage", "EmptySD3LatentImage"):
            inputs.update(width=64, height=64, batch_size=1)
        elif kind in ("EmptyHunyuanLatentVideo", "WanImageToVideo"):
            inputs.update(width=32, height=32, length=5, batch_size=1)
        elif kind == "ImageScale":
            inputs.update(width=64, height=64)
        elif kind in ("BasicScheduler", "KSampler"):
            inputs["steps"] = min(inputs["steps"], 4)
        elif kind == "NoiseSearchVerifierLoader":
            inputs["model"] = env.verifier_models[inputs["kind"]]
        elif kind in ("NoiseSearchSampler", "NoiseSearchSamplerCustom"):
            if "steps" in inputs:
                inputs["steps"] = min(inputs["steps"], 4)
            if inputs.get("model_2") is not None:  # two experts: the second takes over half-way, as 10 of 20
                inputs["switch_step"] = inputs["steps"] // 2
            inputs.update(candidates=min(inputs["candidates"], 3), zo_rounds=min(inputs["zo_rounds"], 1),
                          paths_branches=min(inputs["paths_branches"], 2), paths_delta_f=0.25, paths_delta_b=0.5,
                          budget_nfe=0)
        elif kind == "SaveImage":
            inputs["filename_prefix"] = "e2e_workflow/" + str(inputs["filename_prefix"]).replace("/", "_")
    return prompt


SAVES = {"SaveImage", "SaveVideo", "SaveAnimatedWEBP"}


def test_there_are_example_workflows_with_thumbnails():
    names = {p.stem for p in WORKFLOWS}
    assert len(names) >= 4, f"expected at least 4 example workflows in {WORKFLOW_DIR}, found {sorted(names)}"
    for path in WORKFLOWS:
        thumb = path.with_suffix(".jpg")
        assert thumb.is_file(), f"{path.name} has no thumbnail {thumb.name}"
        assert thumb.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumb.name} is not a JPEG"
        workflow_id = load(path)["id"]
        assert str(uuid.UUID(workflow_id)) == workflow_id, f"{path.name}: the frontend wants a UUID as the workflow id"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_shape(path):
    """Without a server: the pack's nodes, one text node feeding CLIPTextEncode and the sampler, the endings."""
    workflow = load(path)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    types = [n["type"] for n in workflow["nodes"]]
    assert SAVES & set(types) and "NoiseSearchScoreViewer" in types
    assert {"NoiseSearchSampler", "NoiseSearchSamplerCustom"} & set(types)
    assert "NoiseSearchVerifierLoader" in types
    text_targets: dict[int, set] = {}
    for _, src, _, dst, dst_slot, link_type in workflow["links"]:
        if link_type == "STRING":
            text_targets.setdefault(src, set()).add((nodes[dst]["type"], nodes[dst]["inputs"][dst_slot]["name"]))
    assert any({("CLIPTextEncode", "text")} <= t
               and any(k.startswith("NoiseSearchSampler") and n == "prompt" for k, n in t)
               for t in text_targets.values()), (
        f"{path.name}: no text node feeds both CLIPTextEncode.text and the sampler's prompt")


@pytest.mark.comfyui
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_against_object_info(path, comfy, comfy_env):
    problems = workflow_problems(localize(load(path), comfy_env), comfy.object_info())
    assert problems == [], f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.comfyui
def test_workflow_check_catches_mistakes(comfy, comfy_env):
    """The checker is not vacuous: each typical mistake made in a good workflow is reported."""
    good = localize(load(WORKFLOW_DIR / "sd15_txt2img_clipscore_aesthetic.json"), comfy_env)
    info = comfy.object_info()
    assert workflow_problems(good, info) == []

    def broken(node_type, change) -> str:
        wf = copy.deepcopy(good)
        node = next(n for n in wf["nodes"] if n["type"] == node_type)
        change(wf, node, lambda name, value: node["widgets_values"].__setitem__(
            widget_index(node, info[node_type], name), value))
        return " | ".join(workflow_problems(wf, info))

    def drop_control(wf, node, set_widget):
        del node["widgets_values"][widget_index(node, info["NoiseSearchSampler"], "seed") + 1]

    def vae_into_verifier(wf, node, set_widget):
        link = next(link for link in wf["links"] if link[3] == node["id"] and link[5] == "VERIFIER")
        ckpt = next(m for m in wf["nodes"] if m["type"] == "CheckpointLoaderSimple")
        link[1], link[2], link[5] = ckpt["id"], 2, "VAE"
        ckpt["outputs"][2]["links"].append(link[0])

    assert "widgets_values has" in broken("NoiseSearchSampler", drop_control)
    assert "'sampler_name' = 'nope' is not one of its options" in broken(
        "NoiseSearchSampler", lambda wf, n, set_widget: set_widget("sampler_name", "nope"))
    assert "'steps' = 0 is outside" in broken("NoiseSearchSampler", lambda wf, n, set_widget: set_widget("steps", 0))
    assert "'candidates' = 2.5 is not an integer" in broken(
        "NoiseSearchSampler", lambda wf, n, set_widget: set_widget("candidates", 2.5))
    assert "'model' = 'missing.pth' is not one of its options" in broken(
        "NoiseSearchVerifierLoader", lambda wf, n, set_widget: set_widget("model", "missing.pth"))
    assert "no such node type" in broken("NoiseSearchVerifierEnsemble",
                                         lambda wf, n, set_widget: n.update(type="NoSuchNode"))
    assert "VAE from node" in broken("NoiseSearchSampler", vae_into_verifier)


@pytest.mark.comfyui
@pytest.mark.slow
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_on_tiny_models(path, comfy, comfy_env):
    workflow = load(path)
    prompt = shrink(workflow_to_api(localize(workflow, comfy_env), comfy.object_info()), comfy_env)
    run = comfy.run(prompt, timeout=300).check()
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append(node_id)
    for node_id in by_type.get("SaveImage", []):
        images = comfy.images(run, node_id)
        assert images and all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in images), f"SaveImage {node_id} saved nothing"
    for node_id in by_type.get("SaveVideo", []):
        (video,) = comfy.images(run, node_id)
        assert video[4:8] == b"ftyp", f"SaveVideo {node_id} saved no MP4"
    for node_id in by_type["NoiseSearchScoreViewer"]:
        report = run.outputs[node_id]["noise_search"][0]
        item = report["items"][0]
        assert item["nfe"] == item["nfe_planned"] > 0
        assert item["best_score"] == max(c["score"] for c in item["candidates"] if c["sigma"] == 0.0)


@pytest.mark.comfyui
def test_the_racing_example_winner_is_the_stock_ksampler_with_its_seed(comfy, comfy_env):
    """sd15_racing_seed_hires: the search's image and the stock KSampler's fed the `seed` output are the same
    picture; the hires fix refines the winner at 1.5x."""
    import numpy as np
    from PIL import Image

    workflow = load(WORKFLOW_DIR / "sd15_racing_seed_hires.json")
    prompt = shrink(workflow_to_api(localize(workflow, comfy_env), comfy.object_info()), comfy_env)
    search = next(i for i, n in prompt.items() if n["class_type"] == "NoiseSearchSampler")
    assert prompt[search]["inputs"]["algorithm"] == "racing"
    stock = [i for i, n in prompt.items() if n["class_type"] == "KSampler"]
    assert all(prompt[i]["inputs"]["seed"] == [search, 5] for i in stock) and len(stock) == 2
    run = comfy.run(prompt, timeout=300).check()

    def saved(title_prefix):
        node_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage"
                       and n["inputs"]["filename_prefix"].endswith(title_prefix))
        (png,) = comfy.images(run, node_id)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    winner, again, hires = saved("racing_winner"), saved("racing_stock"), saved("racing_hires")
    assert winner.shape == again.shape == (64, 64, 3) and hires.shape == (96, 96, 3)
    assert np.abs(winner.astype(int) - again.astype(int)).max() <= 1  # same latent; one VAE decode each
