"""Keeps the Hugging Face hub offline (no test may download) and makes the pack importable as ``noise_search``."""

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

_spec = importlib.util.spec_from_file_location("_noise_search_pack",
                                               Path(__file__).resolve().parents[1] / "benchmarks" / "_pack.py")
_pack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pack)
_pack.load_pack()
