"""What the user sees while and after a search runs: the progress bar, the preview, the status text, the log."""

from __future__ import annotations

import logging
import sys
from typing import Callable, Optional

import torch

from ..report import SearchReport
from .scoring import Scorer

log = logging.getLogger(__name__)


def announce(report: SearchReport, node_id: Optional[str]) -> None:
    """Every note of a finished search goes to the server log and, with the winner, to the node's status text."""
    notes = report.all_notes()
    for note in notes:
        log.info("Noise Search: %s", note)
    winners = "; ".join(f"best {r.best_score:.4f} (candidate {r.best_id}), {r.nfe}/{r.nfe_planned} NFE"
                        for r in report.results)
    _send_text("\n".join([f"Noise Search done: {winners}"] + [f"note: {n}" for n in notes]), node_id)


def _send_text(text: str, node_id: Optional[str]) -> None:
    server = getattr(sys.modules.get("server"), "PromptServer", None)
    instance = getattr(server, "instance", None)
    if node_id is not None and instance is not None and hasattr(instance, "send_progress_text"):
        instance.send_progress_text(text, node_id)


def _preview(image: torch.Tensor):
    from PIL import Image

    from comfy.cli_args import LatentPreviewMethod, args

    if args.preview_method == LatentPreviewMethod.NoPreviews:
        return None
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return "JPEG", Image.fromarray(array), args.preview_size


def make_progress(pbar, done_before: int, scorer: Scorer, node_id: Optional[str], item: int, items: int) -> Callable:
    """SearchProblem.progress: the node's progress bar in NFEs, a preview of the best image, the best score."""
    shown = {"id": None}

    def progress(nfe: int, planned: int, best_score, best) -> None:
        preview = None
        if best is not None and best.id != shown["id"] and best.id in scorer.thumbs:
            shown["id"] = best.id
            image = scorer.images.get(best.id)
            preview = _preview(image if image is not None else scorer.thumbs[best.id].float() / 255)
        pbar.update_absolute(done_before + nfe, None, preview)
        where = f"item {item + 1}/{items}: " if items > 1 else ""
        best_text = "no final candidate yet" if best is None else f"best {best_score:.4f} (candidate {best.id})"
        _send_text(f"Noise Search {where}{best_text}, {nfe}/{planned} NFE", node_id)

    return progress
