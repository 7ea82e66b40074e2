"""The tiny OpenCLIP configs registered for a test process are removed when it exits."""

import subprocess
import sys
from pathlib import Path

from noise_search.tests.helpers import REPO_ROOT

SCRIPT = r'''
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_pack", sys.argv[1] + "/benchmarks/_pack.py")
pack = importlib.util.module_from_spec(spec); spec.loader.exec_module(pack); pack.load_pack()
from noise_search.tests.helpers import tiny_models
import open_clip
name = tiny_models.register_tiny_open_clip()
assert name in open_clip.list_models()
print(tiny_models._CONFIG_DIR)
'''


def test_the_open_clip_config_folder_is_gone_after_the_process():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO_ROOT)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = Path(proc.stdout.strip().splitlines()[-1])
    assert folder.name.startswith("noise_search_open_clip_")
    assert not folder.exists()
