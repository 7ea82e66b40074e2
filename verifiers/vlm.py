"""Vision-language graders (`vlm_grader`): any transformers image-text-to-text chat model (Qwen2.5-VL, Qwen3-VL,
SmolVLM, ...) asked what `grading.py` asks, in one of its MODES:

- `vqascore` (Lin et al. 2024, arXiv 2404.01291): the probability that the model's next token answers "Yes" to
  `vqa_question(prompt)`; one forward pass per batch of images, no generation.
- `aspects` (Ma et al. 2025, the paper's grader): greedy decoding of `aspect_request(prompt, aspects)`, parsed by
  `parse_ratings`; the score is the mean rating, and `member_scores()` gives each aspect.

Images go to the processor as float tensors in 0..1 (`do_rescale=False`, channels first): both transformers image
processor backends (torchvision and PIL/NumPy) take tensors, so there is no 8-bit PIL round trip.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from . import hf
from .base import VerifierError
from .files import check_json_files, check_weights, read_json
from .grading import (
    VQA_ANSWER,
    ClipGrader,
    aspect_request,
    check_mode,
    parse_aspects,
    parse_ratings,
    vqa_question,
)
from .loading import model_source, resolve

NAME = "vlm_grader"
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
SOURCE = "https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct"
EXPECT = ("a Hugging Face folder of an image-text-to-text chat model (config.json; model.safetensors, or its shards "
          "with model.safetensors.index.json; tokenizer; preprocessor_config.json or processor_config.json; "
          "chat_template.json or chat_template.jinja), e.g. Qwen2.5-VL, Qwen3-VL or SmolVLM")
EXPECT_PROCESSOR = ("a folder with the model's processor: tokenizer, preprocessor_config.json or "
                    "processor_config.json, and chat_template.json or chat_template.jinja")
MAX_NEW_TOKENS = 128
_SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class VLMGrader(ClipGrader):
    """Scores images by asking a vision-language chat model about them; VQAScore in 0..1, aspects on 0..10."""

    name = NAME
    needs = frozenset({"prompt"})
    batch_size = 4

    def __init__(self, model: torch.nn.Module, processor: Any, mode: str, aspects: Sequence[str],
                 answer_id: Optional[int], batch_size: int = 4, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.mode = mode
        self.aspects = tuple(aspects)
        self.answer_id = answer_id
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self._keep_last = ({"logits_to_keep": 1}
                           if "logits_to_keep" in inspect.signature(model.forward).parameters else {})
        self._last: dict[str, torch.Tensor] = {}

    def inputs(self, clips: torch.Tensor, texts: Sequence[str]) -> Any:
        """One user turn per clip `[F, H, W, 3]` (its F images, then its text) through the chat template with the
        generation prompt, left-padded so every row's last token is where the answer starts; on the model's device
        and dtype."""
        conversations = [[{"role": "user", "content": [*({"type": "image", "image": image} for image in clip),
                                                      {"type": "text", "text": text}]}]
                         for clip, text in zip(clips.movedim(-1, 2).float().cpu(), texts, strict=True)]
        batch = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs={"padding": True, "padding_side": "left", "do_rescale": False,
                              "input_data_format": "channels_first"})
        return batch.to(device=self.device, dtype=self.dtype)

    def vqascore(self, clips: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """P(answer token) under a softmax over the full vocabulary at the last position, from the model's raw logits
        (as t2v_metrics scores HF chat models). A "Yes" of several tokens counts by its first token."""
        batch = self.inputs(clips, [vqa_question(p, clips.shape[1]) for p in prompts])
        logits = self.model(**batch, **self._keep_last).logits[:, -1]
        return logits.float().softmax(dim=-1)[:, self.answer_id]

    def answers(self, clips: torch.Tensor, prompts: Sequence[str]) -> list[str]:
        """The model's greedy answers (argmax at every step, at most `max_new_tokens`) to the aspect request."""
        from transformers import GenerationConfig

        batch = self.inputs(clips, [aspect_request(p, self.aspects, clips.shape[1]) for p in prompts])
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                  pad_token_id=self.processor.tokenizer.pad_token_id)
        out = self.model.generate(**batch, generation_config=config)
        return self.processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def _grade(self, clips: torch.Tensor, prompt: str) -> torch.Tensor:
        """Scores `[B]` of clips `[B, F, H, W, 3]` (F = 1: images), `batch_size` questions per model call."""
        self._last = {}
        chunks = [(s, clips[s:s + self.batch_size]) for s in range(0, clips.shape[0], self.batch_size)]
        if self.mode == "vqascore":
            scores = [self.vqascore(chunk, [prompt] * len(chunk)).float().cpu() for _, chunk in chunks]
            return torch.cat(scores) if scores else torch.zeros(0)
        rated = [parse_ratings(self.name, start + i, answer, self.aspects) for start, chunk in chunks
                 for i, answer in enumerate(self.answers(chunk, [prompt] * len(chunk)))]
        table = torch.tensor([[r[a] for a in self.aspects] for r in rated], dtype=torch.float32)
        table = table.reshape(len(rated), len(self.aspects))
        self._last = {a: table[:, k] for k, a in enumerate(self.aspects)}
        return table.mean(dim=1)

    def member_scores(self) -> dict:
        """Each aspect's ratings of the last `score` call (aspects mode); empty for VQAScore."""
        return dict(self._last)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VerifierError(f"verifier '{NAME}': option '{what}' must be a positive integer, got {value!r}")
    return value


def _folder(path: Path) -> Path:
    return path.parent if path.is_file() and (path.parent / "config.json").is_file() else path


def check_config(folder: Path, source: str) -> dict:
    """config.json of a model transformers loads with AutoModelForImageTextToText; otherwise say what it is."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if not folder.is_dir():
        raise VerifierError(f"verifier '{NAME}': {folder} is a file; expected {EXPECT}. Get one from {source}")
    check_json_files(folder, NAME, source)
    path = folder / "config.json"
    if not path.is_file():
        raise VerifierError(f"verifier '{NAME}': {folder} has no config.json; expected {EXPECT}. Get it from {source}")
    cfg = hf.config_dict(path, NAME, source)
    kind, archs = cfg.get("model_type"), cfg.get("architectures") or []
    if kind not in CONFIG_MAPPING_NAMES:
        raise VerifierError(f"verifier '{NAME}': {path} describes a '{kind}' model (architectures {archs}) that "
                            f"transformers {transformers.__version__} does not know; upgrade transformers, or use "
                            f"{EXPECT}")
    if kind not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise VerifierError(f"verifier '{NAME}': {path} describes a '{kind}' model (architectures {archs}), not an "
                            f"image-text-to-text model that answers questions about images (AutoModelForImageText"
                            f"ToText); expected {EXPECT}, e.g. from {source}")
    return cfg


def weights_path(folder: Path, source: str) -> Path:
    """The weights transformers will read: one file (checked), or a shard index whose shards are all present and
    readable."""
    if any((folder / name).is_file() for name in hf.WEIGHTS) or not any((folder / i).is_file() for i in _SHARD_INDEXES):
        return hf.weights_file(folder, NAME, source)
    index = next(folder / name for name in _SHARD_INDEXES if (folder / name).is_file())
    content = read_json(index, NAME, source)
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise VerifierError(f"verifier '{NAME}': {index} has no weight_map of tensors to shard files; re-download it "
                            f"from {source}")
    shards = sorted(set(map(str, weight_map.values())))
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise VerifierError(f"verifier '{NAME}': {folder} lacks {len(missing)} of the {len(shards)} weight shards "
                            f"listed in {index.name}: {', '.join(missing)}; download them from {source}")
    for shard in shards:
        check_weights(folder / shard, NAME, source)
    return index


def load_processor(folder: Path, cfg: dict, source: str) -> Any:
    """The folder's AutoProcessor, which must hold a tokenizer, an image processor and a chat template, and use the
    model's image token."""
    from transformers import AutoProcessor, ProcessorMixin

    fix = f"put the processor files of {source} in {folder}"
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise VerifierError(f"verifier '{NAME}': {folder} has no image processor: expected "
                            f"{hf.IMAGE_PROCESSOR_FILES} there; {fix}")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        raise VerifierError(f"verifier '{NAME}': {folder} has no tokenizer: expected {hf.TOKENIZER_FILES} (or "
                            f"tokenizer.model) there; {fix}")
    try:
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VerifierError(f"verifier '{NAME}': cannot load a processor from {folder} ({e}); expected "
                            f"{EXPECT_PROCESSOR}; {fix}") from e
    if not isinstance(processor, ProcessorMixin) or getattr(processor, "image_processor", None) is None:
        raise VerifierError(f"verifier '{NAME}': {folder} has a {type(processor).__name__} but no image processor: "
                            f"expected {hf.IMAGE_PROCESSOR_FILES} there; {fix}")
    if getattr(processor, "tokenizer", None) is None:
        raise VerifierError(f"verifier '{NAME}': the processor in {folder} has no tokenizer: expected "
                            f"{hf.TOKENIZER_FILES} there; {fix}")
    if not processor.chat_template:
        raise VerifierError(f"verifier '{NAME}': the processor in {folder} has no chat template (chat_template.json "
                            f"or chat_template.jinja): a model without one cannot be asked questions. Use the "
                            f"instruction-tuned (-Instruct) model, or {fix}")
    wanted = cfg.get("image_token_id", cfg.get("image_token_index"))
    token = getattr(processor, "image_token", None)
    got = getattr(processor, "image_token_id", None)
    if got is None and token is not None:
        got = processor.tokenizer.convert_tokens_to_ids(token)
    if wanted is not None and got is not None and int(wanted) != int(got):
        raise VerifierError(f"verifier '{NAME}': the processor in {folder} marks images with token id {got} but the "
                            f"model's config.json expects {wanted}: the processor belongs to another model; {fix}")
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token  # padding is masked; any id will do
    return processor


def answer_token(processor: Any) -> int:
    """The first token of VQA_ANSWER as the model's own chat template writes it at the start of the assistant's turn
    (SmolVLM's template answers " Yes" after "Assistant:", Qwen's "Yes" after a newline)."""
    user = {"role": "user", "content": [{"type": "text", "text": vqa_question("a photo")}]}
    reply = {"role": "assistant", "content": [{"type": "text", "text": VQA_ANSWER}]}
    prefix = processor.apply_chat_template([user], add_generation_prompt=True)
    full = processor.apply_chat_template([user, reply])
    tok = processor.tokenizer
    head = tok(prefix, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"]
    first = ids[len(head)] if full.startswith(prefix) and ids[:len(head)] == head and len(ids) > len(head) else None
    text = tok.decode([first]).strip() if first is not None else ""
    if not text or not VQA_ANSWER.startswith(text):
        raise VerifierError(f"verifier '{NAME}': cannot find where the answer '{VQA_ANSWER}' starts in this model's "
                            f"chat template (after the generation prompt it writes {full[len(prefix):][:40]!r}); "
                            f"mode 'vqascore' needs a chat model that answers directly; use mode 'aspects'")
    return first


def load_vlm_grader(model: str = DEFAULT_MODEL, *, allow_download: bool = False, mode: str = "vqascore",
                    aspects: Optional[str] = None, batch_size: int = 4, max_new_tokens: int = MAX_NEW_TOKENS,
                    processor: Optional[str] = None, **options) -> VLMGrader:
    """Options: mode (vqascore | aspects), aspects (comma- or newline-separated; empty: the paper's five; aspects
    mode only), batch_size, max_new_tokens (aspects mode), processor (a separate processor folder)."""
    if options:
        raise VerifierError(f"verifier '{NAME}' has no option {', '.join(map(repr, sorted(options)))}; its options "
                            f"are aspects, batch_size, max_new_tokens, mode, processor")
    check_mode(NAME, mode)
    if mode != "aspects" and aspects and str(aspects).strip():
        raise VerifierError(f"verifier '{NAME}': option 'aspects' is read in mode 'aspects' only; set mode to "
                            f"'aspects' or clear it")
    names = parse_aspects(NAME, aspects)
    batch_size = _positive_int(batch_size, "batch_size")
    max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
    from transformers import AutoModelForImageTextToText

    source = model_source(model, NAME, SOURCE)
    folder = _folder(resolve(model, verifier=NAME, expect=EXPECT, source=source, allow_download=allow_download))
    cfg = check_config(folder, source)
    weights = weights_path(folder, source)
    if processor is not None and str(processor).strip():
        found = resolve(str(processor), verifier=NAME, expect=EXPECT_PROCESSOR, source=source,
                        allow_download=allow_download)
        processor_folder = _folder(found)
        check_json_files(processor_folder, NAME, source)
    else:
        processor_folder = folder
    proc = load_processor(processor_folder, cfg, source)
    answer_id = answer_token(proc) if mode == "vqascore" else None
    net = hf.load_model(AutoModelForImageTextToText, folder, weights, NAME, source, dtype="auto")
    vocab = net.get_output_embeddings().weight.shape[0]
    if len(proc.tokenizer) > vocab:
        raise VerifierError(f"verifier '{NAME}': the tokenizer in {processor_folder} has {len(proc.tokenizer)} tokens "
                            f"but the model in {folder} predicts {vocab}: the processor belongs to another model; put "
                            f"the processor files of {source} there")
    return VLMGrader(net, proc, mode, names, answer_id, batch_size, max_new_tokens)
