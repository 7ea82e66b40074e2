"""api_grader against a real server process on loopback (tests/helpers/chat_server.py): what is sent, to where, with
which key, how answers become scores, and how every failure reads."""

import math
import socket
import time
from types import SimpleNamespace

import pytest
import torch

import noise_search.verifiers as verifiers
from noise_search.tests.helpers.chat_server import ChatServer
from noise_search.verifiers.api_grader import ApiGrader, load_api_grader, yes_probability
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.grading import ASPECTS, UnparsedAnswer, aspect_request, vqa_question

PROMPT = "a red cube"
KEY_VARIABLES = ("OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_CUSTOM_HEADERS", "OPENAI_BASE_URL")


@pytest.fixture(scope="module")
def server():
    with ChatServer() as s:
        yield s


@pytest.fixture
def chat(server, monkeypatch):
    """The module's server with default behaviour and an empty record; no OPENAI_* variable set."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server.configure()
    return server


def solid(*colours, height=20, width=24) -> torch.Tensor:
    """One flat image per colour (r, g, b) or red level (then g = b = 0.2); levels are multiples of 1/255."""
    rgb = [c if isinstance(c, tuple) else (c, 0.2, 0.2) for c in colours]
    return torch.stack([torch.tensor(c).expand(height, width, 3) for c in rgb]).float()


def grader(chat, **options) -> ApiGrader:
    return load_api_grader("tiny-grader", base_url=chat.url, **options)


def test_vqascore_is_the_probability_of_yes_in_input_order_when_answers_come_back_out_of_order(chat):
    chat.configure(delay_per_red=0.3)
    reds = [0.8, 0.2, 0.6, 0.4, 1.0, 0.0]
    g = grader(chat, concurrency=3)
    scores = g.score(solid(*reds), prompt=PROMPT)
    assert scores.dtype == torch.float32 and torch.allclose(scores, torch.tensor(reds), atol=1e-6)
    assert g.member_scores() == {}
    log = chat.requests()
    finished = [r["image"]["mean"][0] for r in sorted(log, key=lambda r: r["end"])]
    assert finished != pytest.approx(reds)
    for r in log:
        assert r["path"] == "/v1/chat/completions" and r["text"] == vqa_question(PROMPT)
        assert r["body"] == {"model": "tiny-grader", "temperature": 0, "max_tokens": 1, "logprobs": True,
                             "top_logprobs": 20}
        assert r["image"]["head"] == "data:image/png;base64" and r["image"]["format"] == "PNG"
        assert r["image"]["size"] == [24, 20]


def test_aspects_are_rated_at_temperature_zero_and_averaged(chat):
    g = grader(chat, mode="aspects", aspects="detail, colour\nlight")
    images = solid((0.2, 0.4, 0.6), (1.0, 0.0, 0.8))
    scores = g.score(images, prompt=PROMPT)
    assert torch.allclose(scores, torch.tensor([4.0, 6.0]), atol=1e-5)
    members = g.member_scores()
    assert list(members) == ["detail", "colour", "light"]
    assert torch.allclose(torch.stack(list(members.values())), torch.tensor([[2.0, 10.0], [4.0, 0.0], [6.0, 8.0]]))
    for r in chat.requests():
        assert r["body"] == {"model": "tiny-grader", "temperature": 0}
        assert r["text"] == aspect_request(PROMPT, ("detail", "colour", "light"))


def test_aspects_default_to_the_papers_five(chat):
    g = grader(chat, mode="aspects")
    g.score(solid(0.4), prompt=PROMPT)
    assert list(g.member_scores()) == list(ASPECTS)
    assert chat.requests()[0]["text"] == aspect_request(PROMPT, ASPECTS)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_no_more_than_concurrency_requests_are_in_flight(chat, concurrency):
    chat.configure(delay=0.15)
    g = grader(chat, concurrency=concurrency)
    assert torch.allclose(g.score(solid(*[0.2] * 7), prompt=PROMPT), torch.full((7,), 0.2), atol=1e-6)
    assert len(chat.requests()) == 7 and chat.max_in_flight() == concurrency


@pytest.mark.parametrize("retries", [0, 1])
def test_a_timeout_names_the_url_and_the_attempts(chat, retries):
    chat.configure(delay=1.5)
    g = grader(chat, timeout=0.2, retries=retries)
    start = time.monotonic()
    with pytest.raises(VerifierError) as e:
        g.score(solid(0.2), prompt=PROMPT)
    assert time.monotonic() - start < 1.4
    assert f"{chat.url}/chat/completions did not answer within 0.2 s (tried {retries + 1} times)" in str(e.value)
    assert len(chat.requests()) == retries + 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_failures_are_retried_as_configured(chat, status):
    chat.configure(fail={"status": status, "times": 2, "retry_after_ms": 5})
    g = grader(chat, retries=2)
    assert torch.allclose(g.score(solid(0.6), prompt=PROMPT), torch.tensor([0.6]), atol=1e-6)
    assert len(chat.requests()) == 3

    chat.configure(fail={"status": status, "times": 3, "retry_after_ms": 5, "message": "model is loading"})
    with pytest.raises(VerifierError) as e:
        g.score(solid(0.6), prompt=PROMPT)
    assert f"{chat.url}/chat/completions answered HTTP {status}: model is loading" in str(e.value)
    assert "raise retries" in str(e.value) and len(chat.requests()) == 3


def test_retries_back_off_exponentially_without_a_retry_after_header(chat):
    chat.configure(fail={"status": 500, "times": 2})
    grader(chat, retries=2).score(solid(0.2), prompt=PROMPT)
    starts = [r["start"] for r in chat.requests()]
    first, second = starts[1] - starts[0], starts[2] - starts[1]
    assert 0.3 < first < 0.6 and 0.7 < second < 1.2


@pytest.mark.parametrize("status, message, hint", [
    (401, "invalid api key", "set api_key_env to the name of the environment variable"),
    (404, "model 'tiny-grader' not found", "OpenAI-compatible servers answer under /v1"),
    (400, "image input is not supported", "that the server accepts images"),
])
def test_client_errors_name_url_status_and_message_and_are_not_retried(chat, status, message, hint):
    chat.configure(fail={"status": status, "times": 99, "message": message})
    with pytest.raises(VerifierError) as e:
        grader(chat, retries=3, concurrency=1).score(solid(0.2, 0.4, 0.6), prompt=PROMPT)
    assert f"{chat.url}/chat/completions answered HTTP {status}: {message}" in str(e.value) and hint in str(e.value)
    assert len(chat.requests()) == 1


def test_redirects_are_not_followed(chat):
    with ChatServer() as elsewhere:
        chat.configure(redirect={"status": 307, "location": f"{elsewhere.url}/chat/completions"})
        with pytest.raises(VerifierError) as e:
            grader(chat).score(solid(0.2), prompt=PROMPT)
        assert elsewhere.requests() == []
    assert f"{chat.url}/chat/completions answered HTTP 307" in str(e.value)
    assert f"redirects to {elsewhere.url}/chat/completions" in str(e.value) and "not followed" in str(e.value)


@pytest.mark.parametrize("base_url", ["", "   "])
def test_an_empty_base_url_is_refused_and_nothing_is_sent(chat, monkeypatch, base_url):
    monkeypatch.setenv("OPENAI_BASE_URL", chat.url)
    with pytest.raises(VerifierError, match="the base_url input is empty"):
        load_api_grader("tiny-grader", base_url=base_url)
    with pytest.raises(VerifierError, match="the base_url input is empty"):
        verifiers.load_verifier("api_grader", "tiny-grader", base_url=base_url)
    assert chat.requests() == []


@pytest.mark.parametrize("base_url", ["localhost:11434/v1", "ftp://localhost/v1", "http:///v1"])
def test_a_base_url_that_is_not_http_is_refused(base_url):
    with pytest.raises(VerifierError, match="base_url must be an http:// or https:// URL"):
        load_api_grader("m", base_url=base_url)


def test_the_key_comes_from_the_named_variable_and_nothing_from_openai_variables(chat, monkeypatch):
    monkeypatch.setenv("GRADER_KEY", "secret-123")
    monkeypatch.setenv("OPENAI_API_KEY", "leaked-openai-key")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-leak")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-leak")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "X-Leak: 1\nAuthorization: Bearer custom-leak")
    grader(chat, api_key_env="GRADER_KEY").score(solid(0.2), prompt=PROMPT)
    grader(chat, api_key_env="").score(solid(0.2), prompt=PROMPT)
    with_key, without = (r["headers"] for r in chat.requests())
    assert with_key["authorization"] == "Bearer secret-123" and "authorization" not in without
    for headers in (with_key, without):
        assert not {"x-leak", "openai-organization", "openai-project"} & set(headers)
        assert "leak" not in str(headers)


def test_a_named_but_unset_key_variable_is_an_error_naming_it(chat, monkeypatch):
    monkeypatch.delenv("NO_SUCH_GRADER_KEY", raising=False)
    with pytest.raises(VerifierError, match="environment variable NO_SUCH_GRADER_KEY, which is not set"):
        grader(chat, api_key_env="NO_SUCH_GRADER_KEY")
    monkeypatch.setenv("EMPTY_GRADER_KEY", " ")
    with pytest.raises(VerifierError, match="EMPTY_GRADER_KEY, which is not set \\(or empty\\)"):
        grader(chat, api_key_env="EMPTY_GRADER_KEY")
    with pytest.raises(VerifierError) as e:
        grader(chat, api_key_env="sk-proj-abc123")
    assert "NAME of an environment variable" in str(e.value) and "sk-proj-abc123" not in str(e.value)
    assert chat.requests() == []


def test_an_unparseable_answer_names_the_image(chat):
    with pytest.raises(UnparsedAnswer) as e:
        grader(chat, mode="aspects", aspects="detail").score(solid(0.4, (0.0, 0.0, 0.0), 0.6), prompt=PROMPT)
    assert e.value.index == 1 and e.value.answer == "I cannot rate this image." and e.value.missing == ["detail"]


def test_a_server_without_logprobs_says_to_use_aspects(chat):
    chat.configure(logprobs=False)
    with pytest.raises(VerifierError, match="returned no logprobs for model 'tiny-grader'.*use mode 'aspects'"):
        grader(chat).score(solid(0.2), prompt=PROMPT)
    assert grader(chat, mode="aspects", aspects="detail").score(solid(0.2), prompt=PROMPT).item() == 2.0


def test_a_server_that_is_not_an_api_is_an_error(chat):
    chat.configure(html=True)
    with pytest.raises(VerifierError, match="did not answer with a chat completion .*OpenAI-compatible"):
        grader(chat).score(solid(0.2), prompt=PROMPT)


def test_an_unreachable_server_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(VerifierError, match=f"cannot reach http://127.0.0.1:{port}/v1/chat/completions"):
        load_api_grader("m", base_url=f"http://127.0.0.1:{port}/v1", retries=0).score(solid(0.2), prompt=PROMPT)


def test_after_the_first_error_queued_images_are_not_sent(chat):
    chat.configure(fail={"status": 401, "times": 99})
    with pytest.raises(VerifierError, match="HTTP 401"):
        grader(chat, concurrency=1).score(solid(*[0.2] * 6), prompt=PROMPT)
    time.sleep(0.2)
    assert len(chat.requests()) == 1


class InterruptProcessingException(Exception):
    """Stands in for ComfyUI's (comfy.model_management), which is a plain Exception."""


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, InterruptProcessingException])
def test_an_interrupt_inside_a_request_propagates_unchanged_and_stops_the_rest(chat, interrupt):
    g = grader(chat, concurrency=1)
    ask, calls = g._vqascore, []

    def interrupted_second(image_url, prompt):
        calls.append(image_url)
        if len(calls) == 2:
            raise interrupt()
        return ask(image_url, prompt)

    g._vqascore = interrupted_second
    with pytest.raises(interrupt):
        g.score(solid(*[0.2] * 5), prompt=PROMPT)
    time.sleep(0.2)
    assert len(calls) == 2 and len(chat.requests()) == 1


def test_yes_is_summed_over_case_and_leading_space_variants():
    top = [SimpleNamespace(token=t, logprob=math.log(p)) for t, p in
           [("Yes", 0.4), (" yes", 0.2), ("\u2581YES", 0.1), ("\u0120yes", 0.05), ("Yesterday", 0.1), ("No", 0.15)]]
    assert yes_probability(top, "u", "m") == pytest.approx(0.75)
    assert yes_probability(top[-2:], "u", "m") == 0.0
    with pytest.raises(VerifierError, match="without top_logprobs"):
        yes_probability([], "u", "m")


def test_a_missing_prompt_is_refused_before_any_request(chat):
    with pytest.raises(VerifierError, match="needs a prompt"):
        grader(chat).score(solid(0.2), prompt="  ")
    assert chat.requests() == []


@pytest.mark.parametrize("options, message", [
    ({"concurrency": 0}, "concurrency must be a whole number >= 1, got 0"),
    ({"concurrency": "two"}, "concurrency must be a whole number >= 1"),
    ({"concurrency": 1.5}, "concurrency must be a whole number >= 1"),
    ({"retries": -1}, "retries must be a whole number >= 0"),
    ({"retries": True}, "retries must be a whole number >= 0"),
    ({"timeout": 0}, "timeout must be a positive number of seconds"),
    ({"timeout": "inf"}, "timeout must be a positive number of seconds"),
    ({"mode": "stars"}, "unknown mode 'stars': use one of vqascore, aspects"),
    ({"aspects": "detail"}, "aspects are rated only in mode 'aspects'"),
    ({"mode": "aspects", "aspects": "7, 8"}, "every aspect needs a name in words"),
])
def test_bad_options_are_refused_naming_the_option(chat, options, message):
    with pytest.raises(VerifierError, match=message):
        grader(chat, **options)


def test_an_empty_model_name_is_refused_naming_where_to_find_one(chat):
    with pytest.raises(VerifierError, match=f"model is empty.*GET {chat.url}/models"):
        load_api_grader("  ", base_url=chat.url)
    with pytest.raises(VerifierError, match="model is empty"):
        verifiers.load_verifier("api_grader", base_url=chat.url)


def test_through_the_registry_a_grader_has_no_weights_and_moves_nowhere(chat):
    g = verifiers.load_verifier("api_grader", "tiny-grader", device="cpu", dtype=torch.float16, base_url=chat.url,
                                mode="aspects", aspects="detail", concurrency="2", timeout="30", retries=1)
    assert isinstance(g, ApiGrader) and isinstance(g.model, torch.nn.Module) and list(g.model.parameters()) == []
    assert g.device == torch.device("cpu") and g.dtype == torch.float32 and g.to("cuda", torch.bfloat16) is g
    assert (g.concurrency, g.client.timeout, g.client.max_retries) == (2, 30.0, 1)
    assert g.score(solid(0.6), prompt=PROMPT).item() == pytest.approx(6.0)
    g.release()
    assert g.model is None and g.client.is_closed()
    info = verifiers.describe("api_grader")
    assert info["needs"] == ["prompt"] and info["required_options"] == ["base_url"]
    assert set(info["options"]) == {"base_url", "api_key_env", "mode", "aspects", "concurrency", "timeout", "retries"}


def test_a_video_is_one_request_with_frames_spread_over_it(chat):
    g = grader(chat, concurrency=2)
    reds = torch.tensor([[0.1, 0.9, 0.3, 0.7, 0.5], [0.2, 0.2, 0.8, 0.2, 0.2]])
    videos = torch.zeros(2, 5, 8, 8, 3)
    videos[..., 0] = reds[:, :, None, None]
    scores = g.score_video(videos, prompt="a red cube", frames=3)
    assert g.frame_indices == [0, 2, 4] and g.frame_scores == {}
    assert scores.tolist() == pytest.approx([0.3, 0.4], abs=3e-3)  # P(Yes) = mean red of frames 0, 2, 4 (8-bit PNG)
    requests = sorted(chat.requests(), key=lambda r: r["image"]["mean"][0])
    assert [r["image"]["count"] for r in requests] == [3, 3]
    assert all(r["text"] == vqa_question("a red cube", 3) for r in requests)
