"""The pack's ComfyUI nodes (V3 schema): two search samplers, verifier loading and ensembling, the Score Viewer,
Score Images."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

folder_paths.add_model_folder_path("verifiers", os.path.join(folder_paths.models_dir, "verifiers"))

from .samplers import NoiseSearchSampler, NoiseSearchSamplerCustom  # noqa: E402
from .score_images import NoiseSearchScoreImages  # noqa: E402
from .verifier_nodes import NoiseSearchVerifierEnsemble, NoiseSearchVerifierLoader, verifier_dirs  # noqa: E402
from .viewer import NoiseSearchScoreViewer  # noqa: E402

verifier_dirs()

NODES = [NoiseSearchSampler, NoiseSearchSamplerCustom, NoiseSearchVerifierLoader, NoiseSearchVerifierEnsemble,
         NoiseSearchScoreViewer, NoiseSearchScoreImages]


class NoiseSearchExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
