"""Random-weight models in ComfyUI's own classes and formats, for benchmarks/overhead.py (imported only inside a
ComfyUI process). Random weights time exactly like trained ones (dense kernels do not look at values), so each
model is built at its real size from ComfyUI's `supported_models` config, filled from a private generator, and
handed to ComfyUI's ModelPatcher / VAE / verifier loader as a loaded checkpoint would be.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models

SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}
SDXL_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
             "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "use_temporal_attention": False, "use_temporal_resblock": False}
FLUX_UNET = {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 768,
             "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19,
             "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
             "guidance_embed": True}
# SD1.5's real blocks (320 channels, CLIP-L context) at one level: detected as SD15, built in a second
TINY_SD15_UNET = SD15_UNET | {"num_res_blocks": [1], "transformer_depth": [1], "channel_mult": [1],
                              "transformer_depth_output": [1, 1]}
TINY_FLUX_UNET = FLUX_UNET | {"hidden_size": 128, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
                              "axes_dim": [16, 24, 24], "context_in_dim": 64}
# Chroma Radiance's pixel-space transformer, small: a cheap model whose "latents" are full-size images
TINY_WAN_UNET = {"image_model": "wan2.1", "model_type": "t2v", "dim": 128, "out_dim": 16, "num_heads": 1,
                 "ffn_dim": 256, "num_layers": 1, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
                 "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16}  # Wan 2.1's layout, one block
TINY_RADIANCE_UNET = {"image_model": "chroma_radiance", "in_channels": 3, "out_channels": 3, "context_in_dim": 64,
                      "hidden_size": 32, "mlp_ratio": 2.0, "num_heads": 1, "depth": 1, "depth_single_blocks": 0,
                      "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 32, "qkv_bias": True, "in_dim": 64,
                      "out_dim": 32, "hidden_dim": 32, "n_layers": 1, "nerf_hidden_size": 4, "nerf_mlp_ratio": 1,
                      "nerf_depth": 1, "nerf_max_freqs": 2, "nerf_tile_size": 0, "nerf_final_head_type": "linear",
                      "nerf_embedder_dtype": torch.float32}
# ComfyUI's VAE reads an AutoencoderKL file with this decoder (comfy/sd.py, "default SD1.x/SD2.x VAE parameters")
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
CLIP_L14 = {"text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
            "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           patch_size=14),
            "image_size": 224, "projection_dim": 768}
CLIP_B32 = {"text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
            "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           patch_size=32),
            "image_size": 224, "projection_dim": 512}
CLIP_VOCAB = 49408
CLIPS = {"vit-l-14": CLIP_L14, "vit-b-32": CLIP_B32, "tiny": None}


@dataclass(frozen=True)
class Arch:
    """A diffusion model class as a user runs it: ComfyUI config, file dtype, conditioning shapes, sampler
    defaults and its VAE."""

    config: str  # comfy.supported_models class name
    unet: dict
    file_dtype: torch.dtype  # what the released checkpoint stores: ComfyUI picks the inference dtype from it
    context: tuple  # (tokens, width) of the text conditioning
    pooled: Optional[int]  # width of pooled_output, None when the model takes none
    vae: str  # "kl4" (SD/SDXL AutoencoderKL), "kl16" (Flux's), "pixel" (pixel space), "wan21" (Wan 2.1's video VAE)
    cfg: float
    extra: dict = field(default_factory=dict)  # further conditioning entries (Flux guidance)
    frames: int = 0  # a video model's frames per clip (0: an image model)


ARCHS = {
    "sd15": Arch("SD15", SD15_UNET, torch.float16, (77, 768), None, "kl4", 8.0),
    "sdxl": Arch("SDXL", SDXL_UNET, torch.float16, (77, 2048), 1280, "kl4", 8.0),
    "flux": Arch("Flux", FLUX_UNET, torch.bfloat16, (256, 4096), 768, "kl16", 1.0, {"guidance": 3.5}),
    "tiny_sd15": Arch("SD15", TINY_SD15_UNET, torch.float16, (77, 768), None, "kl4", 8.0),
    "tiny_flux": Arch("Flux", TINY_FLUX_UNET, torch.bfloat16, (16, 64), 768, "kl16", 1.0, {"guidance": 3.5}),
    "tiny_wan": Arch("WAN21_T2V", TINY_WAN_UNET, torch.float16, (512, 4096), None, "wan21", 6.0, frames=17),
    "tiny_radiance": Arch("ChromaRadiance", TINY_RADIANCE_UNET, torch.bfloat16, (8, 64), None, "pixel", 1.0,
                          {"pooled_output": None}),  # T5-only text encoders give no pooled output
}


def _random_(tensor: torch.Tensor, name: str, gen: torch.Generator) -> None:
    """Fill in place: matrices and kernels N(0, 1/fan_in) (activations keep their scale through the depth), norm
    scales near 1, biases near 0."""
    shape = tuple(tensor.shape)
    if len(shape) >= 2:
        tensor.normal_(0.0, 1.0 / math.sqrt(math.prod(shape[1:])), generator=gen)
    elif name.endswith(("weight", "scale")):
        tensor.normal_(1.0, 0.02, generator=gen)
    else:
        tensor.normal_(0.0, 0.02, generator=gen)


def fill_random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter from a private generator (ComfyUI builds its layers uninitialised)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            _random_(p, name, gen)
    return module


def diffusion_model(arch: Arch, seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """The model as comfy.sd.load_diffusion_model_state_dict builds it (dtype from the file's dtype and the
    device, ModelPatcher on the load/offload devices), its weights random; its state dict must be detected as
    the same supported model, which is what makes it this architecture."""
    mm = comfy.model_management
    model_config = getattr(comfy.supported_models, arch.config)(dict(arch.unet))
    with torch.device("meta"):
        probe = model_config.get_model({}, "")
    parameters = sum(p.numel() for p in probe.diffusion_model.parameters())
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    dtype = mm.unet_dtype(model_params=parameters, supported_dtypes=list(model_config.supported_inference_dtypes),
                          weight_dtype=arch.file_dtype)
    model_config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device,
                                                                model_config.supported_inference_dtypes))
    model = model_config.get_model({}, "")
    fill_random(model.diffusion_model, seed)
    model = model.to(offload_device)
    detected = comfy.model_detection.model_config_from_unet(model.diffusion_model.state_dict(), "")
    if type(detected) is not type(model_config):
        raise RuntimeError(f"the random {arch.config} model is detected as {type(detected).__name__}")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def _shapes(module: torch.nn.Module, prefix: str) -> dict:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def random_state_dict(shapes: dict, seed: int) -> dict:
    """{name: shape} -> a state dict filled as fill_random fills modules."""
    gen = torch.Generator().manual_seed(seed)
    sd = {name: torch.empty(shape) for name, shape in shapes.items()}
    for name, tensor in sd.items():
        _random_(tensor, name, gen)
    return sd


def vae_state_dict(kind: str, seed: int = 0) -> dict:
    """A VAE file's state dict: SD/SDXL's AutoencoderKL (4 channels, quant convs), Flux's (16, none), or the
    pixel-space marker ComfyUI reads as PixelspaceConversionVAE."""
    if kind == "pixel":
        return {"pixel_space_vae": torch.tensor(1.0)}
    if kind == "wan21":  # ComfyUI builds it at this size whatever the file holds
        from comfy.ldm.wan.vae import WanVAE

        with torch.device("meta"):
            net = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                         temperal_downsample=[False, True, True], dropout=0.0)
        return random_state_dict(_shapes(net, ""), seed)
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    z = {"kl4": 4, "kl16": 16}[kind]
    ddconfig = VAE_DDCONFIG | {"z_channels": z}
    with torch.device("meta"):
        shapes = _shapes(Encoder(**ddconfig), "encoder.") | _shapes(Decoder(**ddconfig), "decoder.")
    if kind == "kl4":
        shapes |= {"quant_conv.weight": (2 * z, 2 * z, 1, 1), "quant_conv.bias": (2 * z,),
                   "post_quant_conv.weight": (z, z, 1, 1), "post_quant_conv.bias": (z,)}
    return random_state_dict(shapes, seed)


def vae(kind: str, seed: int = 0) -> comfy.sd.VAE:
    """ComfyUI's VAE class loaded from a random state dict (what VAELoader does with a file); every key used."""
    sd = vae_state_dict(kind, seed)
    loaded = comfy.sd.VAE(sd=sd)
    if kind != "pixel" and set(loaded.first_stage_model.state_dict()) != set(sd):
        raise RuntimeError("the random VAE state dict does not match ComfyUI's VAE keys")
    return loaded


def conditioning(arch: Arch, seed: int) -> list:
    """A CONDITIONING of the real shape, as a text encoder node outputs it (random values)."""
    gen = torch.Generator().manual_seed(seed)
    extra = dict(arch.extra)
    if arch.pooled is not None:
        extra["pooled_output"] = torch.randn((1, arch.pooled), generator=gen)
    return [[torch.randn((1, *arch.context), generator=gen), extra]]


def latent_channels(arch: Arch) -> int:
    return getattr(comfy.supported_models, arch.config).latent_format.latent_channels


def latent_downscale(arch: Arch) -> int:
    return 1 if arch.vae == "pixel" else 8


def latent_frames(arch: Arch, frames: int = 0) -> tuple:
    """A video model's latent frames as a 1-tuple (Wan: the first frame, then one latent frame per 4) for `frames`
    frames (0: the arch's own); () for images."""
    frames = frames or arch.frames
    return ((frames - 1) // 4 + 1,) if arch.frames else ()


def write_clip_tokenizer(folder: Path, vocab_size: int, image_size: int) -> None:
    """CLIP's tokenizer and image processor files: the tests' small BPE vocabulary padded with unused tokens to
    the model's vocabulary size (<|startoftext|> and <|endoftext|> last, as in CLIP's own), so the loader's
    tokenizer/embedding check sees the real size."""
    from transformers import CLIPImageProcessor, CLIPTokenizer

    from noise_search.tests.helpers.tiny_models import clip_bpe_vocab

    vocab, merges = clip_bpe_vocab()
    specials = ["<|startoftext|>", "<|endoftext|>"]
    tokens = [t for t in vocab if t not in specials]
    tokens += [f"unused{i}</w>" for i in range(vocab_size - len(tokens) - len(specials))] + specials
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer",
                                                              "model_max_length": 77}))
    CLIPTokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(str(folder))


def make_clip_folder(folder: Path, size: str, seed: int = 0) -> Path:
    """A CLIP folder as the hub repos lay it out (config.json, model.safetensors, tokenizer, preprocessor):
    `size` is vit-l-14 / vit-b-32 at real size with random weights, or the tests' tiny CLIP. Written once."""
    from noise_search.tests.helpers.tiny_models import build_module, make_hf_clip

    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    spec = CLIPS[size]
    if spec is None:
        return make_hf_clip(folder, seed)
    from transformers import CLIPConfig, CLIPModel

    text = spec["text"] | dict(vocab_size=CLIP_VOCAB, max_position_embeddings=77, bos_token_id=CLIP_VOCAB - 2,
                               eos_token_id=CLIP_VOCAB - 1, pad_token_id=CLIP_VOCAB - 1)
    config = CLIPConfig(text_config=text, vision_config=spec["vision"] | {"image_size": spec["image_size"]},
                        projection_dim=spec["projection_dim"])
    write_clip_tokenizer(folder, CLIP_VOCAB, spec["image_size"])
    build_module(lambda: CLIPModel(config), seed).save_pretrained(str(folder))
    return folder


def write_taesd_decoder(models_dir: Path, arch: Arch, seed: int = 0) -> Optional[Path]:
    """models/vae_approx/<the latent format's taesd_decoder_name>.safetensors with random weights and the keys of
    ComfyUI's TAESD Decoder, where the latent previewer looks for it; None for formats without a TAESD."""
    from safetensors.torch import save_file

    from comfy.taesd.taesd import Decoder

    latent_format = getattr(comfy.supported_models, arch.config).latent_format()
    if latent_format.taesd_decoder_name is None:
        return None
    path = Path(models_dir) / "vae_approx" / f"{latent_format.taesd_decoder_name}.safetensors"
    if path.is_file():
        return path
    with torch.device("meta"):
        shapes = _shapes(Decoder(latent_format.latent_channels), "")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(random_state_dict(shapes, seed), str(path))
    return path
