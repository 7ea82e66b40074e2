"""A tiny random-weight Wan 2.1 in ComfyUI's real formats: the text-to-video and image-to-video diffusion models (dim
128, one block) as `diffusion_models` files that UNETLoader detects as WAN21_T2V and WAN21_I2V (with the CLIP-vision
projection), and the Wan 2.1 VAE at its real size (its
layout is fixed: ComfyUI builds it with dim 96 whatever the file holds), saved in fp16.

Built inside a ComfyUI process from ComfyUI's own Wan modules, so the keys and shapes are the ones its loaders
expect; weights come from a seeded generator of our own. The text encoder (umT5-XXL, 5.7 B parameters) is not
built: Wan's cross-attention takes 4096-wide text states, which the tiny SD3's CLIP-L already gives (SD3 pads to
T5's width), and in-process tests pass conditioning tensors directly.
"""

from __future__ import annotations

from pathlib import Path

from .comfy_script import run_script

MODEL = "tiny_wan21_t2v.safetensors"
MODEL_I2V = "tiny_wan21_i2v.safetensors"  # image-to-video: 36 input channels (noise, mask, start-image latent)
VAE = "tiny_wan21_vae.safetensors"
TEXT_DIM = 4096

BUILD = r'''
import json, sys
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import torch
from safetensors.torch import save_file
import comfy.ldm.wan.model, comfy.ldm.wan.vae, comfy.ops

def randomized(module, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        fan_in = value[0].numel() if value.ndim > 1 else 1
        w = torch.randn(value.shape, generator=g) / max(1.0, fan_in) ** 0.5
        if value.ndim == 1 and ("norm" in key or key.endswith("gamma")):
            w = 1.0 + 0.1 * w  # norms near identity
        out[key] = w.to(dtype).contiguous()
    return out

model = comfy.ldm.wan.model.WanModel(model_type="t2v", dim=128, ffn_dim=256, num_heads=1, num_layers=1,
                                     text_dim=__TEXT_DIM__, operations=comfy.ops.disable_weight_init)
save_file(randomized(model, 21, torch.float32), __DIR__ + "/__MODEL__")
i2v = comfy.ldm.wan.model.WanModel(model_type="i2v", in_dim=36, dim=128, ffn_dim=256, num_heads=1, num_layers=1,
                                   text_dim=__TEXT_DIM__, operations=comfy.ops.disable_weight_init)
save_file(randomized(i2v, 23, torch.float32), __DIR__ + "/__MODEL_I2V__")
vae = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                               temperal_downsample=[False, True, True], dropout=0.0)
save_file(randomized(vae, 22, torch.float16), __DIR__ + "/__VAE__")
print("RESULT " + json.dumps({"model": sum(v.numel() for v in model.state_dict().values())}))
'''


def build_tiny_wan(directory: Path) -> Path:
    """Write MODEL and VAE into `directory` (made if missing); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    script = (BUILD.replace("__DIR__", repr(str(directory))).replace("__MODEL_I2V__", MODEL_I2V)
              .replace("__MODEL__", MODEL).replace("__VAE__", VAE).replace("__TEXT_DIM__", str(TEXT_DIM)))
    run_script(script, timeout=600)
    return directory
