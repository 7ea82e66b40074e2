"""api_grader against `transformers serve` (a real OpenAI-compatible server) serving a tiny Qwen2-VL in its real
format: the image is decoded and run through the model, the answer parsed. Transformers' server ignores `logprobs`,
so VQAScore meets the 'no logprobs' error a real server gives."""

import pytest
import torch

from noise_search.tests.helpers import unavailable
from noise_search.tests.helpers.tiny_models import random_images
from noise_search.tests.helpers.tiny_vlm_server import TransformersServer, make_tiny_qwen2_vl, serving_missing
from noise_search.verifiers.api_grader import load_api_grader
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.grading import UnparsedAnswer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if serving_missing():
        unavailable(f"transformers serve needs {serving_missing()}")
    server = TransformersServer(make_tiny_qwen2_vl(tmp_path_factory.mktemp("vlm") / "qwen2-vl", answer="hue: 7"))
    yield server
    server.close()


def test_the_tiny_model_answers_and_the_ratings_parse(served):
    g = load_api_grader(served.model, base_url=served.url, mode="aspects", aspects="hue", concurrency=2)
    scores = g.score(random_images(3, 40, 48, seed=1), prompt="a red cube")
    assert torch.equal(scores, torch.full((3,), 7.0)) and torch.equal(g.member_scores()["hue"], scores)


def test_an_answer_missing_an_aspect_names_the_image(served):
    g = load_api_grader(served.model, base_url=served.url, mode="aspects", aspects="hue, detail", concurrency=1)
    with pytest.raises(UnparsedAnswer) as e:
        g.score(random_images(2, seed=2), prompt="a red cube")
    assert e.value.index == 0 and e.value.answer == "hue: 7" and e.value.missing == ["detail"]


def test_vqascore_on_a_server_without_logprobs_says_to_use_aspects(served):
    with pytest.raises(VerifierError, match=f"{served.url}/chat/completions returned no logprobs.*mode 'aspects'"):
        load_api_grader(served.model, base_url=served.url).score(random_images(1), prompt="a red cube")


def test_a_model_the_server_does_not_serve_names_url_status_and_the_servers_message(served):
    with pytest.raises(VerifierError) as e:
        load_api_grader("other-model", base_url=served.url, retries=0).score(random_images(1), prompt="a cube")
    assert f"{served.url}/chat/completions answered HTTP 400: Server is pinned to" in str(e.value)
    assert "'other-model'" in str(e.value)
