"""ImageReward (Xu et al. 2023, arXiv 2304.05977): a BLIP reward model of human text-to-image preference.

The prompt's BERT encoder cross-attends to the BLIP ViT's image tokens and an MLP maps its [CLS] state to a reward,
normalised by the mean and std the authors publish. Built on transformers' `BlipVisionModel` and `BlipTextModel`
from THUDM/ImageReward's ImageReward.pt (timm ViT and BLIP med.py BERT key layout) and med_config.json, without
the image-reward package. The tokenizer is bert-base-uncased plus BLIP's [DEC] and [ENC] special tokens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch

from .aesthetic import AestheticMLP
from .base import Verifier, VerifierError
from .clip import take_options
from .files import check_json_files, damaged, read_json, read_weights
from .loading import model_source, resolve
from .preprocess import OPENAI_MEAN, OPENAI_STD, ImagePreprocess

VERIFIER = "image_reward"
DEFAULT_MODEL = "THUDM/ImageReward"
DEFAULT_TOKENIZER = "bert-base-uncased"
SOURCE = "https://huggingface.co/THUDM/ImageReward"
TOKENIZER_SOURCE = "https://huggingface.co/google-bert/bert-base-uncased"
CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
EXPECT = (f"the ImageReward folder ({CHECKPOINT} and {MED_CONFIG}, from THUDM/ImageReward), or the {CHECKPOINT} "
          f"file with {MED_CONFIG} beside it")
TOKENIZER_EXPECT = "the bert-base-uncased tokenizer folder (vocab.txt or tokenizer.json)"

REWARD_MEAN = 0.16717362830052426  # reward = (mlp(feature) - mean) / std, as the reference code reports it
REWARD_STD = 1.0333394966054072
MAX_TOKENS = 35  # prompts are padded and truncated to 35 tokens, [CLS] and [SEP] included
BLIP_TOKENS = ("[DEC]", "[ENC]")  # BLIP's tokenizer adds them as bos and additional special token, in this order
VIT_HEAD_WIDTH = 64  # BLIP builds ViT-B/16 (12 heads) or ViT-L/16 (16 heads): 64-wide heads both
VIT_LAYER_NORM_EPS = 1e-6  # BLIP's timm ViT; the BERT side reads layer_norm_eps from med_config.json

VISION = "blip.visual_encoder."
TEXT = "blip.text_encoder."
IGNORED = ("blip.vision_proj.weight", "blip.vision_proj.bias",  # BLIP's contrastive projections: unused by the reward
           "blip.text_proj.weight", "blip.text_proj.bias",
           "blip.text_encoder.embeddings.position_ids")  # 0..n-1, a buffer transformers rebuilds
_VIT_BLOCK = (("norm1", "layer_norm1"), ("attn.qkv", "self_attn.qkv"), ("attn.proj", "self_attn.projection"),
              ("norm2", "layer_norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))
_BERT_LAYER = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
               "attention.output.LayerNorm", "crossattention.self.query", "crossattention.self.key",
               "crossattention.self.value", "crossattention.output.dense", "crossattention.output.LayerNorm",
               "intermediate.dense", "output.dense", "output.LayerNorm")
_MLP_LINEARS = (0, 2, 4, 6, 7)  # the MLP has no activations: Linear / Dropout pairs, then two Linears
_MED_KEYS = {"vocab_size": int, "hidden_size": int, "num_hidden_layers": int, "num_attention_heads": int,
             "intermediate_size": int, "max_position_embeddings": int, "layer_norm_eps": (int, float),
             "hidden_act": str}


def key_map(vision_layers: int, text_layers: int) -> dict[str, str]:
    """Every ImageReward.pt tensor the reward uses -> its name in `ImageRewardModel` (the ViT's qkv stays fused)."""
    names = {f"{VISION}cls_token": "vision.embeddings.class_embedding",
             f"{VISION}pos_embed": "vision.embeddings.position_embedding",
             f"{TEXT}embeddings.word_embeddings.weight": "text.embeddings.word_embeddings.weight",
             f"{TEXT}embeddings.position_embeddings.weight": "text.embeddings.position_embeddings.weight"}
    modules = [(f"{VISION}patch_embed.proj", "vision.embeddings.patch_embedding"),
               (f"{VISION}norm", "vision.post_layernorm"), (f"{TEXT}embeddings.LayerNorm", "text.embeddings.LayerNorm")]
    modules += [(f"{VISION}blocks.{i}.{a}", f"vision.encoder.layers.{i}.{b}")
                for i in range(vision_layers) for a, b in _VIT_BLOCK]
    modules += [(f"{TEXT}encoder.layer.{i}.{m}", f"text.encoder.layer.{i}.{m}")
                for i in range(text_layers) for m in _BERT_LAYER]
    modules += [(f"mlp.layers.{i}", f"mlp.layers.{i}") for i in _MLP_LINEARS]
    names.update({f"{a}.{p}": f"{b}.{p}" for a, b in modules for p in ("weight", "bias")})
    return names


class ImageRewardModel(torch.nn.Module):
    """BLIP's image encoder, its image-grounded text encoder and the reward MLP: every weight, for the host to move."""

    def __init__(self, vision: torch.nn.Module, text: torch.nn.Module, mlp: AestheticMLP) -> None:
        super().__init__()
        self.vision = vision
        self.text = text
        self.mlp = mlp

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw rewards `[B]`: the MLP on the text's [CLS] state, which attends to every image token."""
        image = self.vision(pixel_values=pixels).last_hidden_state
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image)
        feature = text.last_hidden_state[:, 0]
        return self.mlp(feature.to(next(self.mlp.parameters()).dtype)).squeeze(-1)


def tokenize(tokenizer: Any, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`[1, 35]` input ids and attention mask as ImageReward scores a prompt: [CLS] stays first (BLIP's retrieval head
    swaps in [ENC], ImageReward does not), padded to and truncated at 35 tokens."""
    out = tokenizer(prompt, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    return out["input_ids"], out["attention_mask"]


class ImageRewardVerifier(Verifier):
    """ImageReward of each image for the prompt: (MLP(text [CLS] | image) - mean) / std, about -2..2."""

    name = VERIFIER
    needs = frozenset({"prompt"})

    def __init__(self, model: ImageRewardModel, tokenizer: Any, preprocess: ImagePreprocess,
                 batch_size: int = 16) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.batch_size = batch_size

    def _score(self, images: torch.Tensor, prompt: Optional[str], references: Optional[torch.Tensor]) -> torch.Tensor:
        ids, mask = tokenize(self.tokenizer, prompt)
        n = images.shape[0]
        pixels = self.preprocess(images, self.device, self.dtype)
        raw = self.model(pixels, ids.to(self.device).expand(n, -1), mask.to(self.device).expand(n, -1))
        return (raw.float() - REWARD_MEAN) / REWARD_STD


def image_preprocess(size: int) -> ImagePreprocess:
    """The reference transform: bicubic resize of the short side to `size`, centre crop (torchvision rounds the
    offset), CLIP's mean and std."""
    return ImagePreprocess(size=(size, size), mean=OPENAI_MEAN, std=OPENAI_STD, shortest_edge=size,
                           interpolation="bicubic", crop_offset="round")


def model_files(path: Path, source: str) -> tuple[Path, Path]:
    """(checkpoint, med_config.json) of a model folder, or of a checkpoint file and the folder it sits in."""
    checkpoint = path / CHECKPOINT if path.is_dir() else path
    if not checkpoint.is_file():
        raise VerifierError(f"verifier '{VERIFIER}': the folder {path} has no {CHECKPOINT}; expected {EXPECT}. "
                            f"Get it from {source}")
    config = checkpoint.parent / MED_CONFIG
    if not config.is_file():
        raise VerifierError(f"verifier '{VERIFIER}': {MED_CONFIG} (BLIP's BERT config) must sit beside {checkpoint}, "
                            f"but {config} does not exist. Get it from {source}")
    return checkpoint, config


def read_med_config(path: Path, source: str) -> dict:
    """med_config.json: the text encoder's sizes; it must describe BERT with cross-attention and absolute positions."""
    cfg = read_json(path, VERIFIER, source)
    if not isinstance(cfg, dict):
        raise damaged(VERIFIER, path, f"holds a JSON {type(cfg).__name__} where BLIP's BERT config object belongs",
                      source)
    for key, kind in _MED_KEYS.items():
        if not isinstance(cfg.get(key), kind) or isinstance(cfg.get(key), bool):
            raise damaged(VERIFIER, path, f"lacks '{key}' (or it is not a {getattr(kind, '__name__', 'number')}), "
                                          f"which BLIP's BERT config needs", source)
    if cfg.get("add_cross_attention") is not True:
        raise damaged(VERIFIER, path, "does not set 'add_cross_attention': true; ImageReward's text encoder "
                                      "attends to the image", source)
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise damaged(VERIFIER, path, f"asks for position_embedding_type '{cfg['position_embedding_type']}'; "
                                      f"ImageReward uses absolute positions", source)
    return cfg


def read_checkpoint(path: Path, source: str) -> dict:
    """ImageReward.pt: a bare state dict of tensors, as `torch.save(model.state_dict())` wrote it."""
    state = read_weights(path, VERIFIER, source)
    if not isinstance(state, dict):
        raise damaged(VERIFIER, path, f"holds a {type(state).__name__}, not an ImageReward state dict; expected "
                                      f"THUDM's {CHECKPOINT}", source)
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise damaged(VERIFIER, path, f"is not an ImageReward state dict (its key '{bad}' holds no tensor); "
                                      f"expected THUDM's {CHECKPOINT}", source)
    return state


def _tensor(state: dict, key: str, path: Path, source: str) -> torch.Tensor:
    if key not in state:
        raise damaged(VERIFIER, path, f"lacks the tensor '{key}': it is not a complete ImageReward checkpoint", source)
    return state[key]


def _vision_config(state: dict, path: Path, source: str) -> Any:
    """The ViT's sizes, read from the tensors (so any BLIP ViT width, depth and resolution loads)."""
    from transformers import BlipVisionConfig

    width = _tensor(state, f"{VISION}cls_token", path, source).shape[-1]
    patch = _tensor(state, f"{VISION}patch_embed.proj.weight", path, source).shape[-1]
    positions = _tensor(state, f"{VISION}pos_embed", path, source).shape[1]
    grid = math.isqrt(positions - 1)
    hidden = _tensor(state, f"{VISION}blocks.0.mlp.fc1.weight", path, source).shape[0]
    blocks = [k[len(f"{VISION}blocks."):].split(".")[0] for k in state if k.startswith(f"{VISION}blocks.")]
    depth = 1 + max(int(b) for b in blocks if b.isdigit())
    if grid * grid != positions - 1 or width % VIT_HEAD_WIDTH:
        raise damaged(VERIFIER, path, f"holds a ViT of width {width} with {positions} positions; BLIP's ViT has a "
                                      f"square patch grid plus [CLS] and a multiple of {VIT_HEAD_WIDTH} as width",
                      source)
    return BlipVisionConfig(hidden_size=width, intermediate_size=hidden, num_hidden_layers=depth,
                            num_attention_heads=width // VIT_HEAD_WIDTH, image_size=grid * patch, patch_size=patch,
                            hidden_act="gelu", layer_norm_eps=VIT_LAYER_NORM_EPS, attention_dropout=0.0)


def _text_config(cfg: dict, vision_width: int) -> Any:
    """BLIP's BERT from med_config.json; its cross-attention reads the ViT's width (BLIP overrides encoder_width).

    is_decoder=True only builds the cross-attention layers; the forward runs without a causal mask, as an encoder."""
    from transformers import BlipTextConfig

    return BlipTextConfig(**{k: cfg[k] for k in _MED_KEYS}, encoder_hidden_size=vision_width,
                          pad_token_id=cfg.get("pad_token_id", 0), hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, is_decoder=True, bos_token_id=None,
                          eos_token_id=None, sep_token_id=None)


def build_model(state: dict, cfg: dict, path: Path, config_path: Path, source: str) -> ImageRewardModel:
    """The model with every checkpoint tensor in place; a missing, unexpected or misshapen tensor is an error."""
    import transformers
    from transformers import BlipTextModel, BlipVisionModel

    vision_cfg = _vision_config(state, path, source)
    text_cfg = _text_config(cfg, vision_cfg.hidden_size)
    widths = [_tensor(state, "mlp.layers.0.weight", path, source).shape[1]]
    widths += [_tensor(state, f"mlp.layers.{i}.weight", path, source).shape[0] for i in _MLP_LINEARS]
    if widths[0] != text_cfg.hidden_size:
        raise damaged(VERIFIER, path, f"has a reward MLP over {widths[0]}-d features but {config_path} gives the "
                                      f"text encoder {text_cfg.hidden_size}; the two files come from different models",
                      source)
    with torch.device("meta"):
        net = ImageRewardModel(BlipVisionModel(vision_cfg), BlipTextModel(text_cfg, add_pooling_layer=False),
                               AestheticMLP(widths))
    names = key_map(vision_cfg.num_hidden_layers, text_cfg.num_hidden_layers)
    targets = net.state_dict()
    if set(names.values()) != set(targets):
        odd = sorted(set(names.values()) ^ set(targets))
        raise VerifierError(f"verifier '{VERIFIER}': transformers {transformers.__version__} names BLIP's modules "
                            f"unlike this loader expects ({', '.join(odd[:4])}); use a transformers release that "
                            f"has BlipVisionModel and BlipTextModel as 4.45 to 5.x do")
    unexpected = sorted(k for k in state if k not in names and k not in IGNORED)
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise damaged(VERIFIER, path, f"holds the tensor '{unexpected[0]}'{more}, which ImageReward has no place "
                                      f"for: it is not THUDM's {CHECKPOINT}, or {config_path} describes fewer layers",
                      source)
    missing = sorted(k for k in names if k not in state)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise damaged(VERIFIER, path, f"lacks the tensor '{missing[0]}'{more}: it is not a complete ImageReward "
                                      f"checkpoint, or {config_path} describes more layers", source)
    for key, target in names.items():
        if state[key].shape != targets[target].shape:
            raise damaged(VERIFIER, path, f"holds '{key}' with shape {tuple(state[key].shape)} where {config_path} "
                                          f"and the other tensors make {tuple(targets[target].shape)}", source)
    net.load_state_dict({target: state[key].float() for key, target in names.items()}, strict=True, assign=True)
    net.text.embeddings.position_ids = torch.arange(text_cfg.max_position_embeddings).expand((1, -1))
    return net.eval().requires_grad_(False)


def load_tokenizer(name: str, vocab_size: int, allow_download: bool = False) -> Any:
    """bert-base-uncased's WordPiece tokenizer plus [DEC] and [ENC]; it must have med_config's vocab_size tokens."""
    from transformers import BertTokenizer

    source = model_source(name, f"{VERIFIER}_tokenizer", TOKENIZER_SOURCE)
    path = resolve(name, verifier=f"{VERIFIER}_tokenizer", expect=TOKENIZER_EXPECT, source=source,
                   allow_download=allow_download)
    folder = path.parent if path.is_file() else path
    check_json_files(folder, VERIFIER, source)
    if not ((folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()):
        raise VerifierError(f"verifier '{VERIFIER}': {folder} has no vocab.txt or tokenizer.json; expected "
                            f"{TOKENIZER_EXPECT} (option 'tokenizer'). Get it from {source}")
    try:
        tok = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise damaged(VERIFIER, folder, f"holds no usable BERT tokenizer ({e})", source) from e
    tok.add_special_tokens({"bos_token": BLIP_TOKENS[0]})
    tok.add_special_tokens({"additional_special_tokens": [BLIP_TOKENS[1]]})
    if len(tok) != vocab_size:
        raise VerifierError(f"verifier '{VERIFIER}': the tokenizer in {folder} has {len(tok)} tokens with "
                            f"{' and '.join(BLIP_TOKENS)}, but med_config.json says {vocab_size}: option "
                            f"'tokenizer' must name {TOKENIZER_EXPECT} (from {TOKENIZER_SOURCE})")
    return tok


def load_image_reward(model: str = DEFAULT_MODEL, *, allow_download: bool = False, **options) -> ImageRewardVerifier:
    """Options: tokenizer (folder or repo of bert-base-uncased's tokenizer, default bert-base-uncased), batch_size.

    `model` is a folder with ImageReward.pt and med_config.json (THUDM/ImageReward), or ImageReward.pt itself with
    med_config.json beside it.
    """
    opts = take_options(VERIFIER, options, {"tokenizer": DEFAULT_TOKENIZER, "batch_size": 16})
    source = model_source(model, VERIFIER, SOURCE)
    path = resolve(model, verifier=VERIFIER, expect=EXPECT, source=source, allow_download=allow_download)
    checkpoint, config_path = model_files(path, source)
    cfg = read_med_config(config_path, source)
    tokenizer = load_tokenizer(str(opts["tokenizer"] or DEFAULT_TOKENIZER), cfg["vocab_size"], allow_download)
    net = build_model(read_checkpoint(checkpoint, source), cfg, checkpoint, config_path, source)
    return ImageRewardVerifier(net, tokenizer, image_preprocess(net.vision.config.image_size), opts["batch_size"])
