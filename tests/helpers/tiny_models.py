"""Tiny random-weight models saved in the real on-disk formats, for tests of the verifiers and their loading.

Stable helpers (import as `from noise_search.tests.helpers.tiny_models import ...`):
  clip_bpe_vocab()                          -> (vocab dict, merges list): a small valid CLIP byte-level BPE vocab
  make_hf_clip(folder, seed=0, ...)         -> folder: CLIPModel + tokenizer + image processor via save_pretrained
  make_hf_processor(folder, ...)            -> folder: tokenizer + image processor only (PickScore's processor)
  clip_tokenizer()                          -> a CLIPTokenizer over clip_bpe_vocab()
  save_as_processor(folder, image_processor, tokenizer=None) -> folder: processor_config.json as transformers 5 writes
  make_hf_dinov2(folder, seed=0, labels=None, ...) -> folder: Dinov2Model (or ...ForImageClassification) + processor
  make_hf_siglip(folder, seed=0, ...)       -> folder: SiglipModel + SiglipImageProcessor (or SiglipProcessor)
  register_tiny_open_clip(name=TINY_OPEN_CLIP, config=None) -> name: a tiny open_clip architecture, registered once
  make_open_clip_checkpoint(path, seed=0, ...) -> path: an open_clip state dict (.pt/.bin/.safetensors)
  make_open_clip_folder(folder, seed=0)     -> folder: open_clip_config.json + open_clip_model.safetensors
  make_aesthetic_mlp(path, input_dim, seed=0)  -> path: the LAION aesthetic MLP state dict (layers.0 ... layers.7)
  make_hf_cache_repo(cache_dir, repo_id, files) -> snapshot folder laid out like the Hugging Face hub cache
  random_images(n, height, width, seed=0)   -> [n, H, W, 3] floats in 0..1 (ComfyUI IMAGE)
Weights come from a private torch.Generator; the global RNG state is saved and restored around module creation.
"""

from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

import torch

TINY_OPEN_CLIP = "NoiseSearch-Tiny-ViT"
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
_CONFIG_DIR: Optional[Path] = None


def _bytes_to_unicode() -> dict:
    """GPT-2 / CLIP byte-to-printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_bpe_vocab(merges: tuple = (("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("t", "h"))) -> tuple:
    """Every byte alone and word-final ("</w>"), a few merges, then <|startoftext|> and <|endoftext|> (last id)."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, [" ".join(m) for m in merges]


def _fill(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter from a private generator (logit_scale keeps its ln(1/0.07) init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "logit_scale" in name or "logit_bias" in name:
                continue
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.ndim >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return module


def build_module(factory, seed: int) -> torch.nn.Module:
    """`factory()` with every weight drawn from a private generator; fork_rng undoes construction's global draws."""
    with torch.random.fork_rng(devices=[]):
        module = factory()
    return _fill(module, seed)


def clip_tokenizer():
    """A CLIPTokenizer over `clip_bpe_vocab()` (built in a temporary folder, as from_pretrained needs files)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        tokenizer_config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77}
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        return CLIPTokenizer.from_pretrained(str(folder))


def save_as_processor(folder: Union[str, Path], image_processor, tokenizer=None) -> Path:
    """Save through a processor's save_pretrained, as transformers 5 writes it: processor_config.json with the image
    processor nested (CLIPProcessor with a tokenizer, else a processor holding the image processor alone)."""
    from transformers import CLIPProcessor, ProcessorMixin

    class ImageOnlyProcessor(ProcessorMixin):
        attributes = ["image_processor"]
        image_processor_class = "AutoImageProcessor"

        def __init__(self, image_processor):
            super().__init__(image_processor)

    processor = ImageOnlyProcessor(image_processor) if tokenizer is None else CLIPProcessor(image_processor, tokenizer)
    processor.save_pretrained(str(folder))
    return Path(folder)


def make_hf_processor(folder: Union[str, Path], image_size: int = 32, shortest_edge: Optional[int] = None,
                      as_processor: bool = False) -> Path:
    """Save a CLIP tokenizer and CLIPImageProcessor to `folder`: as the hub repos lay them out (vocab.json,
    merges.txt, tokenizer.json ..., preprocessor_config.json), or `as_processor` (`save_as_processor`)."""
    from transformers import CLIPImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": shortest_edge or image_size},
                                         crop_size={"height": image_size, "width": image_size})
    if as_processor:
        return save_as_processor(folder, image_processor, clip_tokenizer())
    vocab, merges = clip_bpe_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    clip_tokenizer().save_pretrained(str(folder))
    image_processor.save_pretrained(str(folder))
    return folder


def hf_clip_config(image_size: int = 32, projection_dim: int = 16):
    from transformers import CLIPConfig

    vocab, _ = clip_bpe_vocab()
    eos = vocab["<|endoftext|>"]
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def make_hf_clip(folder: Union[str, Path], seed: int = 0, image_size: int = 32, projection_dim: int = 16,
                 with_processor: bool = True, as_processor: bool = False) -> Path:
    """A tiny CLIPModel saved with save_pretrained (config.json + model.safetensors), plus tokenizer and processor
    (`make_hf_processor`)."""
    from transformers import CLIPModel

    folder = Path(folder)
    model = build_module(lambda: CLIPModel(hf_clip_config(image_size, projection_dim)), seed)
    model.save_pretrained(str(folder))
    if with_processor:
        make_hf_processor(folder, image_size, as_processor=as_processor)
    return folder


TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_hf_dinov2(folder: Union[str, Path], seed: int = 0, labels: Optional[dict] = None, image_size: int = 56,
                   shortest_edge: int = 64, image_mean: list = IMAGENET_MEAN, as_processor: bool = False) -> Path:
    """A tiny Dinov2Model, or Dinov2ForImageClassification with `labels` ({index: text}), and its BitImageProcessor
    (preprocessor_config.json as the hub repos ship it, or `as_processor`)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2ForImageClassification, Dinov2Model

    extra = {}
    if labels is not None:
        extra = dict(num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()},
                     architectures=["Dinov2ForImageClassification"])
    cfg = Dinov2Config(**TINY_VIT, patch_size=14, image_size=image_size, **extra)
    model_class = Dinov2Model if labels is None else Dinov2ForImageClassification
    build_module(lambda: model_class(cfg), seed).save_pretrained(folder)
    image_processor = BitImageProcessor(size={"shortest_edge": shortest_edge},
                                        crop_size={"height": image_size, "width": image_size},
                                        image_mean=image_mean, image_std=IMAGENET_STD)
    if as_processor:
        return save_as_processor(folder, image_processor)
    image_processor.save_pretrained(folder)
    return Path(folder)


def make_hf_siglip(folder: Union[str, Path], seed: int = 0, image_size: int = 48, image_mean: list = (0.5, 0.5, 0.5),
                   as_processor: bool = False) -> Path:
    """A tiny SiglipModel and its SiglipImageProcessor (preprocessor_config.json, or `as_processor`: a SiglipProcessor
    with the tiny CLIP tokenizer, whose save_pretrained writes processor_config.json under transformers 5)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    vision = dict(**TINY_VIT, image_size=image_size, patch_size=16)
    text = dict(**TINY_VIT, vocab_size=64, max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    build_module(lambda: SiglipModel(SiglipConfig(vision_config=vision, text_config=text)),
                 seed).save_pretrained(folder)
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size},
                                           image_mean=list(image_mean))
    if as_processor:
        SiglipProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(str(folder))
    else:
        image_processor.save_pretrained(folder)
    return Path(folder)


def register_tiny_open_clip(name: str = TINY_OPEN_CLIP, config: Optional[dict] = None) -> str:
    """Register a tiny open_clip architecture (default TINY_OPEN_CLIP_CONFIG) with open_clip.add_model_config,
    once per process and name, and return its name."""
    global _CONFIG_DIR
    import open_clip

    if name in open_clip.list_models():
        return name
    if _CONFIG_DIR is None:
        _CONFIG_DIR = Path(tempfile.mkdtemp(prefix="noise_search_open_clip_"))
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)  # at exit: open_clip rescans this folder until then
    (_CONFIG_DIR / f"{name}.json").write_text(json.dumps(config or TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(_CONFIG_DIR)
    return name


def make_open_clip_model(seed: int = 0, arch: Optional[str] = None) -> torch.nn.Module:
    import open_clip

    arch = arch or register_tiny_open_clip()
    return build_module(lambda: open_clip.create_model(arch), seed).eval()


def make_open_clip_checkpoint(path: Union[str, Path], seed: int = 0, wrap_state_dict: bool = False,
                              dtype: torch.dtype = torch.float32, arch: Optional[str] = None) -> Path:
    """Save a tiny open_clip model's weights; `.safetensors` by suffix, else torch.save, optionally as
    {"state_dict": ...} in fp16 like HPSv2's `HPS_v2*_compressed.pt`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(dtype).contiguous() for k, v in make_open_clip_model(seed, arch).state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state} if wrap_state_dict else state, str(path))
    return path


def make_open_clip_folder(folder: Union[str, Path], seed: int = 0) -> Path:
    """An open_clip folder as open_clip's push_to_hub writes it: open_clip_config.json + open_clip_model.safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_OPEN_CLIP_CONFIG, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    make_open_clip_checkpoint(folder / "open_clip_model.safetensors", seed)
    return folder


def make_aesthetic_mlp(path: Union[str, Path], input_dim: int = 16, seed: int = 0) -> Path:
    """The improved-aesthetic-predictor MLP layout: Linear(d,1024), Dropout, Linear(1024,128), Dropout,
    Linear(128,64), Dropout, Linear(64,16), Linear(16,1); saved with torch.save as the .pth is."""
    g = torch.Generator().manual_seed(seed)
    dims = [(input_dim, 1024, 0), (1024, 128, 2), (128, 64, 4), (64, 16, 6), (16, 1, 7)]
    state = {}
    for d_in, d_out, idx in dims:
        state[f"layers.{idx}.weight"] = torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in)
        state[f"layers.{idx}.bias"] = 0.1 * torch.randn(d_out, generator=g)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(path))
    return path


def make_hf_cache_repo(cache_dir: Union[str, Path], repo_id: str, files: dict,
                       commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Lay out `files` ({name in repo: source path}) as the hub cache does: models--org--name/refs/main and
    snapshots/<commit>/<name>; returns the snapshot folder."""
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    for name, source in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return snapshot


def random_images(n: int, height: int = 48, width: int = 40, seed: int = 0) -> torch.Tensor:
    """Smooth random images `[n, H, W, 3]` in 0..1 (low-frequency noise upsampled, so resizing matters little)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(height // 8, 2), max(width // 8, 2), generator=g)
    images = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return images.permute(0, 2, 3, 1).contiguous()
