"""A tiny random-weight SD3 checkpoint in the real single-file layout ComfyUI's CheckpointLoaderSimple detects.

MMDiT depth 2 (hidden 128, 2 heads of 64) under `model.diffusion_model.`, a 16-channel TAESD under
`first_stage_model.`, a full-shape CLIP-L (fp16) under `text_encoders.clip_l.`. Pure torch: no ComfyUI import;
tests/test_e2e_tiny_sd3.py loads the file through ComfyUI and compares keys and shapes with ComfyUI's modules.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file

DEPTH = 2
HIDDEN = 64 * DEPTH  # ComfyUI's MMDiT derives hidden size and head count from depth
PATCH = 2
LATENT_CHANNELS = 16
POS_EMBED_MAX = 32  # patches per side: images up to 512 px
CONTEXT_DIM = 4096  # SD3 pads CLIP-L hidden states to T5's width
POOLED_DIM = 768 + 1280  # CLIP-L + CLIP-G pooled (G is zeros here)
CLIP_LAYERS, CLIP_WIDTH, CLIP_MLP, CLIP_VOCAB, CLIP_TOKENS = 12, 768, 3072, 49408, 77
FILENAME = "tiny_sd3.safetensors"

Spec = Iterator[tuple[str, tuple[int, ...]]]


def _linear(name: str, n_in: int, n_out: int, bias: bool = True) -> Spec:
    yield f"{name}.weight", (n_out, n_in)
    if bias:
        yield f"{name}.bias", (n_out,)


def mmdit_spec() -> Spec:
    """Keys/shapes of comfy.ldm.modules.diffusionmodules.mmdit.MMDiT for this config (pos_embed excluded)."""
    yield "x_embedder.proj.weight", (HIDDEN, LATENT_CHANNELS, PATCH, PATCH)
    yield "x_embedder.proj.bias", (HIDDEN,)
    yield from _linear("t_embedder.mlp.0", 256, HIDDEN)
    yield from _linear("t_embedder.mlp.2", HIDDEN, HIDDEN)
    yield from _linear("y_embedder.mlp.0", POOLED_DIM, HIDDEN)
    yield from _linear("y_embedder.mlp.2", HIDDEN, HIDDEN)
    yield from _linear("context_embedder", CONTEXT_DIM, HIDDEN)
    for i in range(DEPTH):
        last = i == DEPTH - 1
        for side in ("context_block", "x_block"):
            p = f"joint_blocks.{i}.{side}"
            yield from _linear(f"{p}.attn.qkv", HIDDEN, 3 * HIDDEN)
            pre_only = last and side == "context_block"  # the last context block only feeds attention
            if not pre_only:
                yield from _linear(f"{p}.attn.proj", HIDDEN, HIDDEN)
                yield from _linear(f"{p}.mlp.fc1", HIDDEN, 4 * HIDDEN)
                yield from _linear(f"{p}.mlp.fc2", 4 * HIDDEN, HIDDEN)
            yield from _linear(f"{p}.adaLN_modulation.1", HIDDEN, (2 if pre_only else 6) * HIDDEN)
    yield from _linear("final_layer.linear", HIDDEN, PATCH * PATCH * LATENT_CHANNELS)
    yield from _linear("final_layer.adaLN_modulation.1", HIDDEN, 2 * HIDDEN)


def _conv(name: str, n_in: int, n_out: int, bias: bool = True) -> Spec:
    yield f"{name}.weight", (n_out, n_in, 3, 3)
    if bias:
        yield f"{name}.bias", (n_out,)


def _block(name: str) -> Spec:
    for j in (0, 2, 4):
        yield from _conv(f"{name}.conv.{j}", 64, 64)


def taesd_spec(latent_channels: int = LATENT_CHANNELS) -> Spec:
    """Keys/shapes of comfy.taesd.taesd.TAESD(latent_channels), Sequential indices included."""
    enc = ["conv_in", "block", "down", "block", "block", "block", "down", "block", "block", "block",
           "down", "block", "block", "block", "conv_out"]
    for i, kind in enumerate(enc):
        name = f"taesd_encoder.{i}"
        if kind == "block":
            yield from _block(name)
        elif kind == "down":
            yield from _conv(name, 64, 64, bias=False)
        else:
            yield from _conv(name, 3, 64) if kind == "conv_in" else _conv(name, 64, latent_channels)
    dec = ["clamp", "conv_in", "relu", "block", "block", "block", "up", "conv", "block", "block", "block", "up",
           "conv", "block", "block", "block", "up", "conv", "block", "conv_out"]
    for i, kind in enumerate(dec):
        name = f"taesd_decoder.{i}"
        if kind == "block":
            yield from _block(name)
        elif kind == "conv":
            yield from _conv(name, 64, 64, bias=False)
        elif kind == "conv_in":
            yield from _conv(name, latent_channels, 64)
        elif kind == "conv_out":
            yield from _conv(name, 64, 3)


def clip_l_spec() -> Spec:
    """Keys/shapes of ComfyUI's CLIP-L text model (comfy.clip_model.CLIPTextModel with sd1_clip_config.json)."""
    t = "transformer.text_model"
    yield f"{t}.embeddings.token_embedding.weight", (CLIP_VOCAB, CLIP_WIDTH)
    yield f"{t}.embeddings.position_embedding.weight", (CLIP_TOKENS, CLIP_WIDTH)
    for i in range(CLIP_LAYERS):
        p = f"{t}.encoder.layers.{i}"
        yield f"{p}.layer_norm1.weight", (CLIP_WIDTH,)
        yield f"{p}.layer_norm1.bias", (CLIP_WIDTH,)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield from _linear(f"{p}.self_attn.{proj}", CLIP_WIDTH, CLIP_WIDTH)
        yield f"{p}.layer_norm2.weight", (CLIP_WIDTH,)
        yield f"{p}.layer_norm2.bias", (CLIP_WIDTH,)
        yield from _linear(f"{p}.mlp.fc1", CLIP_WIDTH, CLIP_MLP)
        yield from _linear(f"{p}.mlp.fc2", CLIP_MLP, CLIP_WIDTH)
    yield f"{t}.final_layer_norm.weight", (CLIP_WIDTH,)
    yield f"{t}.final_layer_norm.bias", (CLIP_WIDTH,)
    yield "transformer.text_projection.weight", (CLIP_WIDTH, CLIP_WIDTH)


def sincos_pos_embed(dim: int, size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position table `[1, size*size, dim]`, as SD3 ships it (MAE/DiT layout)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    grid = torch.arange(size, dtype=torch.float64)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")

    def emb(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([emb(gx), emb(gy)], dim=1).float().unsqueeze(0)


def _init(shape: tuple[int, ...], gen: torch.Generator, std: float) -> torch.Tensor:
    return torch.randn(shape, generator=gen) * std


def _he(shape: tuple[int, ...], gen: torch.Generator, gain: float) -> torch.Tensor:
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return _init(shape, gen, gain / math.sqrt(fan_in))


def tiny_sd3_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The full checkpoint state dict; deterministic in `seed` (owns its generator)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {"model.diffusion_model.pos_embed": sincos_pos_embed(HIDDEN, POS_EMBED_MAX)}
    for key, shape in mmdit_spec():
        sd[f"model.diffusion_model.{key}"] = _he(shape, gen, 0.5) if key.endswith("weight") else _init(shape, gen, 0.01)
    for key, shape in taesd_spec():
        sd[f"first_stage_model.{key}"] = _he(shape, gen, 1.0) if key.endswith("weight") else _init(shape, gen, 0.05)
    sd["first_stage_model.taesd_decoder.19.bias"] = torch.full((3,), 0.5)  # decoded pixels centred in 0..1
    sd["first_stage_model.vae_scale"] = torch.tensor(1.5305)  # taesd3's latent scale/shift
    sd["first_stage_model.vae_shift"] = torch.tensor(0.0609)
    for key, shape in clip_l_spec():
        if "layer_norm" in key:
            value = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
        else:
            value = _init(shape, gen, 0.02)
        sd[f"text_encoders.clip_l.{key}"] = value.half()
    sd["text_encoders.clip_l.logit_scale"] = torch.tensor(math.log(100.0)).half()
    return sd


def tiny_taesd_state_dict(latent_channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A standalone TAESD VAE file's state dict (what ComfyUI's VAE Loader reads), e.g. 4 channels for SD1.5."""
    gen = torch.Generator().manual_seed(seed)
    return {k: _he(shape, gen, 1.0) if k.endswith("weight") else _init(shape, gen, 0.05)
            for k, shape in taesd_spec(latent_channels)}


def build_tiny_sd3(directory: Path, seed: int = 0, filename: str = FILENAME) -> Path:
    """Write the checkpoint to `directory/filename` (atomically) and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    tmp = path.with_suffix(".part")
    save_file({k: v.contiguous() for k, v in tiny_sd3_state_dict(seed).items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return path
