"""A real OpenAI-compatible server for tests: `transformers serve` (Transformers' FastAPI server) on a loopback port,
serving a tiny Qwen2-VL saved in its real format (config, safetensors, byte-level BPE tokenizer, image processor,
chat template), offline.

  serving_missing()                       -> the packages `transformers serve` needs that are not installed
  make_tiny_qwen2_vl(folder, answer=None) -> folder; with `answer`, greedy decoding writes exactly that text
  TransformersServer(folder)              -> the running server; .url is its /v1 base URL, .model the model name
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional, Union

from . import stop_process

SERVING_PACKAGES = ("fastapi", "uvicorn", "accelerate")
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' or 'image' in c or 'image_url' in c %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def serving_missing() -> list:
    """What `transformers serve` lacks here: its packages, or a transformers that has the serving CLI (5.x)."""
    missing = [name for name in SERVING_PACKAGES if importlib.util.find_spec(name) is None]
    if importlib.util.find_spec("transformers.cli.serving") is None:
        missing.append("transformers with `transformers serve` (5.x)")
    return missing


def _tokenizer():
    """A byte-level BPE over the 256 byte symbols (no merges) plus Qwen2-VL's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _write_answer(model, tokenizer, answer: str) -> None:
    """Zero every decoder layer's output projections, so the last position's logits depend on its own token only,
    and wire embeddings and lm_head so each token of '\\n' + answer is followed by the next, then <|im_end|>."""
    import torch

    ids = tokenizer("\n" + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(set(ids[:-1])) != len(ids) - 1:
        raise ValueError(f"answer {answer!r} must not repeat a byte (nor hold a newline): each token has one successor")
    text = model.model.language_model
    with torch.no_grad():
        for layer in text.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (token, successor) in enumerate(zip(ids[:-1], ids[1:])):
            text.embed_tokens.weight[token] = torch.nn.functional.one_hot(torch.tensor(k), text.config.hidden_size)
            model.lm_head.weight[successor, k] = 10.0


def make_tiny_qwen2_vl(folder: Union[str, Path], answer: Optional[str] = None, seed: int = 0) -> Path:
    """A Qwen2VLForConditionalGeneration (one text and one vision layer, width 32) with random weights, processor
    and chat template, saved with save_pretrained; with `answer`, it answers exactly that to any prompt."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    tokenizer = _tokenizer()
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIAL}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"])
    vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
                           architectures=["Qwen2VLForConditionalGeneration"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config).eval()
    if answer is not None:
        _write_answer(model, tokenizer, answer)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2,
                                            temporal_patch_size=2)
    Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
                     chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TransformersServer:
    """`transformers serve FOLDER --device cpu` on a free loopback port, offline; `close()` stops it."""

    def __init__(self, folder: Union[str, Path], startup_s: float = 120.0) -> None:
        self.model = str(folder)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"
        self.process = subprocess.Popen([sys.executable, "-c", code, "serve", self.model, "--device", "cpu",
                                         "--host", "127.0.0.1", "--port", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self._wait(startup_s)

    def _wait(self, startup_s: float) -> None:
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError(f"transformers serve did not answer /health within {startup_s} s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        stop_process(self.process)
