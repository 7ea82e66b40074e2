"""Score Viewer: shows a Noise Search report in the graph and outputs any final candidate without re-sampling."""

from __future__ import annotations

import json
import os
import secrets

import numpy as np
import torch
from comfy_execution.graph_utils import ExecutionBlocker
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import folder_paths
from comfy.cli_args import args
from comfy_api.latest import io

from ..report import SearchReport
from ..report.render import final_ids, pick_ids, render_report
from ..report.report import STRIP_FRAMES, image_batch
from .samplers import CATEGORY
from .types import SearchReportType

CHART_WIDTH = 1024


def _save_png(image: Image.Image, name: str, pnginfo: PngInfo | None = None) -> dict:
    """Write into ComfyUI's temp folder; return the {filename, subfolder, type} entry `/view` serves."""
    image.save(os.path.join(folder_paths.get_temp_directory(), name), pnginfo=pnginfo, compress_level=1)
    return {"filename": name, "subfolder": "", "type": "temp"}


def pick_warning(cli_args) -> str:
    """When a pick re-runs the search instead of reading the stored report: only while ComfyUI's cache still holds
    the sampler's outputs does it not, and how long it holds them depends on the caching mode."""
    if getattr(cli_args, "cache_none", False):
        return "ComfyUI runs with --cache-none: every pick re-runs the whole search."
    ram_pressure = hasattr(cli_args, "cache_ram") and not (getattr(cli_args, "cache_classic", False)
                                                          or getattr(cli_args, "cache_lru", 0))
    if ram_pressure:
        return ("Picking reads the stored search while ComfyUI still caches it. Its RAM-pressure cache (the default) "
                "drops it when another workflow runs or memory runs short, and then a pick re-runs the whole search; "
                "start ComfyUI with --cache-classic to keep it while you pick.")
    return ("Picking reads the stored search while ComfyUI still caches it; after another workflow has run, a pick "
            "re-runs the whole search.")


def _chart_metadata(report_json: dict, hidden) -> PngInfo | None:
    if args.disable_metadata:
        return None
    info = PngInfo()
    info.add_text("noise_search", json.dumps(report_json))
    if hidden is not None and hidden.prompt is not None:
        info.add_text("prompt", json.dumps(hidden.prompt))
    if hidden is not None and hidden.extra_pnginfo is not None:
        for key, value in hidden.extra_pnginfo.items():
            info.add_text(key, json.dumps(value))
    return info


def picked_latent(report: SearchReport, picked: list) -> object:
    """The picked candidates' LATENT; a report of images that were never latents (Score Images) blocks whatever
    uses the latent output, with the reason, instead of handing on something that is not a latent."""
    if report.latents:
        return {"samples": torch.stack([report.latents[i][cid] for i, cid in enumerate(picked)])}
    algorithm = report.results[0].algorithm if report.results else "?"
    return ExecutionBlocker(f"Score Viewer: the report ({algorithm}) holds images, not latents, so its latent output "
                            f"is empty: use the image output (or VAE Encode it)")


class NoiseSearchScoreViewer(io.ComfyNode):
    """Chart + interactive viewer of a search; `pick` selects which final candidate goes out (-1 = the best)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NoiseSearchScoreViewer",
            display_name="Score Viewer",
            category=CATEGORY,
            description="Shows every final candidate with its scores, the best-score-vs-NFE curve and the search "
                        "lineage. Outputs the chart and the picked candidate (pick = -1: the best) from the stored "
                        "report, without sampling again. Click a candidate in the viewer to pick it.",
            is_output_node=True,
            inputs=[
                SearchReportType.Input("report", tooltip="The report output of a Noise Search sampler or of "
                                                         "Score Images."),
                io.Int.Input("pick", default=-1, min=-1, max=2**31 - 1,
                             tooltip="Candidate id to output; -1 = the best. Must be a final candidate "
                                     "(shown in the viewer's gallery)."),
            ],
            outputs=[
                io.Image.Output("chart", display_name="chart",
                                tooltip="The report chart: gallery, score curve, lineage."),
                io.Latent.Output("latent", display_name="latent",
                                 tooltip="The picked candidate's final latent, one per batch item (none for a "
                                         "Score Images report: use image)."),
                io.Image.Output("image", display_name="image",
                                tooltip="The picked candidate's decoded image, one per batch item."),
            ],
        )

    @classmethod
    def execute(cls, report: SearchReport, pick: int) -> io.NodeOutput:
        if not isinstance(report, SearchReport):
            raise TypeError(f"'report' must be the SEARCH_REPORT output of a Noise Search sampler, "
                            f"got {type(report).__name__}")
        picked = pick_ids(report, pick)
        image = image_batch(report.image(i, cid) for i, cid in enumerate(picked))
        latent = picked_latent(report, picked)
        chart = render_report(report, width=CHART_WIDTH, picked=picked)

        token = secrets.token_hex(4)
        thumbs = [
            {str(cid): _save_png(Image.fromarray(small.numpy()), f"noise_search_{token}_{i}_{cid}.png")
             for cid in final_ids(report, i) if (small := report.thumb(i, cid)) is not None}
            for i in range(len(report.results))
        ]
        data = report.to_dict()
        data.update(pick=int(pick), picked=picked, thumbnails=thumbs, pick_warning=pick_warning(args),
                    strip_frames=STRIP_FRAMES)
        arr = (chart[0].numpy() * 255.0).round().astype(np.uint8)
        saved = _save_png(Image.fromarray(arr), f"noise_search_{token}_chart.png",
                          _chart_metadata(report.to_dict(), cls.hidden))
        return io.NodeOutput(chart, latent, image, ui={"images": [saved], "noise_search": [data]})
