"""Tiny random-weight vision-language chat models in their real on-disk formats, for the `vlm_grader` verifier.

Stable helpers (import as `from noise_search.tests.helpers.tiny_vlm import ...`):
  make_tiny_qwen2_5_vl(folder, seed=0, answer=None) -> folder: Qwen2_5_VLForConditionalGeneration + Qwen2_5_VLProcessor
      as transformers 5 saves them (processor_config.json, chat_template.jinja, tokenizer.json ...)
  make_tiny_smolvlm(folder, seed=0, answer=None) -> folder: Idefics3ForConditionalGeneration (SmolVLM's architecture)
      laid out like the hub repo (preprocessor_config.json, processor_config.json, chat_template.json, tokenizer ...)
  make_tiny_vlm(folder, arch="qwen2_5_vl" | "smolvlm", seed=0, answer=None) -> folder: either of the above
  TINY_VLM_ARCHS: the `arch` names
`answer`: a text the model then writes, deterministically, to any question under greedy decoding: it becomes one vocab
token, which the weights make the argmax after any other token, followed by the end-of-turn token (`force_answer`).
Tokenizers are byte-level BPE built offline with the `tokenizers` library; "Yes" and " Yes" are single tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch

from .tiny_models import _bytes_to_unicode, build_module

TINY_VLM_ARCHS = ("qwen2_5_vl", "smolvlm")
_MERGES = (("Y", "e"), ("Ye", "s"), ("Ġ", "Yes"), ("a", "t"), ("c", "at"))
_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             max_position_embeddings=1024, tie_word_embeddings=False)
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def byte_bpe() -> tuple[dict, list]:
    """(vocab, merges) of a byte-level BPE: the 256 byte symbols, then a few merges ("Yes", " Yes", "cat")."""
    vocab = {c: i for i, c in enumerate(_bytes_to_unicode().values())}
    for a, b in _MERGES:
        vocab[a + b] = len(vocab)
    return vocab, list(_MERGES)


def force_answer(model: torch.nn.Module, answer_id: int, stop_id: int, scale: float = 8.0) -> torch.nn.Module:
    """Set weights so greedy decoding writes `answer_id` after any other token and `stop_id` right after it.

    Residual dimensions 0 and 1 of the language model carry the current token alone (its embedding: `scale` in dim 0
    for every token but the answer, which has it in dim 1; no attention or MLP output writes there), the final norm
    passes them, and the LM head reads dim 0 into the answer's logit, dim 1 into the stop token's, and gives every
    other token 0: one positive logit at every step, whatever the image and the rest of the random weights."""
    decoder = model.get_decoder()
    with torch.no_grad():
        embed = model.get_input_embeddings().weight
        embed[:, :2] = 0.0
        embed[:, 0] = scale
        embed[answer_id, :2] = torch.tensor([0.0, scale])
        for layer in decoder.layers:
            layer.self_attn.o_proj.weight[:2] = 0.0
            layer.mlp.down_proj.weight[:2] = 0.0
        decoder.norm.weight[:2] = 1.0
        head = model.get_output_embeddings().weight
        head.zero_()
        head[answer_id, 0] = 1.0
        head[stop_id, 1] = 1.0
    return model


def _with_answer(tokenizer, answer: Optional[str]) -> Optional[int]:
    from tokenizers import AddedToken

    if answer is None:
        return None
    tokenizer.add_tokens([AddedToken(answer, normalized=False, special=False)])
    return tokenizer.convert_tokens_to_ids(answer)


def _build(folder: Path, factory, seed: int, answer_id: Optional[int], stop_id: int) -> None:
    model = build_module(factory, seed)
    if answer_id is not None:
        force_answer(model, answer_id, stop_id)
    model.save_pretrained(folder)


def make_tiny_qwen2_5_vl(folder: Union[str, Path], seed: int = 0, answer: Optional[str] = None) -> Path:
    """A tiny Qwen2.5-VL (ViT with window attention, 2x2 patch merger, mrope text model) and its processor, saved by
    Qwen2_5_VLProcessor.save_pretrained; images become 8x8-pixel tokens, at most 16 per image."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    vocab, merges = byte_bpe()
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                          "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]})
    answer_id = _with_answer(tok, answer)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|image_pad|>", "<|video_pad|>",
                                                     "<|vision_start|>", "<|vision_end|>")}
    grid = dict(patch_size=4, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**grid, min_pixels=16 * 16, max_pixels=32 * 32),
        tokenizer=tok, video_processor=Qwen2VLVideoProcessor(**grid), chat_template=QWEN_TEMPLATE)
    text = dict(_TEXT, vocab_size=len(tok), rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=tok.pad_token_id)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=16, out_hidden_size=32, fullatt_block_indexes=[1])
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    _build(folder, lambda: Qwen2_5_VLForConditionalGeneration(cfg), seed, answer_id, ids["<|im_end|>"])
    processor.save_pretrained(folder)
    return folder


def make_tiny_smolvlm(folder: Union[str, Path], seed: int = 0, answer: Optional[str] = None) -> Path:
    """A tiny SmolVLM (Idefics3ForConditionalGeneration: SigLIP-style ViT, pixel-shuffle connector, Llama text model)
    laid out like HuggingFaceTB/SmolVLM-256M-Instruct: tokenizer files, preprocessor_config.json (image splitting into
    32-pixel tiles plus the global image, 4 tokens each), processor_config.json and chat_template.json."""
    from transformers import GPT2Tokenizer, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = byte_bpe()
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                        eos_token="<end_of_utterance>", pad_token="<|im_end|>", add_prefix_space=False)
    rows = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok.add_special_tokens({"additional_special_tokens": ["<fake_token_around_image>", "<image>",
                                                          "<end_of_utterance>", "<global-img>", *rows]})
    answer_id = _with_answer(tok, answer)
    image_seq_len = 4  # (32 / 8)^2 patches / scale_factor^2
    cfg = Idefics3Config(
        text_config=dict(_TEXT, model_type="llama", vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    _build(folder, lambda: Idefics3ForConditionalGeneration(cfg), seed, answer_id, tok.eos_token_id)
    tok.save_pretrained(folder)
    Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                           do_image_splitting=True).save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"image_seq_len": image_seq_len,
                                                              "processor_class": "Idefics3Processor"}))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": SMOLVLM_TEMPLATE}))
    return folder


def make_tiny_vlm(folder: Union[str, Path], arch: str = "qwen2_5_vl", seed: int = 0,
                  answer: Optional[str] = None) -> Path:
    """A tiny image-text-to-text model folder of `arch` (one of TINY_VLM_ARCHS)."""
    builders = {"qwen2_5_vl": make_tiny_qwen2_5_vl, "smolvlm": make_tiny_smolvlm}
    return builders[arch](folder, seed=seed, answer=answer)
