"""A tiny random-weight ImageReward in THUDM's on-disk format, for tests of the image_reward verifier.

Stable helpers (import as `from noise_search.tests.helpers.tiny_image_reward import ...`):
  TINY                                  -> the tiny sizes (ViT width 128 = two 64-wide heads, BERT width 64, ...)
  image_reward_state(seed=0)            -> the state dict in ImageReward.pt's key layout (blip.visual_encoder.* timm
                                           ViT, blip.text_encoder.* BLIP BERT with crossattention, blip.vision_proj /
                                           text_proj, mlp.layers.*), tensors drawn from a private torch.Generator
  med_config(sizes=TINY)                -> med_config.json's object, shaped like THUDM's (BertModel, cross-attention)
  make_image_reward(folder, seed=0, state=None) -> folder: ImageReward.pt (torch.save of a bare state dict) and
                                           med_config.json
  bert_vocab()                          -> a small WordPiece vocab: BERT's special tokens first, then words
  make_bert_tokenizer(folder)           -> folder: vocab.txt and tokenizer_config.json as bert-base-uncased has them
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Union

import torch

TINY = {"vision_width": 128, "vision_layers": 2, "patch": 8, "image_size": 32, "text_width": 64, "text_layers": 2,
        "text_heads": 2, "text_intermediate": 128, "max_positions": 40, "projection": 16}
_WORDS = ("a", "an", "the", "of", "on", "in", "photo", "cat", "dog", "red", "blue", "sitting", "mat", "##s", ".", ",")
_MLP = ((0, 1024), (2, 128), (4, 64), (6, 16), (7, 1))  # (Sequential index, width), as ImageReward's MLP


def bert_vocab() -> list[str]:
    return ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS]


def med_config(sizes: dict = TINY) -> dict:
    """THUDM's med_config.json with tiny sizes; encoder_width is stale on purpose, as BLIP overrides it."""
    return {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": sizes["text_width"], "initializer_range": 0.02,
            "intermediate_size": sizes["text_intermediate"], "layer_norm_eps": 1e-12,
            "max_position_embeddings": sizes["max_positions"], "model_type": "bert",
            "num_attention_heads": sizes["text_heads"], "num_hidden_layers": sizes["text_layers"], "pad_token_id": 0,
            "type_vocab_size": 2, "vocab_size": len(bert_vocab()) + 2, "encoder_width": sizes["text_width"],
            "add_cross_attention": True}


def image_reward_state(seed: int = 0, sizes: dict = TINY) -> dict:
    """Every tensor of ImageReward.pt, keyed as `ImageReward.state_dict()` names them."""
    g = torch.Generator().manual_seed(seed)
    d, h, p = sizes["vision_width"], sizes["text_width"], sizes["patch"]
    grid = sizes["image_size"] // p
    vocab = len(bert_vocab()) + 2

    def linear(prefix, d_out, d_in):
        return {f"{prefix}.weight": torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in),
                f"{prefix}.bias": 0.1 * torch.randn(d_out, generator=g)}

    def norm(prefix, width):
        return {f"{prefix}.weight": 1 + 0.1 * torch.randn(width, generator=g),
                f"{prefix}.bias": 0.1 * torch.randn(width, generator=g)}

    v = "blip.visual_encoder."
    small = 1e-3  # ViT inputs of variance ~1e-6, so the first LayerNorm's eps (1e-6 in BLIP's ViT) matters
    state = {f"{v}cls_token": small * torch.randn(1, 1, d, generator=g),
             f"{v}pos_embed": small * torch.randn(1, grid * grid + 1, d, generator=g),
             f"{v}patch_embed.proj.weight": small * torch.randn(d, 3, p, p, generator=g) / math.sqrt(3 * p * p),
             f"{v}patch_embed.proj.bias": small * torch.randn(d, generator=g)}
    for i in range(sizes["vision_layers"]):
        b = f"{v}blocks.{i}."
        state |= norm(f"{b}norm1", d) | linear(f"{b}attn.qkv", 3 * d, d) | linear(f"{b}attn.proj", d, d)
        state |= norm(f"{b}norm2", d) | linear(f"{b}mlp.fc1", 4 * d, d) | linear(f"{b}mlp.fc2", d, 4 * d)
    state |= norm(f"{v}norm", d)
    t = "blip.text_encoder."
    state |= {f"{t}embeddings.word_embeddings.weight": torch.randn(vocab, h, generator=g),
              f"{t}embeddings.position_embeddings.weight": torch.randn(sizes["max_positions"], h, generator=g),
              f"{t}embeddings.position_ids": torch.arange(sizes["max_positions"]).expand((1, -1)).clone()}
    state |= norm(f"{t}embeddings.LayerNorm", h)
    for i in range(sizes["text_layers"]):
        b = f"{t}encoder.layer.{i}."
        for att, kv_width in (("attention", h), ("crossattention", d)):
            state |= linear(f"{b}{att}.self.query", h, h) | linear(f"{b}{att}.self.key", h, kv_width)
            state |= linear(f"{b}{att}.self.value", h, kv_width) | linear(f"{b}{att}.output.dense", h, h)
            state |= norm(f"{b}{att}.output.LayerNorm", h)
        state |= linear(f"{b}intermediate.dense", sizes["text_intermediate"], h)
        state |= linear(f"{b}output.dense", h, sizes["text_intermediate"]) | norm(f"{b}output.LayerNorm", h)
    state |= linear("blip.vision_proj", sizes["projection"], d) | linear("blip.text_proj", sizes["projection"], h)
    d_in = h
    for index, width in _MLP:
        state |= linear(f"mlp.layers.{index}", width, d_in)
        d_in = width
    return state


def make_image_reward(folder: Union[str, Path], seed: int = 0, state: Optional[dict] = None,
                      sizes: dict = TINY) -> Path:
    """THUDM/ImageReward's files: ImageReward.pt (a bare state dict) and med_config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(image_reward_state(seed, sizes) if state is None else state, str(folder / "ImageReward.pt"))
    (folder / "med_config.json").write_text(json.dumps(med_config(sizes), indent=2), encoding="utf-8")
    return folder


def make_bert_tokenizer(folder: Union[str, Path]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(bert_vocab()) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return folder
