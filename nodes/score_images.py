"""Score Images: ranks any IMAGE batch with a verifier (no sampling), reported as the Score Viewer shows a search."""

from __future__ import annotations

import os
import time
from typing import Optional

import torch

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..report import SearchReport
from ..report.report import make_thumbs
from ..report.store import TensorStore, spill_note
from ..search._common import record_scores
from ..search.score_set import rank_set, ranking
from ..search.types import Candidate
from ..verifiers.registry import KINDS, kind_info
from .checks import check_images, check_scorable, check_verifier
from .progress import announce
from .samplers import CATEGORY, unique_id
from .scoring import THUMB_RAM, Scorer
from .types import LoadedVerifier, SearchReportType, VerifierType

ALGORITHM = "score_images"


def score_rows(verifier) -> int:
    """Images per scoring chunk: the verifier's own batch_size (its images per model call, which is what bounds its
    memory); for an ensemble the largest member's, so each chunk is one model call of every member."""
    members = getattr(verifier, "members", None) or [verifier]
    return max(1, *(int(getattr(m, "batch_size", 1) or 1) for m in members))


def score_note(handle: LoadedVerifier, count: int) -> str:
    """What the report's scores are: an ensemble's set-relative aggregate, or the verifier's own scale."""
    verifier = handle.verifier
    if handle.members:
        return (f"scores are the ensemble's {getattr(verifier, 'mode', 'rank')} aggregate over these {count} images "
                f"(relative to this set: the same image scores differently in another batch); each member's raw "
                f"score is in the table")
    scale = f": {kind_info(verifier.name).summary}" if verifier.name in KINDS else ""
    return f"scores are {handle.name}'s own{scale}"


class NoiseSearchScoreImages(io.ComfyNode):
    """Scores every image of a batch with a verifier and outputs them best first, with a Score Viewer report."""

    DISPLAY = "Score Images"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NoiseSearchScoreImages",
            display_name=cls.DISPLAY,
            category=CATEGORY,
            description="Scores any batch of images with a verifier (no sampling) and sorts it best first. The "
                        "report shows the ranking in the Score Viewer like a search's. An ensemble ranks the whole "
                        "batch as one set.",
            inputs=[
                io.Image.Input("images", tooltip="The images to score (any batch size)."),
                VerifierType.Input("verifier", tooltip="From Load Verifier or Verifier Ensemble."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The text the images should show; needed by prompt verifiers (CLIPScore, "
                                        "PickScore, HPSv2, ImageReward, the graders)."),
                io.Int.Input("top_k", default=1, min=1, max=4096,
                             tooltip="How many of the best images the top_k output holds."),
            ],
            outputs=[  # ids differ from the inputs' (the schema requires it); the names shown are the same
                io.Image.Output("sorted_images", display_name="images", tooltip="The whole batch, best first."),
                io.Image.Output("best", display_name="best", tooltip="The best image (a batch of 1)."),
                io.Image.Output("top_k_images", display_name="top_k", tooltip="The top_k best images, best first."),
                io.Float.Output("scores", display_name="scores", is_output_list=True,
                                tooltip="Every image's score in input order, as a list of FLOATs: a node taking a "
                                        "FLOAT runs once per image."),
                io.Int.Output("best_index", display_name="best_index",
                              tooltip="The best image's index in the input batch."),
                SearchReportType.Output("report", display_name="report",
                                        tooltip="Connect to Score Viewer: the ranking, every image and every "
                                                "ensemble member's score."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, images, verifier, prompt: str, top_k: int) -> io.NodeOutput:
        node = cls.DISPLAY
        check_images(node, images)
        check_verifier(node, verifier, prompt)
        check_scorable(node, verifier)
        report = score_images(node, unique_id(cls), images, verifier, prompt, top_k)
        result = report.results[0]
        order = torch.tensor(ranking(result))
        scores = [float(c.score) for c in result.candidates]  # candidates are in input order
        return io.NodeOutput(images[order], images[result.best_id:result.best_id + 1], images[order[:top_k]],
                             scores, int(result.best_id), report)


def score_images(node: str, node_id: Optional[str], images: torch.Tensor, handle: LoadedVerifier,
                 prompt: Optional[str], top_k: int) -> SearchReport:
    """Score `images` in chunks (a progress step and a Cancel point each) and rank them as one set."""
    start = time.perf_counter()
    count = images.shape[0]
    rgb = images[..., :3]
    spill_dir = folder_paths.get_temp_directory()
    os.makedirs(spill_dir, exist_ok=True)
    scorer = Scorer(node, None, handle, prompt, thumbs=TensorStore(THUMB_RAM, spill_dir))
    aggregate = getattr(handle.verifier, "aggregate", None)
    cands = [Candidate(id=i, parent=None, round=0, kind="image", final=True) for i in range(count)]
    rows = score_rows(handle.verifier)
    pbar = comfy.utils.ProgressBar(count)
    for lo in range(0, count, rows):
        comfy.model_management.throw_exception_if_processing_interrupted()
        batch = cands[lo:lo + rows]
        chunk = rgb[lo:lo + rows]
        record_scores(batch, scorer.score(chunk, None, batch), aggregate is not None)
        for c, thumb in zip(batch, make_thumbs(chunk)):
            scorer.thumbs.add(c.id, thumb)
        pbar.update_absolute(lo + len(batch), count)
    notes = [f"these {count} images were scored as given, not sampled by Noise Search: no NFEs were spent, so "
             f"there is no scaling curve and no no-search baseline; candidate ids are batch indices",
             score_note(handle, count)]
    if images.shape[-1] == 4:
        notes.append("the images have an alpha channel, which the verifier does not see (it scores RGB)")
    spilled = spill_note("thumbnails", [scorer.thumbs], THUMB_RAM)
    result = rank_set(ALGORITHM, {"images": count, "top_k": int(top_k), "chunk": rows}, cands, rgb, aggregate,
                      top_k, notes + ([spilled] if spilled else []))
    report = SearchReport(results=[result], verifier=handle.name, members=handle.members, prompt=prompt,
                          seconds=time.perf_counter() - start, images=[{i: rgb[i] for i in range(count)}],
                          thumbs=[scorer.thumbs])
    announce(report, node_id)
    return report
