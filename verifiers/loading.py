"""Where verifier weights come from: an explicit path, the host's model folders, the Hugging Face cache, or a download.

`resolve` never downloads unless asked; when nothing is found its error names what to put where.
`KNOWN_MODELS` lists the defaults (the README table and the node's model dropdown are built from it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

from .base import VerifierError

_MODEL_DIRS: list[Path] = []
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_SNAPSHOT_PATTERNS = ("*.json", "*.txt", "*.safetensors", "*.model")
_SMALL_FILE_PATTERNS = ("*.json", "*.txt")  # configs, tokenizers and processors in any transformers layout
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


@dataclass(frozen=True)
class KnownModel:
    """One default model: `name` is what the dropdown shows and `load_<verifier>(model=...)` accepts."""

    name: str
    verifier: str
    files: tuple[str, ...]
    size: str
    license: str
    source: str
    repo: Optional[str] = None  # Hugging Face repo id when it differs from `name`
    filename: Optional[str] = None  # the single file to take from `repo`; None for a whole folder
    note: str = ""

    @property
    def hub_repo(self) -> str:
        return self.repo or self.name


_HF_CLIP_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json")
_HF_PROCESSOR_FILES = ("preprocessor_config.json", "vocab.json", "merges.txt", "tokenizer.json",
                       "tokenizer_config.json", "special_tokens_map.json")
_HF_VLM_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "chat_template.json",
                 "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")

KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("openai/clip-vit-large-patch14", "clip_score", _HF_CLIP_FILES, "1.7 GB", "MIT",
               "https://huggingface.co/openai/clip-vit-large-patch14"),
    KnownModel("openai/clip-vit-base-patch32", "clip_score", _HF_CLIP_FILES, "0.6 GB", "MIT",
               "https://huggingface.co/openai/clip-vit-base-patch32"),
    KnownModel("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "clip_score", _HF_CLIP_FILES, "3.9 GB", "MIT",
               "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    KnownModel("sac+logos+ava1-l14-linearMSE.pth", "aesthetic", ("sac+logos+ava1-l14-linearMSE.pth",), "3.7 MB",
               "Apache-2.0", "https://github.com/christophschuhmann/improved-aesthetic-predictor",
               repo="camenduru/improved-aesthetic-predictor", filename="sac+logos+ava1-l14-linearMSE.pth",
               note="also needs openai/clip-vit-large-patch14 (option clip_model)"),
    KnownModel("yuvalkirstain/PickScore_v1", "pickscore", ("config.json", "model.safetensors"), "3.9 GB",
               "MIT (PickScore code; the model card states none)", "https://huggingface.co/yuvalkirstain/PickScore_v1",
               note="also needs the processor files of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (option processor)"),
    KnownModel("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "pickscore_processor", _HF_PROCESSOR_FILES, "4 MB", "MIT",
               "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
               note="tokenizer and image processor only, for PickScore"),
    KnownModel("HPS_v2.1_compressed.pt", "hpsv2", ("HPS_v2.1_compressed.pt",), "2 GB", "Apache-2.0",
               "https://huggingface.co/xswu/HPSv2", repo="xswu/HPSv2", filename="HPS_v2.1_compressed.pt",
               note="open_clip ViT-H-14"),
    KnownModel("HPS_v2_compressed.pt", "hpsv2", ("HPS_v2_compressed.pt",), "2 GB", "Apache-2.0",
               "https://huggingface.co/xswu/HPSv2", repo="xswu/HPSv2", filename="HPS_v2_compressed.pt",
               note="open_clip ViT-H-14"),
    KnownModel("openai/clip-vit-large-patch14", "clip_zero_shot", _HF_CLIP_FILES, "1.7 GB", "MIT",
               "https://huggingface.co/openai/clip-vit-large-patch14"),
    KnownModel("openai/clip-vit-base-patch32", "clip_zero_shot", _HF_CLIP_FILES, "0.6 GB", "MIT",
               "https://huggingface.co/openai/clip-vit-base-patch32"),
    KnownModel("facebook/dinov2-small-imagenet1k-1-layer", "dino_classifier",
               ("config.json", "preprocessor_config.json", "pytorch_model.bin"), "91 MB", "Apache-2.0",
               "https://huggingface.co/facebook/dinov2-small-imagenet1k-1-layer",
               note="the main branch ships pytorch_model.bin only"),
    KnownModel("facebook/dinov2-small", "self_similarity",
               ("config.json", "preprocessor_config.json", "model.safetensors"), "88 MB", "Apache-2.0", "https://huggingface.co/facebook/dinov2-small"),
    KnownModel("google/siglip-base-patch16-224", "self_similarity",
               ("config.json", "preprocessor_config.json", "model.safetensors"), "813 MB", "Apache-2.0",
               "https://huggingface.co/google/siglip-base-patch16-224", note="only the vision tower is used"),
    KnownModel("THUDM/ImageReward", "image_reward", ("ImageReward.pt", "med_config.json"), "1.8 GB", "Apache-2.0",
               "https://huggingface.co/THUDM/ImageReward",
               note="also needs the bert-base-uncased tokenizer (option tokenizer)"),
    KnownModel("bert-base-uncased", "image_reward_tokenizer", ("vocab.txt", "tokenizer.json", "tokenizer_config.json"),
               "0.7 MB", "Apache-2.0", "https://huggingface.co/google-bert/bert-base-uncased",
               note="tokenizer only, for ImageReward"),
    KnownModel("Qwen/Qwen2.5-VL-3B-Instruct", "vlm_grader",
               (*_HF_VLM_FILES, "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"), "7.5 GB", "Qwen Research License (non-commercial use)",
               "https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct"),
    KnownModel("HuggingFaceTB/SmolVLM-256M-Instruct", "vlm_grader",
               (*_HF_VLM_FILES, "processor_config.json", "added_tokens.json", "special_tokens_map.json",
                "model.safetensors"), "513 MB", "Apache-2.0",
               "https://huggingface.co/HuggingFaceTB/SmolVLM-256M-Instruct"),
)


def known_models(verifier: Optional[str] = None) -> list[KnownModel]:
    """The KNOWN_MODELS entries, for one verifier kind or all of them."""
    return [m for m in KNOWN_MODELS if verifier is None or m.verifier == verifier]


def find_known(model: str, verifier: Optional[str] = None) -> Optional[KnownModel]:
    """The KNOWN_MODELS entry named `model` (for `verifier` when given), else None."""
    for m in KNOWN_MODELS:
        if m.name == model and (verifier is None or m.verifier == verifier):
            return m
    return None


def model_source(model: str, verifier: str, fallback: str = "the model's publisher") -> str:
    """Where `model` comes from, for error messages: the source of the KNOWN_MODELS entry it names (a path counts by
    its last component, as `resolve` finds it in the model folders), a repo id's Hugging Face page, else `fallback`."""
    name = Path(model).name
    known = (find_known(model, verifier) or find_known(model)
             or next((m for m in known_models(verifier) if Path(m.name).name == name), None))
    if known is not None:
        return known.source
    if model.count("/") == 1 and _is_repo_id(model) and not Path(model).expanduser().exists():
        return f"https://huggingface.co/{model}"
    return fallback


def set_model_dirs(dirs: Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]) -> None:
    """Register the folders searched by name (ComfyUI's models/verifiers/ via folder_paths); replaces the list."""
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    _MODEL_DIRS[:] = [Path(d).expanduser() for d in dirs]


def model_dirs() -> list[Path]:
    return list(_MODEL_DIRS)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time (HF_HUB_CACHE, then HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def _names_under_dirs(model: str, filename: Optional[str]) -> list[str]:
    names = [model, Path(model).name]
    if filename:
        names += [str(Path(model) / filename), filename]
    return list(dict.fromkeys(n for n in names if n and not Path(n).is_absolute()))


def _hub_target(model: str, filename: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(repo id, file) to look for in the Hugging Face cache; KNOWN_MODELS maps dropdown names to repos."""
    known = find_known(model)
    if known is not None and filename is None:
        return known.hub_repo, known.filename
    return (model, filename) if _is_repo_id(model) else (None, filename)


def _is_repo_id(model: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not _REPO_ID.match(model) or Path(model).suffix in _FILE_SUFFIXES:
        return False
    try:
        validate_repo_id(model)
    except HFValidationError:
        return False
    return True


def _from_hf_cache(repo: str, filename: Optional[str]) -> Optional[Path]:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        if filename:
            return Path(hf_hub_download(repo, filename, cache_dir=hf_cache_dir(), local_files_only=True))
        return Path(snapshot_download(repo, cache_dir=hf_cache_dir(), local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _download(repo: str, filename: Optional[str], verifier: str) -> Path:
    """Fetch into the first model folder when one is registered (found by name next time), else the HF cache."""
    from huggingface_hub import hf_hub_download, snapshot_download

    dirs = model_dirs()
    if filename:
        local_dir = dirs[0] if dirs else None
        return Path(hf_hub_download(repo, filename, cache_dir=hf_cache_dir(), local_dir=local_dir))
    known = find_known(repo, verifier)
    patterns = [*known.files, *_SMALL_FILE_PATTERNS] if known is not None else list(_SNAPSHOT_PATTERNS)
    local_dir = dirs[0] / Path(repo).name if dirs else None
    return Path(snapshot_download(repo, cache_dir=hf_cache_dir(), local_dir=local_dir, allow_patterns=patterns))


def resolve(model: str, *, verifier: str, expect: str, source: str, allow_download: bool = False,
            filename: Optional[str] = None) -> Path:
    """Find `model`: an existing path, then a name under the model folders, then the HF cache, then a download.

    `expect` describes the file or folder wanted and `source` where it comes from; both go into the error
    raised when nothing is found, together with every place that was searched.
    """
    if not model or not str(model).strip():
        raise VerifierError(f"verifier '{verifier}': no model given; expected {expect} (from {source})")
    model = str(model).strip()
    looked: list[str] = []

    path = Path(model).expanduser()
    looked.append(f"the path {path if path.is_absolute() else Path.cwd() / path}")
    if path.exists():
        return path

    names = _names_under_dirs(model, filename)
    for folder in model_dirs():
        for name in names:
            candidate = folder / name
            if candidate.exists():
                return candidate
        looked.append(f"{folder} (as {', '.join(names)})")

    repo, hub_file = _hub_target(model, filename)
    if repo is not None:
        found = _from_hf_cache(repo, hub_file)
        if found is not None:
            return found
        what = f"file {hub_file} of repo {repo}" if hub_file else f"repo {repo}"
        looked.append(f"the Hugging Face cache {hf_cache_dir()} ({what})")
    folders = (" or ".join(str(d) for d in model_dirs())
               or "ComfyUI/models/verifiers (no model folder is registered here)")
    if repo is not None and allow_download:
        try:
            return _download(repo, hub_file, verifier)
        except OSError as e:
            raise VerifierError(f"verifier '{verifier}': downloading {what} failed: {e}\nExpected: {expect}. "
                                f"Fetch it yourself from {source} and put it in {folders}") from e

    where = "\n".join(f"  - {place}" for place in looked)
    hint = "enable allow_download to fetch it" if repo is not None else "give a full path or a Hugging Face repo id"
    raise VerifierError(
        f"verifier '{verifier}' cannot find model '{model}'.\n"
        f"Expected: {expect}.\n"
        f"Looked in:\n{where}\n"
        f"Put it in {folders} as '{Path(filename or model).name}', or {hint}. Source: {source}"
    )
