"""Noise Search: inference-time search over diffusion noise for ComfyUI (Ma et al., 2025, arXiv 2501.09732)."""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """ComfyUI V3 entry point; imported lazily so the pack imports without ComfyUI present."""
    from .nodes import NoiseSearchExtension

    return NoiseSearchExtension()
