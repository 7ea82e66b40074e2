"""Score Images on a real ComfyUI server and in a ComfyUI process: a stock KSampler batch ranked exactly as the
verifier ranks it (scored again here, independently, through the pack's loader), the outputs a permutation of the
input, the report shown by the Score Viewer, an ensemble ranked over the whole batch whatever the chunking, and
bad input refused naming the node and the input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from noise_search.tests.helpers.comfy_script import run_in_comfyui
from noise_search.tests.helpers.comfy_server import PromptRejected
from noise_search.tests.helpers.workflows import widget_defaults

pytestmark = pytest.mark.comfyui

PROMPT = "a red cube on a wooden table"
BATCH, TOP_K = 4, 2


class Graph:
    """An API-format prompt; `node(...)` adds a node at its defaults plus `inputs` and returns its id."""

    def __init__(self, comfy):
        self.info = comfy.object_info()
        self.nodes: dict = {}

    def node(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": {**widget_defaults(self.info[class_type]), **inputs}}
        return node_id


def ksampler_batch(g: Graph, env, seed: int = 7) -> tuple[str, str]:
    """Stock txt2img: EmptyLatentImage (batch 4) -> KSampler -> VAEDecode with the tiny checkpoint, and a CLIPScore
    verifier on the CPU; returns (VAEDecode id, Load Verifier id)."""
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=env.checkpoint)
    pos = g.node("CLIPTextEncode", clip=[ckpt, 1], text=PROMPT)
    neg = g.node("CLIPTextEncode", clip=[ckpt, 1], text="")
    latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=BATCH)
    sampled = g.node("KSampler", model=[ckpt, 0], positive=[pos, 0], negative=[neg, 0], latent_image=[latent, 0],
                     seed=seed, steps=3, cfg=4.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    decoded = g.node("VAEDecode", samples=[sampled, 0], vae=[ckpt, 2])
    verifier = g.node("NoiseSearchVerifierLoader", kind="clip_score", model=env.verifier_models["clip_score"],
                      device="cpu", dtype="fp32")
    return decoded, verifier


def pngs(comfy, run, node_id: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in comfy.images(run, node_id)]


@pytest.fixture(scope="module")
def scored(comfy_env):
    """One run: the KSampler batch saved, scored by Score Images, every image output saved, the input row at
    best_index picked by ImageFromBatch, and the report shown by the Score Viewer."""
    comfy = comfy_env.client
    g = Graph(comfy)
    decoded, verifier = ksampler_batch(g, comfy_env)
    score = g.node("NoiseSearchScoreImages", images=[decoded, 0], verifier=[verifier, 0], prompt=PROMPT, top_k=TOP_K)
    viewer = g.node("NoiseSearchScoreViewer", report=[score, 5], pick=-1)
    at_index = g.node("ImageFromBatch", image=[decoded, 0], batch_index=[score, 4], length=1)
    saves = {name: g.node("SaveImage", images=link, filename_prefix=f"score_images/{name}")
             for name, link in {"input": [decoded, 0], "sorted": [score, 0], "best": [score, 1],
                                "top_k": [score, 2], "at_index": [at_index, 0], "picked": [viewer, 2]}.items()}
    run = comfy.run(g.nodes, timeout=600).check()
    return {"run": run, "images": {name: pngs(comfy, run, nid) for name, nid in saves.items()},
            "report": run.outputs[viewer]["noise_search"][0], "viewer": run.outputs[viewer]}


def test_ranks_a_stock_ksampler_batch_as_the_verifier_does(scored, comfy_env):
    from noise_search.verifiers.registry import load_verifier

    inputs = scored["images"]["input"]
    assert len(inputs) == BATCH
    verifier = load_verifier("clip_score", str(comfy_env.base / "models" / "verifiers" / "clip-vit-large-patch14"),
                             device="cpu", dtype=torch.float32)
    pixels = torch.from_numpy(np.stack(inputs)).float() / 255.0
    expected = verifier.score(pixels, PROMPT).tolist()
    assert len(set(expected)) == BATCH, f"the test needs distinct scores to rank: {expected}"
    expected_order = sorted(range(BATCH), key=lambda i: (-expected[i], i))

    item = scored["report"]["items"][0]
    reported = {c["id"]: c["score"] for c in item["candidates"]}
    assert sorted(reported) == list(range(BATCH))
    # the server scored the float decode, this test its 8-bit PNG: scores agree to the quantisation
    assert max(abs(reported[i] - expected[i]) for i in range(BATCH)) < 0.05, (reported, expected)
    gaps = sorted(expected)
    assert min(b - a for a, b in zip(gaps, gaps[1:])) > 0.1, f"scores too close to rank from PNGs: {expected}"
    assert sorted(range(BATCH), key=lambda i: (-reported[i], i)) == expected_order
    assert item["best_id"] == expected_order[0] and item["topk_ids"] == expected_order[:TOP_K]
    assert item["best_score"] == max(reported.values())


def test_outputs_are_the_input_permuted_best_first(scored):
    images = scored["images"]
    item = scored["report"]["items"][0]
    order = sorted(range(BATCH), key=lambda i: (-item["candidates"][i]["score"], i))
    assert [c["id"] for c in item["candidates"]] == list(range(BATCH))  # candidates in input order
    assert order[0] == item["best_id"]
    assert len(images["sorted"]) == BATCH
    for out, i in zip(images["sorted"], order):
        assert np.array_equal(out, images["input"][i])
    assert len(images["best"]) == 1 and np.array_equal(images["best"][0], images["sorted"][0])
    assert len(images["top_k"]) == TOP_K
    for out, ref in zip(images["top_k"], images["sorted"][:TOP_K]):
        assert np.array_equal(out, ref)
    # best_index indexes the input batch: ImageFromBatch at it is the best image
    assert np.array_equal(images["at_index"][0], images["best"][0])
    assert not all(np.array_equal(images["input"][0], x) for x in images["input"][1:])  # the rows do differ


def test_score_viewer_shows_the_report(scored):
    report, viewer = scored["report"], scored["viewer"]
    item = report["items"][0]
    assert report["verifier"] == "clip_score" and report["members"] == [] and report["prompt"] == PROMPT
    assert item["algorithm"] == "score_images" and item["nfe"] == 0 and item["baseline_score"] is None
    assert [(c["kind"], c["final"], c["nfe"]) for c in item["candidates"]] == [("image", True, 0)] * BATCH
    assert any("not sampled by Noise Search" in n for n in item["notes"]), item["notes"]
    assert any("clip_score" in n and "CLIPScore" in n for n in item["notes"]), item["notes"]
    assert report["picked"] == [item["best_id"]]
    assert sorted(map(int, report["thumbnails"][0])) == list(range(BATCH))
    assert len(viewer["images"]) == 1  # the chart
    assert np.array_equal(scored["images"]["picked"][0], scored["images"]["best"][0])


def error_of(comfy, prompt: dict) -> tuple[str, str]:
    """(node id, error text) of a prompt that must fail, whether validation rejects it or execution raises."""
    try:
        run = comfy.run(prompt, timeout=600)
    except PromptRejected as e:
        assert e.node_errors, f"rejected without naming a node: {e.body}"
        return next(iter(e.node_errors)), "\n".join(e.messages())
    assert run.status == "error", f"expected an error, the prompt ended {run.status}"
    err = run.error
    assert err is not None, run.messages
    return str(err["node_id"]), f"{err['node_type']}: {err['exception_message']}"


def test_a_prompt_verifier_without_a_prompt_is_refused(comfy, comfy_env):
    g = Graph(comfy)
    verifier = g.node("NoiseSearchVerifierLoader", kind="clip_score", model=comfy_env.verifier_models["clip_score"],
                      device="cpu")
    image = g.node("LoadImage", image=comfy_env.input_image)
    score = g.node("NoiseSearchScoreImages", images=[image, 0], verifier=[verifier, 0], prompt="  ")
    g.node("NoiseSearchScoreViewer", report=[score, 5], pick=-1)
    node_id, text = error_of(comfy, g.nodes)
    assert node_id == score, text
    assert "Score Images" in text and "clip_score" in text and "'prompt' input" in text, text


def test_a_mask_link_is_refused_naming_the_input(comfy, comfy_env):
    g = Graph(comfy)
    verifier = g.node("NoiseSearchVerifierLoader", kind="clip_score", model=comfy_env.verifier_models["clip_score"],
                      device="cpu")
    mask = g.node("SolidMask", value=1.0, width=64, height=64)
    score = g.node("NoiseSearchScoreImages", images=[mask, 0], verifier=[verifier, 0], prompt=PROMPT)
    g.node("NoiseSearchScoreViewer", report=[score, 5], pick=-1)
    node_id, text = error_of(comfy, g.nodes)  # ComfyUI's own validation: a MASK output cannot feed an IMAGE input
    assert node_id == score and "images" in text and "MASK" in text, text


def test_the_viewer_latent_of_an_image_report_blocks_what_uses_it(comfy, comfy_env):
    g = Graph(comfy)
    image = g.node("LoadImage", image=comfy_env.input_image)
    verifier = g.node("NoiseSearchVerifierLoader", kind="aesthetic", model=comfy_env.verifier_models["aesthetic"],
                      device="cpu")
    score = g.node("NoiseSearchScoreImages", images=[image, 0], verifier=[verifier, 0], prompt="")
    viewer = g.node("NoiseSearchScoreViewer", report=[score, 5], pick=-1)
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=comfy_env.checkpoint)
    decode = g.node("VAEDecode", samples=[viewer, 1], vae=[ckpt, 2])
    blocked = g.node("SaveImage", images=[decode, 0], filename_prefix="score_images/blocked")
    shown = g.node("SaveImage", images=[viewer, 2], filename_prefix="score_images/shown")
    # ComfyUI sends the blocker's message to the browser as an execution error and runs the rest of the graph
    run = comfy.run(g.nodes, timeout=600).check()
    assert run.outputs[shown]["images"] and blocked not in run.outputs
    assert run.outputs[viewer]["noise_search"][0]["items"][0]["algorithm"] == "score_images"


BODY = r'''
import tempfile
import comfy.model_management as mm
import folder_paths
from comfy_execution.graph_utils import ExecutionBlocker
from noise_search.nodes import NoiseSearchScoreImages, NoiseSearchScoreViewer
from noise_search.verifiers.ensemble import Ensemble

class Channel(Verifier):
    """Mean of one colour channel; records the batch sizes and channel counts it was called with."""
    def __init__(self, channel, batch_size, needs=frozenset(), reference_sigma=None):
        super().__init__()
        self.model = torch.nn.Linear(1, 1)
        self.name, self.channel, self.batch_size = f"channel{channel}", channel, batch_size
        self.needs, self.reference_sigma = frozenset(needs), reference_sigma
        self.calls = []
    def _score(self, images, prompt, references):
        self.calls.append(list(images.shape))
        return images[..., self.channel].float().mean(dim=(1, 2))

gen = torch.Generator().manual_seed(5)
images = torch.rand(7, 8, 8, 4, generator=gen)  # RGBA: the verifier sees RGB, the outputs keep alpha

def run(verifier, imgs=images, prompt="", top_k=3):
    return NoiseSearchScoreImages.execute(imgs, verifier, prompt, top_k).args

members = {}
for rows in (1, 16):
    ens = Ensemble([Channel(0, rows), Channel(1, rows)], mode="rank")
    steps = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: steps.append([value, total]))
    sorted_, best, top, scores, best_index, report = run(handle(ens))
    comfy.utils.set_progress_bar_global_hook(None)
    order = sorted(range(7), key=lambda i: (-scores[i], i))
    members[rows] = {"calls": ens.members[0].calls, "scores": scores, "best_index": best_index,
                     "ranking": [c.id for c in sorted(report.results[0].candidates, key=lambda c: (-c.score, c.id))],
                     "member_scores": [c.members for c in report.results[0].candidates],
                     "sorted_ok": bool(torch.equal(sorted_, images[order])),
                     "best_ok": bool(torch.equal(best, images[best_index:best_index + 1])),
                     "top_ok": bool(torch.equal(top, sorted_[:3])), "shape": list(sorted_.shape),
                     "report_members": report.members, "progress": steps}
out["chunks"] = members
whole = Ensemble([Channel(0, 64), Channel(1, 64)], mode="rank")
out["whole"] = whole.score(images[..., :3]).tolist()

folder_paths.set_temp_directory(tempfile.mkdtemp())
# the viewer takes the report: the picked image is the best, the latent output blocks with the reason
_, best, _, _, best_index, report = run(handle(Channel(2, 4)))
chart, latent, picked = NoiseSearchScoreViewer.execute(report, -1).args
_, _, repicked = NoiseSearchScoreViewer.execute(report, 3).args
out["viewer"] = {"repicked_ok": bool(torch.equal(repicked[0], images[3, ..., :3])),
                 "picked_ok": bool(torch.equal(picked, best[..., :3])), "blocked": isinstance(latent, ExecutionBlocker),
                 "message": getattr(latent, "message", None), "chart": list(chart.shape),
                 "single_scores": [c.score for c in report.results[0].candidates],
                 "expected": images[..., 2].mean(dim=(1, 2)).tolist(), "best_index": best_index}
large = run(handle(Channel(0, 4)), top_k=50)
out["top_k_large"] = [list(large[2].shape), large[5].all_notes()]

# bad input: refused before any scoring
probe = Channel(0, 4, needs={"prompt"})
out["empty"] = error(lambda: run(handle(probe), torch.zeros(0, 8, 8, 3), "x"))
out["mask"] = error(lambda: run(handle(probe), torch.zeros(2, 8, 8), "x"))
out["no_prompt"] = error(lambda: run(handle(probe), images, "  "))
out["reference"] = error(lambda: run(handle(Channel(0, 4, needs={"reference"}, reference_sigma=0.4)), images))
out["probe_calls"] = probe.calls

# Cancel: an interrupt pending before a chunk stops the node, uncaught, before that chunk is scored
mm.interrupt_current_processing(True)
counted = Channel(0, 2)
try:
    run(handle(counted))
    out["interrupted"] = False
except mm.InterruptProcessingException:
    out["interrupted"] = True
out["interrupt_calls"] = counted.calls
'''


def test_score_images_in_a_comfyui_process(tiny_sd3_dir):
    out = run_in_comfyui(BODY, tiny_sd3_dir, timeout=600)
    one, many = out["chunks"]["1"], out["chunks"]["16"]
    assert one["calls"] == [[1, 8, 8, 3]] * 7 and many["calls"] == [[7, 8, 8, 3]]  # chunked one by one vs at once
    # the ensemble's rank aggregate is over the whole batch, whatever the chunking: equal to one call on all 7
    assert one["scores"] == many["scores"] == pytest.approx(out["whole"], abs=0)
    assert one["ranking"] == many["ranking"] == sorted(range(7), key=lambda i: (-out["whole"][i], i))
    assert one["best_index"] == many["best_index"] == one["ranking"][0]
    assert one["progress"] == [[i, 7] for i in range(1, 8)] and many["progress"] == [[7, 7]]  # a step per chunk
    assert one["member_scores"] == many["member_scores"]
    assert set(one["member_scores"][0]) == {"channel0", "channel1"} == set(one["report_members"])
    for r in (one, many):
        assert r["sorted_ok"] and r["best_ok"] and r["top_ok"] and r["shape"] == [7, 8, 8, 4]

    viewer = out["viewer"]
    assert viewer["repicked_ok"]  # picking another image outputs it, from the stored images
    assert viewer["picked_ok"] and viewer["blocked"] and "holds images, not latents" in viewer["message"]
    assert viewer["single_scores"] == pytest.approx(viewer["expected"], rel=1e-6)  # a single verifier's own scale
    assert viewer["best_index"] == max(range(7), key=lambda i: viewer["expected"][i])
    assert viewer["chart"][0] == 1 and viewer["chart"][3] == 3
    shape, notes = out["top_k_large"]
    assert shape == [7, 8, 8, 4] and any("top_k=50 is larger than the 7" in n for n in notes)
    assert any("alpha channel" in n for n in notes)

    assert "Score Images" in out["empty"] and "images" in out["empty"] and "empty batch" in out["empty"]
    assert "Score Images" in out["mask"] and "images" in out["mask"] and "connect an IMAGE, not a MASK" in out["mask"]
    assert "Score Images" in out["no_prompt"] and "'prompt' input" in out["no_prompt"]
    assert "Score Images" in out["reference"] and "self_similarity" in out["reference"]
    assert out["probe_calls"] == []
    assert out["interrupted"] is True and out["interrupt_calls"] == []
