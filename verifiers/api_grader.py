"""A remote vision-language grader over an OpenAI-compatible chat-completions API, the one local servers speak
(Ollama, LM Studio, vLLM, llama.cpp's server): VQAScore from the answer's logprobs, or the mean of 0-10 aspect
ratings (see `grading.py`). Requests go through the `openai` client, to the typed URL only: no default host, no
redirects followed, the key read from an environment variable the user names (never from the workflow)."""

from __future__ import annotations

import base64
import io
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence
from urllib.parse import urlsplit

import openai
import torch
from PIL import Image

from .base import VerifierError
from .grading import VQA_ANSWER, ClipGrader, aspect_request, check_mode, parse_aspects, parse_ratings, vqa_question

NAME = "api_grader"
DEFAULT_MODEL = ""
TOP_LOGPROBS = 20
# Headers the openai client would otherwise fill from OPENAI_* environment variables meant for api.openai.com.
_AMBIENT_HEADERS = ("OpenAI-Organization", "OpenAI-Project")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE_MARKERS = str.maketrans({"\u2581": " ", "\u0120": " "})  # SentencePiece and byte-level BPE word starts


def _fail(message: str) -> VerifierError:
    return VerifierError(f"verifier '{NAME}': {message}")


def check_base_url(base_url: str) -> str:
    """The typed server URL, refused when empty or not http(s): nothing is ever sent to a default host."""
    url = (base_url or "").strip().rstrip("/")
    if not url:
        raise _fail("the base_url input is empty: give your server's OpenAI-compatible URL, e.g. "
                    "http://localhost:11434/v1 (Ollama), http://localhost:1234/v1 (LM Studio), "
                    "http://localhost:8000/v1 (vLLM, llama.cpp)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(f"base_url must be an http:// or https:// URL such as http://localhost:11434/v1, got {url!r}")
    return url


def api_key(api_key_env: str) -> str:
    """The key held by the environment variable named `api_key_env`; '' when no variable is named."""
    name = (api_key_env or "").strip()
    if not name:
        return ""
    if not _ENV_NAME.fullmatch(name):
        raise _fail("api_key_env must be the NAME of an environment variable that holds the key (letters, digits "
                    "and underscores), never the key itself: the workflow is saved with its inputs")
    key = os.environ.get(name, "").strip()
    if not key:
        raise _fail(f"api_key_env names the environment variable {name}, which is not set (or empty) in ComfyUI's "
                    f"environment: set it before starting ComfyUI, or clear api_key_env for a server without a key")
    return key


def _count(value, option: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(f"{option} must be a whole number >= {minimum}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise _fail(f"{option} must be a whole number >= {minimum}, got {value!r}") from None
    if not number.is_integer() or number < minimum:
        raise _fail(f"{option} must be a whole number >= {minimum}, got {value!r}")
    return int(number)


def _seconds(value) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not (math.isfinite(seconds) and seconds > 0):
        raise _fail(f"timeout must be a positive number of seconds, got {value!r}")
    return seconds


def request_headers(key: str) -> dict:
    """Per-request headers: the named key as Bearer (none without one), and every header the openai client would fill
    from OPENAI_* variables meant for api.openai.com (key, organization, project, custom headers) left out."""
    custom = os.environ.get("OPENAI_CUSTOM_HEADERS", "")
    ambient = [line.split(":", 1)[0].strip() for line in custom.splitlines() if ":" in line]
    headers: dict = {name: openai.Omit() for name in (*ambient, *_AMBIENT_HEADERS) if name}
    headers["Authorization"] = f"Bearer {key}" if key else openai.Omit()
    return headers


def make_client(base_url: str, timeout: float, retries: int) -> openai.OpenAI:
    """An `openai` client bound to `base_url` alone, following no redirect; its own key is a placeholder that
    `request_headers` replaces on every request."""
    return openai.OpenAI(base_url=base_url, api_key="unused", timeout=timeout, max_retries=retries,
                         http_client=openai.DefaultHttpxClient(follow_redirects=False))


def png_data_url(image: torch.Tensor) -> str:
    """One `[H, W, 3]` image in 0..1 as a base64 PNG data URL (8 bits, rounded)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _server_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        return str(message if message else body)
    return str(body) if body else error.response.text[:500]


def _status_hint(status: int, model: str, has_key: bool, location: Optional[str]) -> str:
    if 300 <= status < 400:
        return (f"the server redirects to {location}; redirects are not followed, so that images go only to the URL "
                f"you typed: put the final URL in base_url")
    if status in (401, 403):
        return ("the key was refused: check the variable api_key_env names" if has_key else
                "the server wants an API key: set api_key_env to the name of the environment variable that holds it")
    if status == 404:
        return (f"check base_url (OpenAI-compatible servers answer under /v1, e.g. http://localhost:11434/v1) and "
                f"that the server serves a model named '{model}'")
    if status == 429 or status >= 500:
        return "the server kept failing: raise retries, lower concurrency, or check the server's log"
    return "check the model name and that the server accepts images"


def yes_probability(top: Sequence, url: str, model: str) -> float:
    """P(answer starts with Yes): the summed probability of the listed first tokens that read `Yes` up to case and
    leading whitespace (' yes', 'YES', '▁Yes' are one answer split over tokenizers); 0 when none is listed."""
    if not top:
        raise _fail(f"{url} returned logprobs without top_logprobs for model '{model}': VQAScore needs the "
                    f"probability of '{VQA_ANSWER}'; use mode 'aspects' with this server")
    yes = VQA_ANSWER.lower()
    tokens = {entry.token: entry.logprob for entry in top}
    p = sum(math.exp(lp) for token, lp in tokens.items() if token.translate(_SPACE_MARKERS).strip().lower() == yes)
    return min(p, 1.0)


class ApiGrader(ClipGrader):
    """Asks a remote vision-language model about each image, `concurrency` requests at a time, in input order."""

    name = NAME
    needs = frozenset({"prompt"})

    def __init__(self, client: openai.OpenAI, served_model: str, mode: str, aspects: Sequence[str],
                 concurrency: int, key: str = "") -> None:
        super().__init__()
        self.model = torch.nn.Module()  # no weights: the host's model management has nothing to move
        self.client, self.served_model, self.mode = client, served_model, mode
        self.aspects, self.concurrency = tuple(aspects), concurrency
        self.headers, self.has_key = request_headers(key), bool(key)
        self.url = f"{str(client.base_url).rstrip('/')}/chat/completions"
        self._last: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, device=None, dtype=None) -> "ApiGrader":
        return self

    def release(self) -> None:
        self.client.close()
        super().release()

    def _grade(self, clips: torch.Tensor, prompt: str) -> torch.Tensor:
        """Scores `[B]` of clips `[B, F, H, W, 3]` (F = 1: images)."""
        self._last = {}
        if self.mode == "vqascore":
            scores = self._each(clips, lambda i, urls: self._vqascore(urls, prompt))
            return torch.tensor(scores, dtype=torch.float32)
        ratings = self._each(clips, lambda i, urls: self._ratings(i, urls, prompt))
        self._last = {a: torch.tensor([r[a] for r in ratings], dtype=torch.float32) for a in self.aspects}
        return torch.stack(list(self._last.values())).mean(dim=0)

    def member_scores(self) -> dict:
        """Each aspect's ratings from the last `score` call (mode aspects); empty in mode vqascore."""
        return dict(self._last)

    def _each(self, clips: torch.Tensor, ask: Callable[[int, list], object]) -> list:
        """`ask(index, PNG data URLs of its frames)` for every clip, at most `concurrency` at once; results in input
        order. Once a request fails (or the caller is interrupted) nothing further is sent, and the first error in
        input order is raised."""
        stop = threading.Event()

        def run(index: int):
            if stop.is_set():
                return None  # never returned: an earlier failure is raised first
            finished = False
            try:
                result = ask(index, [png_data_url(frame) for frame in clips[index]])
                finished = True
                return result
            finally:
                if not finished:
                    stop.set()

        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=NAME)
        try:
            return [f.result() for f in [pool.submit(run, i) for i in range(clips.shape[0])]]
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _vqascore(self, image_urls: list, prompt: str) -> float:
        choice = self._ask(image_urls, vqa_question(prompt, len(image_urls)), max_tokens=1, logprobs=True,
                           top_logprobs=TOP_LOGPROBS)
        content = choice.logprobs.content if choice.logprobs is not None else None
        if not content:
            raise _fail(f"{self.url} returned no logprobs for model '{self.served_model}': this server (or model) "
                        f"does not give token probabilities on chat completions, which VQAScore needs; use mode "
                        f"'aspects' with it")
        return yes_probability(content[0].top_logprobs, self.url, self.served_model)

    def _ratings(self, index: int, image_urls: list, prompt: str) -> dict[str, float]:
        choice = self._ask(image_urls, aspect_request(prompt, self.aspects, len(image_urls)))
        return parse_ratings(NAME, index, choice.message.content or "", self.aspects)

    def _ask(self, image_urls: list, question: str, **options):
        """One chat completion at temperature 0 with the images and the question; its first choice."""
        messages = [{"role": "user", "content": [*({"type": "image_url", "image_url": {"url": url}}
                                                   for url in image_urls),
                                                 {"type": "text", "text": question}]}]
        try:
            response = self.client.chat.completions.create(model=self.served_model, messages=messages,
                                                           temperature=0, extra_headers=self.headers, **options)
        except openai.APIStatusError as e:
            status = e.status_code
            hint = _status_hint(status, self.served_model, self.has_key, e.response.headers.get("location"))
            raise _fail(f"{e.request.url} answered HTTP {status}: {_server_message(e)}; {hint}") from e
        except openai.APITimeoutError as e:
            raise _fail(f"{e.request.url} did not answer within {self.client.timeout:g} s (tried "
                        f"{self.client.max_retries + 1} times): raise timeout, lower concurrency, or check the "
                        f"server") from e
        except openai.APIConnectionError as e:
            raise _fail(f"cannot reach {e.request.url} ({e.__cause__ or e}): is the server running, and is base_url "
                        f"right?") from e
        except openai.OpenAIError as e:
            raise _fail(f"{self.url}: {e}") from e
        choices = getattr(response, "choices", None)
        if not choices:
            raise _fail(f"{self.url} did not answer with a chat completion (got {str(response)[:200]!r}): is base_url "
                        f"an OpenAI-compatible server?")
        return choices[0]


def load_api_grader(model: str = DEFAULT_MODEL, *, allow_download: bool = False, base_url: str = "",
                    api_key_env: str = "", mode: str = "vqascore", aspects: str = "", concurrency=4, timeout=120.0,
                    retries=2) -> ApiGrader:
    """A grader for the server at `base_url` serving `model`; checks every option and sends nothing
    (`allow_download` is meaningless here: there are no weights)."""
    url = check_base_url(base_url)
    served = (model or "").strip()
    if not served:
        raise _fail(f"model is empty: give the name the server at {url} serves the model under (Ollama: "
                    f"`ollama list`; LM Studio, vLLM, llama.cpp: GET {url}/models)")
    if check_mode(NAME, mode) == "vqascore" and (aspects or "").strip():
        raise _fail("aspects are rated only in mode 'aspects': clear the aspects option or set mode to aspects")
    names = parse_aspects(NAME, aspects)
    workers, tries, seconds = _count(concurrency, "concurrency", 1), _count(retries, "retries", 0), _seconds(timeout)
    key = api_key(api_key_env)
    return ApiGrader(make_client(url, seconds, tries), served, mode, names, workers, key)
