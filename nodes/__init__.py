"""The pack's ComfyUI nodes (V3 schema): two search samplers, verifier loading and ensembling, the Score Viewer,
Score Images, and Noise Search Workers."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

folder_paths.add_model_folder_path("verifiers", os.path.join(folder_paths.models_dir, "verifiers"))

from .samplers import NoiseSearchSampler, NoiseSearchSamplerCustom  # noqa: E402
from .score_images import NoiseSearchScoreImages  # noqa: E402
from .verifier_nodes import NoiseSearchVerifierEnsemble, NoiseSearchVerifierLoader, verifier_dirs  # noqa: E402
from .viewer import NoiseSearchScoreViewer  # noqa: E402
from .workers.node import NoiseSearchWorkers  # noqa: E402

verifier_dirs()

NODES = [NoiseSearchSampler, NoiseSearchSamplerCustom, NoiseSearchVerifierLoader, NoiseSearchVerifierEnsemble,
         NoiseSearchScoreViewer, NoiseSearchScoreImages, NoiseSearchWorkers]


class NoiseSearchExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
