"""Scoring videos with image verifiers: score a few frames spread over the clip and aggregate them per video."""

from __future__ import annotations

import torch

FRAME_AGGREGATES = ("mean", "min")


def frame_indices(total: int, count: int) -> list[int]:
    """`count` frame indices spread evenly from the first to the last (3: first, middle, last); all if fewer."""
    if total < 1 or count < 1:
        raise ValueError(f"need at least one frame and one to score, got {total} frame(s) and count {count}")
    if count >= total:
        return list(range(total))
    if count == 1:
        return [(total - 1) // 2]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def select_frames(videos: torch.Tensor, count: int) -> tuple[torch.Tensor, list[int]]:
    """Videos `[B, T, H, W, C]` -> the chosen frames as one image batch `[B * F, H, W, C]` (video-major), indices."""
    indices = frame_indices(videos.shape[1], count)
    frames = videos[:, indices]
    return frames.reshape(-1, *frames.shape[2:]), indices


def aggregate_frames(per_frame: torch.Tensor, videos: int, how: str) -> torch.Tensor:
    """Scores `[B * F]` of video-major frames -> one score per video `[B]` (their mean or their min)."""
    if how not in FRAME_AGGREGATES:
        raise ValueError(f"frame aggregate must be one of {', '.join(FRAME_AGGREGATES)}, got {how!r}")
    rows = per_frame.reshape(videos, -1).float()
    return rows.mean(dim=1) if how == "mean" else rows.min(dim=1).values
