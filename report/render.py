"""Renders a SearchReport as one chart image: ranked gallery, scaling curve, search lineage (Ma et al. 2025, Figs. 2-4).

Pure Pillow + torch so benchmarks and tests can draw reports without ComfyUI. Deterministic: the same report
renders to identical pixels (Pillow's bundled font, no system fonts, no randomness).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..search.types import Candidate, SearchResult
from .report import SearchReport

THEMES = {
    "dark": {
        "bg": (30, 30, 30), "panel": (42, 42, 42), "fg": (230, 230, 230), "muted": (150, 150, 150),
        "grid": (62, 62, 62), "curve": (88, 166, 255), "dots": (110, 110, 110), "baseline": (255, 107, 107),
        "best": (255, 200, 61), "pick": (64, 224, 208), "edge": (95, 95, 95), "node": (70, 70, 70),
    },
    "light": {
        "bg": (250, 250, 250), "panel": (236, 236, 236), "fg": (25, 25, 25), "muted": (100, 100, 100),
        "grid": (212, 212, 212), "curve": (25, 103, 210), "dots": (165, 165, 165), "baseline": (214, 40, 40),
        "best": (196, 132, 0), "pick": (0, 140, 130), "edge": (175, 175, 175), "node": (210, 210, 210),
    },
}
PAD = 16
THUMB = 112
GALLERY_ROWS = 3
CURVE_H = 240
LINEAGE_H = 220


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def fmt_score(s: Optional[float]) -> str:
    """Scores as the chart and the browser viewer print them."""
    if s is None or not math.isfinite(s):
        return "n/a"
    return f"{s:.1f}" if abs(s) >= 1000 else f"{s:.4g}" if abs(s) < 0.001 and s != 0 else f"{s:.3f}"


def final_ids(report: SearchReport, item: int) -> list[int]:
    """Ids of the item's final candidates, in the order they were scored."""
    return [c.id for c in report.results[item].candidates if c.final]


def ranked(result: SearchResult, ids: Sequence[int]) -> list[Candidate]:
    """The candidates named by `ids`, best score first (ties: lower id first; unscored last)."""
    by_id = {c.id: c for c in result.candidates}
    cands = [by_id[i] for i in ids if i in by_id]
    return sorted(cands, key=lambda c: (c.score is None, -(c.score if c.score is not None else 0.0), c.id))


def pick_ids(report: SearchReport, pick: int) -> list[int]:
    """Candidate id picked per batch item: the best for pick == -1, else `pick`, which must be final in every item."""
    out = []
    for i, result in enumerate(report.results):
        if pick == -1:
            out.append(int(result.best_id))
            continue
        valid = final_ids(report, i)
        if pick not in valid:
            raise ValueError(
                f"pick={pick} is not a final candidate of batch item {i} (search '{result.algorithm}'); "
                f"valid ids: {', '.join(map(str, valid)) or 'none'}, or -1 for the best (id {result.best_id})"
            )
        out.append(int(pick))
    return out


def _to_pil(image: torch.Tensor) -> Image.Image:
    if image.dtype == torch.uint8:
        return Image.fromarray(image.cpu().numpy()[..., :3], "RGB")
    arr = (image.detach().float().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr[..., :3], "RGB")


def thumbnail(image: torch.Tensor, size: int) -> Image.Image:
    """`[H, W, 3]` image (0..1 floats or uint8) -> RGB PIL image whose longer side is `size` (bilinear)."""
    img = _to_pil(image)
    scale = size / max(img.width, img.height)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _member_names(report: SearchReport, result: SearchResult) -> list[str]:
    names = list(report.members)
    for c in result.candidates:
        names += [m for m in c.members if m not in names]
    return names


def _gallery_height(n: int, cols: int, lines: int) -> int:
    rows = min(GALLERY_ROWS, math.ceil(n / cols)) if n else 1
    return 22 + rows * (THUMB + 14 + 15 * lines) + (16 if n > rows * cols else 0)


def _draw_gallery(img, draw, report, item, x0, y0, width, t, picked) -> int:
    result = report.results[item]
    ids = final_ids(report, item)
    cands = ranked(result, ids)
    members = _member_names(report, result)
    f, fs = _font(13), _font(11)
    cell_w = THUMB + 8
    cols = max(1, (width + 8) // (cell_w + 8))
    lines = 1 + len(members)
    cell_h = THUMB + 14 + 15 * lines
    draw.text((x0, y0), f"Final candidates ({len(cands)}), best first", font=f, fill=t["fg"])
    y = y0 + 22
    shown = cands[: GALLERY_ROWS * cols]
    for k, c in enumerate(shown):
        cx, cy = x0 + (k % cols) * (cell_w + 8), y + (k // cols) * cell_h
        draw.rectangle((cx, cy, cx + cell_w - 1, cy + cell_h - 5), fill=t["panel"])
        small = report.thumb(item, c.id)
        if small is not None:
            th = thumbnail(small, THUMB)
            img.paste(th, (cx + 4 + (THUMB - th.width) // 2, cy + 4 + (THUMB - th.height) // 2))
        ring = t["best"] if c.id == result.best_id else t["pick"] if c.id == picked else None
        if ring is not None:
            draw.rectangle((cx, cy, cx + cell_w - 1, cy + cell_h - 5), outline=ring, width=3)
        badge = f"#{k + 1}"
        bw = int(draw.textlength(badge, font=f)) + 8
        draw.rectangle((cx + 4, cy + 4, cx + 4 + bw, cy + 20), fill=ring or t["bg"])
        draw.text((cx + 8, cy + 5), badge, font=f, fill=t["bg"] if ring else t["fg"])
        ty = cy + THUMB + 8
        draw.text((cx + 4, ty), _fit(draw, f"id {c.id}  {fmt_score(c.score)}", f, cell_w - 8), font=f, fill=t["fg"])
        for m in members:
            ty += 15
            text = _fit(draw, f"{m} {fmt_score(c.members.get(m))}", fs, cell_w - 8)
            draw.text((cx + 4, ty + 1), text, font=fs, fill=t["muted"])
    if len(cands) > len(shown):
        ny = y + math.ceil(len(shown) / cols) * cell_h
        draw.text((x0, ny), f"+{len(cands) - len(shown)} more (lower ranked) not shown", font=fs, fill=t["muted"])
    return _gallery_height(len(cands), cols, lines)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _dashed_hline(draw, x0, x1, y, fill, dash=6):
    for x in range(int(x0), int(x1), dash * 2):
        draw.line((x, y, min(x + dash, x1), y), fill=fill, width=2)


def _draw_curve(draw, result: SearchResult, x0, y0, width, t, picked) -> int:
    f, fs = _font(13), _font(11)
    draw.text((x0, y0), "Best score vs NFE", font=f, fill=t["fg"])
    left, top, right, bottom = x0 + 56, y0 + 24, x0 + width - 12, y0 + CURVE_H - 28
    scored = [c for c in result.candidates if c.final and c.score is not None and math.isfinite(c.score)]
    ys = [s for _, s in result.curve] + [c.score for c in scored]
    if result.baseline_score is not None:
        ys.append(result.baseline_score)
    if not ys:
        draw.text((left, top + 20), "no scores", font=f, fill=t["muted"])
        return CURVE_H
    lo, hi = min(ys), max(ys)
    margin = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 1e-3)
    lo, hi = lo - margin, hi + margin
    nmax = max([n for n, _ in result.curve] + [c.nfe for c in scored] + [result.nfe, 1])

    def px(n: float) -> float:
        return left + (right - left) * n / nmax

    def py(s: float) -> float:
        return bottom - (bottom - top) * (s - lo) / (hi - lo)

    draw.rectangle((left, top, right, bottom), outline=t["grid"])
    for v in _ticks(lo, hi):
        draw.line((left, py(v), right, py(v)), fill=t["grid"])
        label = f"{v:.4g}"
        draw.text((left - 6 - draw.textlength(label, font=fs), py(v) - 7), label, font=fs, fill=t["muted"])
    for v in _ticks(0, nmax):
        draw.line((px(v), bottom, px(v), bottom + 4), fill=t["muted"])
        label = f"{v:g}"
        draw.text((px(v) - draw.textlength(label, font=fs) / 2, bottom + 6), label, font=fs, fill=t["muted"])
    draw.text((right - draw.textlength("NFE", font=fs), bottom + 16), "NFE", font=fs, fill=t["muted"])
    for c in scored:
        draw.ellipse((px(c.nfe) - 2, py(c.score) - 2, px(c.nfe) + 2, py(c.score) + 2), fill=t["dots"])
    if result.baseline_score is not None:
        yb = py(result.baseline_score)
        _dashed_hline(draw, left, right, yb, t["baseline"])
        label = f"no search {fmt_score(result.baseline_score)}"
        ly = yb + 3 if yb - 16 < top else yb - 16
        draw.text((right - 4 - draw.textlength(label, font=fs), ly), label, font=fs, fill=t["baseline"])
    pts = []
    for n, s in result.curve:
        if pts:
            pts.append((px(n), pts[-1][1]))
        pts.append((px(n), py(s)))
    if len(pts) > 1:
        draw.line(pts, fill=t["curve"], width=3, joint="curve")
    for x, y in pts[::2] if len(pts) > 1 else pts:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=t["curve"])
    for c in scored:
        if c.id in (result.best_id, picked):
            col = t["best"] if c.id == result.best_id else t["pick"]
            draw.ellipse((px(c.nfe) - 6, py(c.score) - 6, px(c.nfe) + 6, py(c.score) + 6), outline=col, width=3)
    return CURVE_H


def _lineage_path(by_id: dict, cid: Optional[int]) -> set:
    path = set()
    while cid is not None and cid in by_id and cid not in path:
        path.add(cid)
        cid = by_id[cid].parent
    return path


def _draw_lineage(draw, result: SearchResult, x0, y0, width, t, picked) -> int:
    f, fs = _font(13), _font(11)
    title = "Pivots by round" if result.algorithm == "zero_order" else "Paths by round"
    draw.text((x0, y0), f"{title} (edges: parent -> child; gold: the winner's lineage)", font=f, fill=t["fg"])
    by_id = {c.id: c for c in result.candidates}
    rounds = sorted({c.round for c in result.candidates})
    columns = {r: sorted(c.id for c in result.candidates if c.round == r) for r in rounds}
    top, bottom = y0 + 40, y0 + LINEAGE_H - 10
    left, right = x0 + 24, x0 + width - 24
    colx = {r: left + (right - left) * (k + 0.5) / len(rounds) for k, r in enumerate(rounds)}
    tallest = max(len(v) for v in columns.values())
    step = (bottom - top) / max(tallest, 1)
    radius = max(2.0, min(11.0, step / 2 - 1))
    pos = {}
    for r, ids in columns.items():
        span = step * len(ids)
        for k, cid in enumerate(ids):
            pos[cid] = (colx[r], top + (bottom - top - span) / 2 + step * (k + 0.5))
        sigmas = {round(by_id[cid].sigma, 3) for cid in ids}
        label = f"round {r}" + (f", sigma {sigmas.pop():g}" if len(sigmas) == 1 and result.algorithm == "paths" else "")
        draw.text((colx[r] - draw.textlength(label, font=fs) / 2, y0 + 20), label, font=fs, fill=t["muted"])
    win = _lineage_path(by_id, result.best_id)
    for c in result.candidates:
        if c.parent in pos and c.id in pos:
            hot = c.id in win and c.parent in win
            draw.line((*pos[c.parent], *pos[c.id]), fill=t["best"] if hot else t["edge"], width=3 if hot else 1)
    for c in result.candidates:
        x, y = pos[c.id]
        fill = t["best"] if c.id in win else t["pick"] if c.id == picked else t["node"]
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=t["muted"])
        if radius >= 7:
            label = str(c.id)
            draw.text((x - draw.textlength(label, font=fs) / 2, y - 7), label, font=fs,
                      fill=t["bg"] if c.id in win else t["fg"])
    return LINEAGE_H


def _bracket_columns(result: SearchResult) -> list:
    """Racing: per segment, the candidates that ran it, best first by the score they reached at its end."""
    rungs = len(result.config.get("rung_steps", []))
    columns = []
    for j in range(rungs + 1):
        def reached(c, j=j):
            if j == rungs:
                return c.score if c.final else -math.inf
            return c.extra["rungs"][j]["score"]
        ran = [c for c in result.candidates if (c.extra.get("dropped_at") or rungs + 1) > j]
        columns.append([c.id for c in sorted(ran, key=lambda c: (-reached(c), c.id))])
    return columns


def _draw_bracket(draw, result: SearchResult, x0, y0, width, t, picked) -> int:
    """Racing's bracket: a column per segment, each seed's line running on while it survives."""
    f, fs = _font(13), _font(11)
    draw.text((x0, y0), "Racing bracket (each column: the seeds that ran to its rung, best first; gold: the winner)",
              font=f, fill=t["fg"])
    columns = _bracket_columns(result)
    steps = result.config.get("rung_steps", [])
    rho = result.config.get("rung_rho", [])
    top, bottom = y0 + 40, y0 + LINEAGE_H - 10
    left, right = x0 + 24, x0 + width - 24
    step = (bottom - top) / max(len(columns[0]), 1)
    radius = max(2.0, min(11.0, step / 2 - 1))
    pos = {}
    for j, ids in enumerate(columns):
        x = left + (right - left) * (j + 0.5) / len(columns)
        for k, cid in enumerate(ids):
            pos[j, cid] = (x, top + step * (k + 0.5))
        label = (f"rung {j + 1}, step {steps[j]}, rho {fmt_score(rho[j])}" if j < len(steps) else "final")
        draw.text((x - draw.textlength(label, font=fs) / 2, y0 + 20), label, font=fs, fill=t["muted"])
    for (j, cid), xy in pos.items():
        if (j + 1, cid) in pos:
            hot = cid == result.best_id
            draw.line((*xy, *pos[j + 1, cid]), fill=t["best"] if hot else t["edge"], width=3 if hot else 1)
    for (_, cid), (x, y) in pos.items():
        fill = t["best"] if cid == result.best_id else t["pick"] if cid == picked else t["node"]
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=t["muted"])
        if radius >= 7:
            draw.text((x - draw.textlength(str(cid), font=fs) / 2, y - 7), str(cid), font=fs,
                      fill=t["bg"] if cid == result.best_id else t["fg"])
    return LINEAGE_H


LINEAGES = {"zero_order": _draw_lineage, "paths": _draw_lineage, "racing": _draw_bracket}


def _header(draw, report: SearchReport, item: int, x0, y0, width, t) -> int:
    r = report.results[item]
    f, fs = _font(15), _font(12)
    gain = ("" if r.baseline_score is None
            else f" (no search {fmt_score(r.baseline_score)}, {r.best_score - r.baseline_score:+.3g})")
    batch = f"item {item}: " if len(report.results) > 1 else ""
    head = f"{batch}{r.algorithm} search, best id {r.best_id} = {fmt_score(r.best_score)}{gain}"
    draw.text((x0, y0), _fit(draw, head, f, width), font=f, fill=t["fg"])
    verifier = report.verifier + (f" [{', '.join(report.members)}]" if report.members else "")
    sub = (f"verifier {verifier}  |  {r.nfe} NFE (planned {r.nfe_planned})  |  {len(r.candidates)} scored  |  "
           f"{report.seconds:.1f} s")
    draw.text((x0, y0 + 22), _fit(draw, sub, fs, width), font=fs, fill=t["muted"])
    return 44


def render_report(report: SearchReport, *, width: int = 1024, theme: str = "dark",
                  picked: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Chart of every batch item's search, stacked vertically, as a ComfyUI IMAGE `[1, H, W, 3]` in 0..1.

    `picked` (one id per item) gets a teal ring; the winner a gold one."""
    if theme not in THEMES:
        raise ValueError(f"unknown theme {theme!r}; valid: {', '.join(THEMES)}")
    if width < 320:
        raise ValueError(f"width={width} is too small for the chart; use at least 320 pixels")
    if not report.results:
        raise ValueError("the search report has no results (no batch items): run a Noise Search sampler first")
    t = THEMES[theme]
    inner = width - 2 * PAD
    cols = max(1, (inner + 8) // (THUMB + 16))
    heights = []
    for i, r in enumerate(report.results):
        lines = 1 + len(_member_names(report, r))
        lineage = LINEAGE_H + PAD if r.algorithm in LINEAGES and r.candidates else 0
        heights.append(44 + PAD + _gallery_height(len(final_ids(report, i)), cols, lines) + PAD + CURVE_H + lineage)
    img = Image.new("RGB", (width, sum(heights) + PAD * (len(heights) + 1)), t["bg"])
    draw = ImageDraw.Draw(img)
    y = PAD
    for i, r in enumerate(report.results):
        pick = picked[i] if picked is not None else None
        y += _header(draw, report, i, PAD, y, inner, t) + PAD
        y += _draw_gallery(img, draw, report, i, PAD, y, inner, t, pick) + PAD
        y += _draw_curve(draw, r, PAD, y, inner, t, pick)
        if r.algorithm in LINEAGES and r.candidates:
            y += PAD + LINEAGES[r.algorithm](draw, r, PAD, y + PAD, inner, t, pick)
        y += PAD
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)
