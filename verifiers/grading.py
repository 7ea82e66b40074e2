"""What a vision-language grader is asked and how its answers become scores, shared by local (`vlm_grader`) and
remote (`api_grader`) graders: VQAScore (Lin et al. 2024, arXiv 2404.01291) and the paper's aspect grader
(Ma et al. 2025, arXiv 2501.09732, App. "LLM grader": 0-10 ratings of named aspects)."""

from __future__ import annotations

import json
import math
import re
from typing import Optional, Sequence

import torch

from .base import Verifier, VerifierError
from .frames import frame_indices

MODES = ("vqascore", "aspects")
VQA_QUESTION = 'Does this figure show "{prompt}"? Please answer yes or no.'
VQA_VIDEO_QUESTION = 'Do these frames of a video show "{prompt}"? Please answer yes or no.'
VQA_ANSWER = "Yes"
SCALE = (0.0, 10.0)
ASPECTS = ("accuracy to prompt", "creativity and originality", "visual quality and realism",
           "consistency and cohesion", "emotional or thematic resonance")
_NUMBER = r"(-?\d+(?:\.\d+)?)"


class UnparsedAnswer(VerifierError):
    """A grader's answer holds no rating for some aspect; `index` is the image's position in the scored batch."""

    def __init__(self, verifier: str, index: int, answer: str, missing: Sequence[str]) -> None:
        self.verifier, self.index, self.answer, self.missing = verifier, index, answer, list(missing)
        super().__init__(f"verifier '{verifier}': the answer for image {index} of the batch rates no "
                         f"{', '.join(map(repr, self.missing))} on the {SCALE[0]:g}-{SCALE[1]:g} scale; raw answer: "
                         f"{answer!r}. Use a model that follows instructions, or fewer aspects")


def check_mode(verifier: str, mode: str) -> str:
    if mode not in MODES:
        raise VerifierError(f"verifier '{verifier}': unknown mode '{mode}': use one of {', '.join(MODES)}")
    return mode


def parse_aspects(verifier: str, text: Optional[str]) -> tuple[str, ...]:
    """The `aspects` option (comma- or newline-separated) -> aspect names; empty means the paper's five."""
    names = tuple(dict.fromkeys(a.strip() for a in re.split(r"[,\n]", text or "") if a.strip()))
    if any(not re.search(r"[A-Za-z]", a) for a in names):
        raise VerifierError(f"verifier '{verifier}': every aspect needs a name in words, got {list(names)}")
    return names or ASPECTS


def vqa_question(prompt: str, frames: int = 1) -> str:
    """The VQAScore question about one image, or about a clip shown as `frames` frames."""
    return (VQA_QUESTION if frames == 1 else VQA_VIDEO_QUESTION).format(prompt=prompt.strip())


def aspect_request(prompt: str, aspects: Sequence[str], frames: int = 1) -> str:
    """The grading instruction: rate each aspect on the scale, one `aspect: number` line each, nothing else; about
    the clip when it is shown as several frames."""
    lines = "\n".join(f"{a}: <number>" for a in aspects)
    what, shown = ("image", "") if frames == 1 else ("video", f", shown as {frames} frames in order")
    return (f'You are grading a{"n" if what == "image" else ""} {what} generated for the prompt "{prompt.strip()}"'
            f"{shown}. Rate the {what} on each aspect below from {SCALE[0]:g} (worst) to {SCALE[1]:g} (best). Answer "
            f"with exactly these lines and nothing else:\n{lines}")


def _from_json(answer: str) -> dict:
    match = re.search(r"\{.*\}", answer, re.S)
    if not match:
        return {}
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError:
        return {}
    return {str(k).strip().lower(): v for k, v in obj.items()} if isinstance(obj, dict) else {}


def _rating(value) -> Optional[float]:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and SCALE[0] <= x <= SCALE[1] else None


def parse_ratings(verifier: str, index: int, answer: str, aspects: Sequence[str]) -> dict[str, float]:
    """Each aspect's rating in `answer` (`aspect: 7`, `**Aspect**: 7/10`, or a JSON object); every aspect must be
    rated within the scale, else UnparsedAnswer naming the image and the raw answer."""
    found = _from_json(answer)
    out: dict[str, float] = {}
    for aspect in aspects:
        value = _rating(found.get(aspect.lower()))
        if value is None:
            pattern = re.escape(aspect).replace(r"\ ", r"[\s_*-]+")
            match = re.search(rf"{pattern}[\s*_\"']*[:=\-–]\s*\**\s*{_NUMBER}(?:\s*/\s*10)?", answer, re.I)
            value = _rating(match.group(1)) if match else None
        if value is not None:
            out[aspect] = value
    missing = [a for a in aspects if a not in out]
    if missing:
        raise UnparsedAnswer(verifier, index, answer, missing)
    return out


class ClipGrader(Verifier):
    """A grader asking one question per clip of frames `[F, H, W, 3]`: an image is a clip of one frame, a video the
    `frames` frames spread over it, shown in order, so the model judges the clip as a whole (no frame has a score of
    its own, and there is nothing for `how` to aggregate). Subclasses implement `_grade(clips [B, F, H, W, 3],
    prompt) -> scores [B]`; in aspects mode an unparsable answer raises UnparsedAnswer with the clip's index."""

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompt: Optional[str] = None,
              references: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.check(prompt, references)
        return self._grade(images.unsqueeze(1), prompt)

    @torch.no_grad()
    def score_video(self, videos: torch.Tensor, prompt: Optional[str] = None,
                    references: Optional[torch.Tensor] = None, frames: int = 4, how: str = "mean") -> torch.Tensor:
        self.check(prompt, references)
        self.frame_indices, self.frame_scores = frame_indices(videos.shape[1], frames), {}
        return self._grade(videos[:, self.frame_indices], prompt)

    def _grade(self, clips: torch.Tensor, prompt: str) -> torch.Tensor:
        raise NotImplementedError
