"""The paper's verifier set in a real server (issue 10): image_reward, vlm_grader and api_grader appear in Load
Verifier, run through a search end to end with tiny models, and together in a Verifier Ensemble."""

from __future__ import annotations

import pytest

from noise_search.tests.e2e.test_e2e_nodes import Graph, add_sampler, base_graph, report_of
from noise_search.tests.helpers.chat_server import ChatServer
from noise_search.verifiers.grading import ASPECTS

pytestmark = pytest.mark.comfyui

GRADERS = ("image_reward", "vlm_grader", "api_grader")


def loader(g: Graph, env, kind: str, model: str = None, **grader) -> str:
    return g.node("NoiseSearchVerifierLoader", kind=kind, model=model or env.verifier_models.get(kind, "x"),
                  device="auto", dtype="auto", allow_download=False, labels="", target="", **grader)


def run_search(comfy, env, verifier: str, g: Graph = None, n: dict = None, seed: int = 3) -> dict:
    if g is None:
        g, n = base_graph(env)
    n["verifier"] = verifier
    search = add_sampler(g, n, "ksampler", seed, candidates=2)
    viewer = g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    run = comfy.run(g.nodes, timeout=600).check()
    return report_of(run, viewer)["items"][0]


def test_the_new_kinds_are_in_load_verifier_with_their_inputs(comfy):
    info = comfy.object_info()["NoiseSearchVerifierLoader"]["input"]
    kinds = info["required"]["kind"][0] if isinstance(info["required"]["kind"][0], list) else \
        info["required"]["kind"][1]["options"]
    assert set(GRADERS) <= set(kinds)
    optional = info["optional"]
    assert optional["grader_mode"][1]["noise_search_for"] == ["vlm_grader", "api_grader"]
    assert optional["base_url"][1]["noise_search_for"] == ["api_grader"]
    assert "api_grader" not in info["required"]["model"][1]["noise_search_for"]


def test_image_reward_scores_a_search(comfy, comfy_env):
    g, n = base_graph(comfy_env)
    item = run_search(comfy, comfy_env, loader(g, comfy_env, "image_reward"), g, n)
    scores = [c["score"] for c in item["candidates"]]
    assert len(scores) == 2 and len(set(scores)) == 2 and all(-50 < s < 50 for s in scores)


def test_vlm_grader_vqascore_and_aspects(comfy, comfy_env):
    g, n = base_graph(comfy_env)
    item = run_search(comfy, comfy_env, loader(g, comfy_env, "vlm_grader", "SmolVLM-256M-Instruct",
                                               grader_mode="vqascore"), g, n)
    assert all(0.0 <= c["score"] <= 1.0 for c in item["candidates"])

    g, n = base_graph(comfy_env)
    item = run_search(comfy, comfy_env, loader(g, comfy_env, "vlm_grader", grader_mode="aspects"), g, n)
    for c in item["candidates"]:  # the tiny grader rates the aspects 7, 5, 6, 8, 4
        assert c["members"] == dict(zip(ASPECTS, (7.0, 5.0, 6.0, 8.0, 4.0)))
        assert c["score"] == pytest.approx(6.0)


def test_an_unparsable_grader_answer_fails_the_run_naming_the_candidate(comfy, comfy_env):
    g, n = base_graph(comfy_env)
    n["verifier"] = loader(g, comfy_env, "vlm_grader", "SmolVLM-256M-Instruct", grader_mode="aspects")
    search = add_sampler(g, n, "ksampler", 3, candidates=2)
    g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    error = comfy.run(g.nodes, timeout=600).error
    assert error is not None
    message = error["exception_message"]
    assert "candidate 0:" in message and "raw answer" in message


@pytest.fixture(scope="module")
def chat_server():
    """An OpenAI-compatible server process on loopback (tests/helpers/chat_server.py)."""
    with ChatServer() as server:
        yield server


def api_loader(g: Graph, env, server, **grader) -> str:
    grader = {"api_key_env": "NOISE_SEARCH_TEST_KEY_UNUSED", **grader}
    return loader(g, env, "api_grader", "openai/clip-vit-large-patch14", base_url=server.url,
                  api_model="tiny-grader", **grader)


def test_api_grader_scores_a_search_through_a_server(comfy, comfy_env, chat_server):
    chat_server.configure()
    g, n = base_graph(comfy_env)
    item = run_search(comfy, comfy_env, api_loader(g, comfy_env, chat_server, grader_mode="aspects",
                                                   aspects="detail, colour", api_key_env=""), g, n)
    sent = chat_server.requests()
    assert len(sent) == 2 and all(r["body"]["model"] == "tiny-grader" for r in sent)
    for c in item["candidates"]:
        assert set(c["members"]) == {"detail", "colour"}
        assert c["score"] == pytest.approx(sum(c["members"].values()) / 2)


def test_api_grader_key_variable_must_be_set(comfy, comfy_env, chat_server):
    chat_server.configure()
    g, n = base_graph(comfy_env)
    n["verifier"] = api_loader(g, comfy_env, chat_server)
    search = add_sampler(g, n, "ksampler", 3, candidates=2)
    g.node("NoiseSearchScoreViewer", report=g.out(search, 4), pick=-1)
    error = comfy.run(g.nodes, timeout=600).error
    assert error is not None and "NOISE_SEARCH_TEST_KEY_UNUSED" in error["exception_message"]
    assert chat_server.requests() == []


def test_the_papers_ensemble_aesthetic_clipscore_image_reward_and_a_grader(comfy, comfy_env, chat_server):
    chat_server.configure()
    g, n = base_graph(comfy_env)
    ensemble = g.node("NoiseSearchVerifierEnsemble", verifier_1=g.out(loader(g, comfy_env, "aesthetic")),
                      verifier_2=g.out(loader(g, comfy_env, "clip_score")),
                      verifier_3=g.out(loader(g, comfy_env, "image_reward")),
                      verifier_4=g.out(api_loader(g, comfy_env, chat_server, grader_mode="vqascore",
                                                  api_key_env="")),
                      weights="", mode="rank")
    item = run_search(comfy, comfy_env, ensemble, g, n)
    for c in item["candidates"]:
        assert set(c["members"]) == {"aesthetic", "clip_score", "image_reward", "api_grader"}
        assert 0.0 <= c["members"]["api_grader"] <= 1.0
    assert len(chat_server.requests()) == 2
