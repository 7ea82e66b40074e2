"""The harness that runs test scripts in a ComfyUI process leaves no temporary files behind."""

import os

import pytest

from noise_search.tests.helpers.comfy_script import run_script

pytestmark = pytest.mark.comfyui

SCRIPT = r'''
import json, tempfile
folder = tempfile.mkdtemp()
open(folder + "/spilled.png", "wb").write(b"x" * 1000)
print("RESULT " + json.dumps({"folder": folder}))
'''


def test_a_scripts_temporary_files_are_removed_after_it():
    folder = run_script(SCRIPT, timeout=120)["folder"]
    assert os.path.basename(os.path.dirname(folder)).startswith("noise_search_script_")
    assert not os.path.exists(folder)
