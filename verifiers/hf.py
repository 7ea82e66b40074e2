"""Hugging Face model folders: config.json checked against the model wanted, the weights file checked before
transformers reads it and every missing or misshapen tensor reported, and the tokenizer and image processor loaded by
transformers' own Auto classes, so folders saved by transformers 4 (preprocessor_config.json) and 5
(processor_config.json) both load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .base import VerifierError
from .files import check_json_files, check_weights, damaged, read_json
from .preprocess import ImagePreprocess

WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # transformers' order of preference
IMAGE_PROCESSOR_FILES = "preprocessor_config.json (or processor_config.json, as transformers 5 saves it)"
TOKENIZER_FILES = "tokenizer.json or vocab.json + merges.txt"


def config_dict(path: Path, verifier: str, source: str) -> dict:
    """A config.json file's object; valid JSON of another shape is as damaged as broken JSON."""
    cfg = read_json(path, verifier, source)
    if not isinstance(cfg, dict):
        raise damaged(verifier, path, f"holds a JSON {type(cfg).__name__} where the model config object belongs",
                      source)
    return cfg


def read_config(folder: Path, verifier: str, source: str, model_types: Sequence[str], what: str) -> dict:
    """config.json, once every JSON file of the folder parses; its model_type must be one of `model_types`."""
    check_json_files(folder, verifier, source)
    path = folder / "config.json"
    if not path.is_file():
        raise VerifierError(f"verifier '{verifier}': {folder} has no config.json; expected a Hugging Face folder of "
                            f"{what}. Get it from {source}")
    cfg = config_dict(path, verifier, source)
    if cfg.get("model_type") not in model_types:
        raise VerifierError(f"verifier '{verifier}': {path} describes a '{cfg.get('model_type')}' model (architectures "
                            f"{cfg.get('architectures') or []}), not {what} (model_type "
                            f"{' or '.join(map(repr, model_types))}). Put the folder of {what} there, "
                            f"e.g. from {source}")
    return cfg


def weights_file(folder: Path, verifier: str, source: str) -> Path:
    """The weights transformers will read (model.safetensors, else pytorch_model.bin), checked to be readable."""
    path = next((folder / name for name in WEIGHTS if (folder / name).is_file()), None)
    if path is None:
        raise VerifierError(f"verifier '{verifier}': the folder {folder} lacks model.safetensors (or "
                            f"pytorch_model.bin); get it from {source}")
    check_weights(path, verifier, source)
    return path


def load_model(cls: Any, folder: Path, weights: Path, verifier: str, source: str, dtype: Any = torch.float32,
               **kwargs) -> torch.nn.Module:
    """`cls.from_pretrained` in eval mode, in float32 or `dtype` ("auto": the checkpoint's own, so a large model is
    not upcast in memory); a tensor missing from `weights` or shaped unlike config.json is an error, where
    transformers would initialise it at random."""
    model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                      ignore_mismatched_sizes=True, dtype=dtype, **kwargs)
    misshapen = sorted(info.get("mismatched_keys") or [], key=lambda k: k[0])
    missing = sorted(info.get("missing_keys") or [])
    if misshapen:
        key, got, wanted = misshapen[0]
        raise VerifierError(f"verifier '{verifier}': the weights in {weights} do not fit {folder / 'config.json'}: "
                            f"{len(misshapen)} tensors have other shapes (e.g. {key}: {tuple(got)} in the weights, "
                            f"{tuple(wanted)} by config.json). The two files come from different models or config.json "
                            f"was edited; re-download the folder from {source}")
    if missing:
        more = " ..." if len(missing) > 5 else ""
        raise VerifierError(f"verifier '{verifier}': {weights} lacks {len(missing)} weights of {cls.__name__} "
                            f"({', '.join(missing[:5])}{more}); it holds another model than {folder / 'config.json'} "
                            f"describes. Re-download the folder from {source}")
    return (model.float() if dtype == torch.float32 else model).eval()


def image_preprocess(folder: Path, verifier: str, source: str,
                     default: Optional[ImagePreprocess] = None) -> ImagePreprocess:
    """The folder's image processor (AutoImageProcessor) in torch; `default` when the folder has none, else an error."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except OSError as e:
        if default is not None:
            return default
        raise VerifierError(f"verifier '{verifier}': {folder} has no image processor: expected "
                            f"{IMAGE_PROCESSOR_FILES} there. Put the processor files of {source} in {folder}") from e
    return ImagePreprocess.from_hf(processor)


def tokenizer(folder: Path, verifier: str, source: str, vocab_size: int) -> Any:
    """The folder's tokenizer (AutoTokenizer), which must have the loaded text model's `vocab_size` tokens exactly.

    transformers 5 builds an empty tokenizer for a folder without tokenizer files, so the size is what tells."""
    from transformers import AutoTokenizer

    where = f"put the tokenizer files of {source} in {folder}"
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise VerifierError(f"verifier '{verifier}': {folder} has no tokenizer: expected {TOKENIZER_FILES} there; "
                            f"{where}") from e
    if len(tok) != vocab_size:
        raise VerifierError(f"verifier '{verifier}': the tokenizer in {folder} has {len(tok)} tokens but the model's "
                            f"text embedding has {vocab_size}: expected this model's {TOKENIZER_FILES} there; {where}")
    return tok
