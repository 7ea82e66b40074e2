"""Makes the pack importable as ``noise_search`` for the tests."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_noise_search_pack", Path(__file__).resolve().parents[1] / "benchmarks" / "_pack.py")
_pack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pack)
_pack.load_pack()
