"""Run a test script inside a fresh ComfyUI process (cwd = COMFYUI_PATH, never this repository on sys.path).

`run_script` runs a whole script that prints `RESULT <json>`; `run_in_comfyui` runs a body after PRELUDE (the
tiny SD3 checkpoint loaded), which stores JSON-safe results in `out`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import REPO_ROOT
from .comfy_server import comfyui_path
from .tiny_sd3 import FILENAME

PRELUDE = r'''
import json, sys
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import importlib.util
spec = importlib.util.spec_from_file_location("_pack", __REPO__ + "/benchmarks/_pack.py")
pack = importlib.util.module_from_spec(spec); spec.loader.exec_module(pack); pack.load_pack()

import torch
import comfy.model_patcher, comfy.sample, comfy.samplers, comfy.sd, comfy.utils
comfy.utils.PROGRESS_BAR_ENABLED = False
from noise_search.nodes import NoiseSearchSampler, NoiseSearchSamplerCustom
from noise_search.nodes.types import LoadedVerifier, VerifierWeights
from noise_search.verifiers.base import Verifier

out = {}

class Brightness(Verifier):
    """Mean pixel value; records what it was given."""
    name = "brightness"
    def __init__(self, needs=frozenset(), reference_sigma=None):
        super().__init__()
        self.model = torch.nn.Linear(1, 1)
        self.needs, self.reference_sigma = frozenset(needs), reference_sigma
        self.seen = []
    def _score(self, images, prompt, references):
        self.seen.append((images.clone(), None if references is None else references.clone()))
        return images.float().mean(dim=(1, 2, 3))

def handle(verifier):
    cpu = torch.device("cpu")
    return LoadedVerifier(verifier, [comfy.model_patcher.ModelPatcher(VerifierWeights(verifier.model), cpu, cpu)])

model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(__CHECKPOINT__, output_vae=True, output_clip=True)
cond, pooled = clip.encode_from_tokens(clip.tokenize("a red cube"), return_pooled=True)
positive = [[cond, {"pooled_output": pooled}]]
negative = [[torch.zeros_like(cond), {"pooled_output": torch.zeros_like(pooled)}]]
SET = dict(algorithm="random", candidates=3, zo_rounds=1, zo_step_cos=0.9, paths_branches=2, paths_sigma_start=0.75,
           paths_delta_f=0.25, paths_delta_b=0.5, paths_max_rounds=0, budget_nfe=0, batch_size=1, top_k=2)

def search(latent, seed, sampler_name, steps=4, denoise=1.0, verifier=None, prompt="", vae=vae, model=model,
           **settings):
    verifier = verifier or handle(Brightness())
    return NoiseSearchSampler.execute(model, positive, negative, latent, seed, steps, 3.0, sampler_name, "simple",
                                      denoise, vae, verifier, prompt, **dict(SET, **settings)).args

def stock(latent, seed, sampler_name, steps=4, denoise=1.0, model=model):
    """common_ksampler's own path: KSampler as a user runs it."""
    import nodes
    return nodes.common_ksampler(model, seed, steps, 3.0, sampler_name, "simple", positive, negative, latent,
                                 denoise=denoise)[0]["samples"]

def max_diff(a, b):
    return float((a.float() - b.float()).abs().max())

def error(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None
'''


def run_script(script: str, timeout: float) -> dict:
    """Run `script` with `python -c` in the ComfyUI checkout; return the JSON it printed after `RESULT ` (fails
    with its output otherwise). Its temporary files (tempfile's and ComfyUI's) go to a folder removed afterwards."""
    comfyui = comfyui_path()
    with tempfile.TemporaryDirectory(prefix="noise_search_script_") as scratch:
        proc = subprocess.run([sys.executable, "-c", script], cwd=comfyui, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "TMPDIR": scratch})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (f"ComfyUI script failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                            f"{proc.stderr[-8000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run_in_comfyui(body: str, checkpoint_dir: Path, timeout: float = 900) -> dict:
    """Execute PRELUDE + `body` in a ComfyUI subprocess; return its `out` dict."""
    script = (PRELUDE + body + '\nprint("RESULT " + json.dumps(out))\n')
    script = script.replace("__CHECKPOINT__", repr(str(Path(checkpoint_dir) / FILENAME)))
    script = script.replace("__REPO__", repr(str(REPO_ROOT)))
    return run_script(script, timeout)
