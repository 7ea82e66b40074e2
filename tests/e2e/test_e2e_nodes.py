"""The pack's nodes driven over HTTP on a real ComfyUI server with the tiny SD3 and tiny verifiers.

Every algorithm through both samplers; NFEs against hand counts and the estimate; the NOISE output replayed
through SamplerCustomAdvanced; /interrupt; bad inputs coming back as errors that name the node and input.
"""

from __future__ import annotations

import io
import itertools
import time

import pytest
import torch

from noise_search.tests.helpers.comfy_server import PromptRejected

pytestmark = pytest.mark.comfyui

PROMPT = "a red cube on a wooden table"
STEPS = 4
SETTINGS = dict(algorithm="random", candidates=3, zo_rounds=1, zo_step_cos=0.9, paths_branches=2,
                paths_sigma_start=0.75, paths_delta_f=0.25, paths_delta_b=0.5, paths_max_rounds=0, budget_nfe=0,
                batch_size=0, top_k=2)
RENOISING = ("paths", "smc")  # re-noise mid-way: the NOISE output alone cannot replay the winner
PLAIN_WINNERS = ("random", "racing")  # the winner is always a stock seed: the seed output reproduces it
_ids = itertools.count(1)


class Graph:
    """An API-format prompt under construction; `node(...)` returns its id, `out(id, i)` a link to output i."""

    def __init__(self):
        self.nodes: dict = {}

    def node(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    @staticmethod
    def out(node_id: str, index: int = 0) -> list:
        return [node_id, index]


def base_graph(env, prompt: str = PROMPT, verifier: str = "clip_score", model_name=None):
    """Checkpoint, one text node feeding CLIPTextEncode and the sampler, a 64x64 SD3 latent, a verifier."""
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=env.checkpoint)
    text = g.node("PrimitiveStringMultiline", value=prompt)
    pos = g.node("CLIPTextEncode", text=g.out(text), clip=g.out(ckpt, 1))
    neg = g.node("CLIPTextEncode", text="", clip=g.out(ckpt, 1))
    latent = g.node("EmptySD3LatentImage", width=64, height=64, batch_size=1)

    def loader(kind):
        return g.node("NoiseSearchVerifierLoader", kind=kind, model=model_name or env.verifier_models[kind],
                      device="auto", dtype="auto", allow_download=False, labels="", target="")

    if verifier == "ensemble":
        ver = g.node("NoiseSearchVerifierEnsemble", verifier_1=g.out(loader("clip_score")),
                     verifier_2=g.out(loader("aesthetic")), weights="", mode="rank")
    else:
        ver = loader(verifier)
    return g, dict(ckpt=ckpt, text=text, pos=pos, neg=neg, latent=latent, verifier=ver)


def add_sampler(g: Graph, n: dict, kind: str, seed: int, sampler_name: str = "euler", scheduler: str = "simple",
                cfg: float = 3.0, **settings) -> str:
    """A search sampler plus, for the custom one, the RandomNoise/CFGGuider/KSamplerSelect/BasicScheduler it needs."""
    search = dict(SETTINGS, **settings)
    common = dict(latent_image=g.out(n["latent"]), vae=g.out(n["ckpt"], 2), verifier=g.out(n["verifier"]),
                  prompt=g.out(n["text"]), **search)
    n["custom"] = custom_parts(g, n, seed, sampler_name, scheduler, cfg)
    if kind == "ksampler":
        return g.node("NoiseSearchSampler", model=g.out(n["ckpt"]), positive=g.out(n["pos"]), negative=g.out(n["neg"]),
                      seed=seed, steps=STEPS, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, denoise=1.0,
                      **common)
    parts = n["custom"]
    return g.node("NoiseSearchSamplerCustom", noise=g.out(parts["noise"]), guider=g.out(parts["guider"]),
                  sampler=g.out(parts["sampler"]), sigmas=g.out(parts["sigmas"]), **common)


def custom_parts(g: Graph, n: dict, seed: int, sampler_name: str, scheduler: str, cfg: float) -> dict:
    """The SamplerCustomAdvanced inputs equivalent to KSampler(seed, STEPS, cfg, sampler_name, scheduler, 1.0)."""
    return dict(
        noise=g.node("RandomNoise", noise_seed=seed),
        guider=g.node("CFGGuider", model=g.out(n["ckpt"]), positive=g.out(n["pos"]), negative=g.out(n["neg"]), cfg=cfg),
        sampler=g.node("KSamplerSelect", sampler_name=sampler_name),
        sigmas=g.node("BasicScheduler", model=g.out(n["ckpt"]), scheduler=scheduler, steps=STEPS, denoise=1.0),
    )


def report_of(run, viewer: str) -> dict:
    data = run.outputs[viewer]["noise_search"]
    assert len(data) == 1 and len(data[0]["items"]) == 1
    return data[0]


def latent_file(env, run, node_id: str) -> torch.Tensor:
    from safetensors.torch import load_file

    (entry,) = run.outputs[node_id]["latents"]
    return load_file(str(env.output_dir / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def pixels(png: bytes) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("RGB")))


def expected_nfe(algorithm: str) -> int | None:
    """Hand count for euler (one NFE per step): random N x steps, zero-order (1 + N x rounds) x steps."""
    if algorithm == "random":
        return SETTINGS["candidates"] * STEPS
    if algorithm == "zero_order":
        return (1 + SETTINGS["candidates"] * SETTINGS["zo_rounds"]) * STEPS
    if algorithm == "racing":  # rungs 0.75, 0.5 at steps 1 and 2 of 4: 3 seeds, then 2, then 1 to the end
        return 3 * 1 + 2 * 1 + 1 * 2
    return None


def finals(item: dict) -> list[dict]:
    return [c for c in item["candidates"] if c["sigma"] == 0.0]


def search_graph(env, algorithm: str, kind: str, seed: int):
    """A search with its viewer, saved outputs and, for Random/Zero-Order, the NOISE output replayed by
    SamplerCustomAdvanced with the same guider, sampler and sigmas."""
    g, n = base_graph(env, verifier="ensemble" if kind == "custom" else "clip_score")
    ids = {"search": add_sampler(g, n, kind, seed, algorithm=algorithm, batch_size=1)}
    out = g.out
    ids["viewer"] = g.node("NoiseSearchScoreViewer", report=out(ids["search"], 4), pick=-1)
    prefix = f"e2e_nodes/{algorithm}_{kind}"
    ids["save"] = g.node("SaveImage", images=out(ids["search"], 1), filename_prefix=prefix)
    ids["save_picked"] = g.node("SaveImage", images=out(ids["viewer"], 2), filename_prefix=prefix + "_picked")
    ids["save_best"] = g.node("SaveLatent", samples=out(ids["search"], 0), filename_prefix=prefix + "_best")
    if algorithm not in RENOISING:
        parts = n["custom"]
        replay = g.node("SamplerCustomAdvanced", noise=out(ids["search"], 3), guider=out(parts["guider"]),
                        sampler=out(parts["sampler"]), sigmas=out(parts["sigmas"]), latent_image=out(n["latent"]))
        ids["save_replay"] = g.node("SaveLatent", samples=out(replay, 0), filename_prefix=prefix + "_replay")
    if algorithm in PLAIN_WINNERS:  # the seed output into a stock sampler's seed
        parts, seed = n["custom"], out(ids["search"], 5)
        if kind == "ksampler":
            stock = g.node("KSampler", model=out(n["ckpt"]), positive=out(n["pos"]), negative=out(n["neg"]), seed=seed,
                           steps=STEPS, cfg=3.0, sampler_name="euler", scheduler="simple", denoise=1.0,
                           latent_image=out(n["latent"]))
        else:
            stock = g.node("SamplerCustomAdvanced", noise=out(g.node("RandomNoise", noise_seed=seed)),
                           guider=out(parts["guider"]), sampler=out(parts["sampler"]), sigmas=out(parts["sigmas"]),
                           latent_image=out(n["latent"]))
        ids["save_stock"] = g.node("SaveLatent", samples=out(stock, 0), filename_prefix=prefix + "_stock")
    return g.nodes, ids


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ksampler", "custom"])
@pytest.mark.parametrize("algorithm", ["random", "zero_order", "paths", "smc", "trust_region", "evolution", "racing"])
def test_search_runs_and_reports(algorithm, kind, comfy, comfy_env):
    first = 100 * next(_ids)
    for seed in range(first, first + 5):  # the first seed whose winner is not candidate 0
        prompt, ids = search_graph(comfy_env, algorithm, kind, seed)
        run = comfy.run(prompt, timeout=300).check()
        report = report_of(run, ids["viewer"])
        item = report["items"][0]
        if item["best_id"] != 0:
            break
    assert item["best_id"] != 0, "five seeds in a row kept the seed's own noise: the NOISE replay would prove little"

    assert report["prompt"] == PROMPT
    assert item["algorithm"] == algorithm
    assert item["nfe"] == item["nfe_planned"] > 0
    if expected_nfe(algorithm) is not None:
        assert item["nfe"] == expected_nfe(algorithm)
    final = finals(item)
    final_scores = sorted((c["score"] for c in final), reverse=True)
    assert item["best_score"] == final_scores[0]
    assert item["best_id"] in {c["id"] for c in final}
    assert item["topk_scores"] == final_scores[:SETTINGS["top_k"]] and item["topk_ids"][0] == item["best_id"]
    if algorithm == "random":
        assert sorted(c["id"] for c in final) == list(range(SETTINGS["candidates"]))
    if kind == "custom":
        assert sorted(report["members"]) == sorted(final[0]["members"]), "ensemble member scores missing"
    assert run.outputs[ids["viewer"]]["images"], "Score Viewer showed no chart"

    (best_png,), (picked_png,) = comfy.images(run, ids["save"]), comfy.images(run, ids["save_picked"])
    assert torch.equal(pixels(best_png), pixels(picked_png)), "Score Viewer's pick -1 is not the sampler's best image"
    best = latent_file(comfy_env, run, ids["save_best"])
    assert best.shape == (1, 16, 8, 8)
    if algorithm not in RENOISING:
        replayed = latent_file(comfy_env, run, ids["save_replay"])
        assert torch.equal(best, replayed), (f"best id {item['best_id']}: replaying the NOISE output differs by "
                                             f"{(best - replayed).abs().max().item():.3g}")
    if algorithm in PLAIN_WINNERS:
        stock = latent_file(comfy_env, run, ids["save_stock"])
        assert torch.equal(best, stock), (f"best id {item['best_id']}: the stock sampler with the seed output "
                                          f"differs by {(best - stock).abs().max().item():.3g}")


def test_results_do_not_depend_on_batch_size(comfy, comfy_env):
    """The same seeded search with 1 row per model call and with 3: same candidates, same scores, same winner."""
    reports = []
    for batch_size in (1, 3):
        g, n = base_graph(comfy_env)
        search = add_sampler(g, n, "ksampler", 7, algorithm="zero_order", batch_size=batch_size)
        viewer = g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
        reports.append(report_of(comfy.run(g.nodes, timeout=300).check(), viewer)["items"][0])
    one, three = reports
    assert one["best_id"] == three["best_id"] and one["nfe"] == three["nfe"]
    assert [c["id"] for c in one["candidates"]] == [c["id"] for c in three["candidates"]]
    assert [c["score"] for c in one["candidates"]] == pytest.approx([c["score"] for c in three["candidates"]], abs=1e-3)


def interrupt_graph(env, candidates: int, seed: int = 12345):
    g, n = base_graph(env)
    search = add_sampler(g, n, "ksampler", seed, candidates=candidates, batch_size=1)
    viewer = g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    return g.nodes, viewer


def test_interrupt_stops_a_long_search_promptly(comfy, comfy_env):
    comfy.run(interrupt_graph(comfy_env, 1)[0], timeout=300).check()  # loads and encodes; the long run reuses them
    prompt_id = comfy.queue(interrupt_graph(comfy_env, 4096)[0])
    deadline = time.monotonic() + 120
    while not comfy.queue_state()["queue_running"]:
        assert time.monotonic() < deadline, "the long search never started"
        time.sleep(0.1)
    time.sleep(2.0)  # inside the search: only the sampler node is not cached
    assert comfy.history(prompt_id) is None, "the long search finished before it could be interrupted"
    start = time.monotonic()
    comfy.interrupt()
    run = comfy.wait(prompt_id, timeout=60)
    stopped_after = time.monotonic() - start
    assert run.status == "error" and run.message("execution_interrupted") is not None, run.messages
    assert stopped_after < 5.0, f"the search took {stopped_after:.1f}s to stop after /interrupt"

    prompt, viewer = interrupt_graph(comfy_env, 2, seed=54321)
    assert report_of(comfy.run(prompt, timeout=300).check(), viewer)["items"][0]["nfe"] == 2 * STEPS


def error_of(comfy, prompt: dict) -> tuple[str, str]:
    """(node id, error text) of a prompt that must fail, whether validation rejects it or execution raises."""
    try:
        run = comfy.run(prompt, timeout=300)
    except PromptRejected as e:
        assert e.node_errors, f"rejected without naming a node: {e.body}"
        node_id = next(iter(e.node_errors))
        return node_id, "\n".join(e.messages())
    assert run.status == "error", f"expected an error, the prompt ended {run.status}"
    err = run.error
    assert err is not None, run.messages
    return str(err["node_id"]), f"{err['node_type']}: {err['exception_message']}"


@pytest.mark.parametrize("case, settings, needle", [
    ("budget", dict(budget_nfe=STEPS - 1), "budget_nfe"),
    ("deltas", dict(algorithm="paths", paths_delta_f=0.3, paths_delta_b=0.2), "paths_delta_b"),
])
def test_bad_search_settings_name_the_input(case, settings, needle, comfy, comfy_env):
    g, n = base_graph(comfy_env)
    search = add_sampler(g, n, "ksampler", 900 + next(_ids), **settings)
    g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    node_id, text = error_of(comfy, g.nodes)
    assert node_id == search, f"error reported on node {node_id}, not the sampler {search}: {text}"
    assert needle in text, text
    assert "Noise Search Sampler" in text or "NoiseSearchSampler" in text, text


def test_prompt_needing_verifier_with_empty_prompt_is_refused(comfy, comfy_env):
    g, n = base_graph(comfy_env, prompt="")
    search = add_sampler(g, n, "custom", 31)
    g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    node_id, text = error_of(comfy, g.nodes)
    assert node_id == search, text
    assert "prompt" in text and "clip_score" in text, text


def test_unknown_verifier_model_is_refused(comfy, comfy_env):
    g, n = base_graph(comfy_env, model_name="no-such-verifier.safetensors")
    search = add_sampler(g, n, "ksampler", 32)
    g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    node_id, text = error_of(comfy, g.nodes)
    assert node_id == n["verifier"], text
    assert "no-such-verifier.safetensors" in text and "model" in text, text


def test_early_exit_stops_at_the_first_candidate_reaching_stop_score(comfy, comfy_env):
    g, n = base_graph(comfy_env)
    search = add_sampler(g, n, "ksampler", 950, candidates=4, batch_size=1, early_exit=True, stop_score=-1e9)
    viewer = g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    item = report_of(comfy.run(g.nodes, timeout=300).check(), viewer)["items"][0]
    assert item["nfe"] == STEPS and item["nfe_planned"] == 4 * STEPS
    assert [c["id"] for c in item["candidates"]] == [0]
    assert any(note.startswith("stopped early: candidate 0") and f"{3 * STEPS} were left unspent" in note
               for note in item["notes"]), item["notes"]


def test_early_exit_with_an_ensemble_is_refused_before_sampling(comfy, comfy_env):
    g, n = base_graph(comfy_env, verifier="ensemble")
    search = add_sampler(g, n, "ksampler", 960, early_exit=True, stop_score=0.5)
    g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    node_id, text = error_of(comfy, g.nodes)
    assert node_id == search and "stop_score" in text and "ensemble" in text, text
