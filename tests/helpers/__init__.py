"""Code the tests share (tiny models, toy problems, the ComfyUI server, script runner and browser); no tests here."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
