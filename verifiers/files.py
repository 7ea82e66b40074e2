"""Model files read through one reader per format (JSON, safetensors, torch.save), so a damaged file gives an error
naming the verifier, the file, what is wrong with it and where to get it again, never a bare library error.

Every verifier kind reads its files here, directly or to check them before transformers / open_clip load them.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from .base import VerifierError

_LFS_POINTER = b"version https://git-lfs"
_LEGACY_TORCH = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # torch.save before 1.6: pickled magic number first


def damaged(verifier: str, path: Path, problem: str, source: str) -> VerifierError:
    """The error for a file that exists but cannot be used: which file, what is wrong, and the fix."""
    return VerifierError(f"verifier '{verifier}': {path} {problem}. Re-download it from {source} and replace the file")


def read_json(path: Path, verifier: str, source: str) -> Any:
    """The parsed JSON file; a truncated or corrupt file is a VerifierError naming the line."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise damaged(verifier, path, f"is corrupt: it is not text (byte {e.start} is not UTF-8)", source) from e
    except json.JSONDecodeError as e:
        raise damaged(verifier, path, f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): "
                                      f"it is truncated or corrupt", source) from e


def check_json_files(folder: Path, verifier: str, source: str) -> None:
    """Parse every JSON file of a model folder (configs, tokenizer, processor), so a damaged one is named up front."""
    for path in sorted(Path(folder).glob("*.json")):
        read_json(path, verifier, source)


def read_weights(path: Path, verifier: str, source: str) -> dict:
    """The checkpoint's contents (a state dict, possibly wrapped), from .safetensors or a torch.save file."""
    return _open_weights(Path(path), verifier, source, lazy=False)


def check_weights(path: Path, verifier: str, source: str) -> None:
    """Open a checkpoint cheaply (safetensors header, memory-mapped torch archive) to catch a damaged file before a
    library reads it."""
    _open_weights(Path(path), verifier, source, lazy=True)


def _open_weights(path: Path, verifier: str, source: str, lazy: bool) -> Optional[dict]:
    with open(path, "rb") as f:
        head = f.read(32)
    size = f"{path.stat().st_size:,} bytes"
    if head.startswith(_LFS_POINTER):
        raise damaged(verifier, path, f"is a Git LFS pointer ({size}), not the weights: the repository was cloned "
                                      f"without git-lfs", source)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            if not lazy:
                return load_file(str(path))
            with safe_open(str(path), "pt") as f:
                f.keys()
            return None
        except SafetensorError as e:
            raise damaged(verifier, path, f"is truncated or corrupt ({size}; safetensors says: {e})", source) from e
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and not head.startswith(_LEGACY_TORCH):
        raise damaged(verifier, path, f"is truncated or corrupt ({size}): it is not a complete torch.save archive",
                      source)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=lazy and is_zip)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise damaged(verifier, path, f"is corrupt, or holds pickled Python objects instead of tensors ({size}; "
                                      f"torch.load says: {first})", source) from e
