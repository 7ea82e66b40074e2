"""Tiny random-weight video models in ComfyUI's real formats, built inside a ComfyUI process from ComfyUI's own
modules (so keys and shapes are the ones its loaders expect) with weights from a seeded generator of our own.

- Wan 2.1: text-to-video and image-to-video diffusion models (dim 128, one block) that UNETLoader detects as
  WAN21_T2V and WAN21_I2V (with the CLIP-vision projection), and the Wan 2.1 VAE at its real size (ComfyUI builds
  it with dim 96 whatever the file holds), in fp16.
- Wan 2.2 A14B: its two experts (high-noise and low-noise), each a Wan 2.1-layout model as above with weights of
  its own, as the real ones are: text-to-video, and image-to-video (36 input channels, no CLIP-vision projection,
  which UNETLoader detects as WAN21_T2V, as it does the real Wan 2.2 I2V experts).
- HunyuanVideo: a diffusion model (hidden 128, one double and one single block, CLIP-L pooled input) that
  UNETLoader detects as HunyuanVideo; its latents have the Wan VAE's layout (16 channels, 4x frames, 8x pixels),
  which decodes them in the tests.

The text encoders (umT5-XXL, 5.7 B parameters; LLaVA-Llama-3) are not built: both models cross-attend 4096-wide
text states, which the tiny SD3's CLIP-L already gives (SD3 pads to T5's width), and in-process tests pass
conditioning tensors directly.
"""

from __future__ import annotations

from pathlib import Path

from .comfy_script import run_script

MODEL = "tiny_wan21_t2v.safetensors"
MODEL_I2V = "tiny_wan21_i2v.safetensors"  # image-to-video: 36 input channels (noise, mask, start-image latent)
MODEL_HIGH = "tiny_wan22_t2v_high_noise.safetensors"  # Wan 2.2 A14B's experts: the Wan 2.1 layout, two models
MODEL_LOW = "tiny_wan22_t2v_low_noise.safetensors"
MODEL_I2V_HIGH = "tiny_wan22_i2v_high_noise.safetensors"
MODEL_I2V_LOW = "tiny_wan22_i2v_low_noise.safetensors"
VAE = "tiny_wan21_vae.safetensors"
HUNYUAN = "tiny_hunyuan_video.safetensors"
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
save_file(randomized(model, 25, torch.float32), __DIR__ + "/__MODEL_HIGH__")
save_file(randomized(model, 26, torch.float32), __DIR__ + "/__MODEL_LOW__")
i2v = comfy.ldm.wan.model.WanModel(model_type="i2v", in_dim=36, dim=128, ffn_dim=256, num_heads=1, num_layers=1,
                                   text_dim=__TEXT_DIM__, operations=comfy.ops.disable_weight_init)
save_file(randomized(i2v, 23, torch.float32), __DIR__ + "/__MODEL_I2V__")
i2v22 = comfy.ldm.wan.model.WanModel(model_type="t2v", in_dim=36, dim=128, ffn_dim=256, num_heads=1, num_layers=1,
                                     text_dim=__TEXT_DIM__, operations=comfy.ops.disable_weight_init)
save_file(randomized(i2v22, 27, torch.float32), __DIR__ + "/__MODEL_I2V_HIGH__")
save_file(randomized(i2v22, 28, torch.float32), __DIR__ + "/__MODEL_I2V_LOW__")
import comfy.ldm.hunyuan_video.model
hunyuan = comfy.ldm.hunyuan_video.model.HunyuanVideo(
    image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=__TEXT_DIM__,
    hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=256,
    patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False,
    operations=comfy.ops.disable_weight_init)
save_file(randomized(hunyuan, 24, torch.float32), __DIR__ + "/__HUNYUAN__")
vae = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                               temperal_downsample=[False, True, True], dropout=0.0)
save_file(randomized(vae, 22, torch.float16), __DIR__ + "/__VAE__")
print("RESULT " + json.dumps({"model": sum(v.numel() for v in model.state_dict().values())}))
'''


def build_tiny_wan(directory: Path) -> Path:
    """Write every model of this module into `directory` (made if missing); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    names = {"__DIR__": repr(str(directory)), "__MODEL__": MODEL, "__MODEL_I2V__": MODEL_I2V,
             "__MODEL_HIGH__": MODEL_HIGH, "__MODEL_LOW__": MODEL_LOW, "__MODEL_I2V_HIGH__": MODEL_I2V_HIGH,
             "__MODEL_I2V_LOW__": MODEL_I2V_LOW, "__VAE__": VAE, "__HUNYUAN__": HUNYUAN, "__TEXT_DIM__": str(TEXT_DIM)}
    script = BUILD
    for placeholder, value in names.items():
        script = script.replace(placeholder, value)
    run_script(script, timeout=600)
    return directory
