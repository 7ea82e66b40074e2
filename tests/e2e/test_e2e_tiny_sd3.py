"""The tiny SD3 checkpoint loads through ComfyUI's own loader as SD3, key-for-key, and samples 64x64 fast."""

import pytest

from noise_search.tests.helpers.comfy_script import run_script
from noise_search.tests.helpers.tiny_sd3 import FILENAME

pytestmark = pytest.mark.comfyui

# Runs with cwd=COMFYUI_PATH (`-c`, so sys.path[0] is ComfyUI and never this repository).
CHECK = r'''
import json, sys, time
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.sd, comfy.sample, comfy.utils
import comfy.taesd.taesd as taesd

path = PATH
model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
sd = comfy.utils.load_torch_file(path)

def shapes(prefix):
    return {k[len(prefix):]: list(v.shape) for k, v in sd.items() if k.startswith(prefix)}

def mismatch(ours, theirs):
    return sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))

theirs_unet = {k: list(v.shape) for k, v in model.model.diffusion_model.state_dict().items()}
theirs_vae = {k: list(v.shape) for k, v in taesd.TAESD(latent_channels=16).state_dict().items()}
theirs_clip = {k: list(v.shape) for k, v in clip.cond_stage_model.state_dict().items()}
out = {
    "model_class": type(model.model).__name__,
    "model_config": type(model.model.model_config).__name__,
    "vae_model": type(vae.first_stage_model).__name__,
    "latent_channels": vae.latent_channels,
    "clip_l": clip.cond_stage_model.clip_l is not None, "clip_g": clip.cond_stage_model.clip_g is not None,
    "unet_mismatch": mismatch(shapes("model.diffusion_model."), theirs_unet),
    "vae_mismatch": mismatch(shapes("first_stage_model."), theirs_vae),
    "clip_mismatch": mismatch(shapes("text_encoders."), theirs_clip),
}
cond, pooled = clip.encode_from_tokens(clip.tokenize("a red cube on a wooden table"), return_pooled=True)
positive = [[cond, {"pooled_output": pooled}]]
negative = [[torch.zeros_like(cond), {"pooled_output": torch.zeros_like(pooled)}]]
latent = torch.zeros(1, 16, 8, 8)

def sample(seed):
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, 4, 4.5, "euler", "simple", positive, negative, latent, seed=seed,
                               disable_pbar=True)

sample(0)  # warm-up: loads the model onto the device
torch.set_num_threads(1)  # one thread's CPU time: what it costs, however busy the (shared) machine is
sample_s, decode_s = [], []
for _ in range(3):
    start = time.process_time()
    a = sample(0)
    sample_s.append(time.process_time() - start)
    b = vae.decode(a)
    decode_s.append(time.process_time() - start - sample_s[-1])
out["sample_s"], out["decode_s"] = min(sample_s), min(decode_s)
again = vae.decode(sample(0))
other = vae.decode(sample(1))
out["image_shape"] = list(b.shape)
out["image_std"] = float(b.float().std())
out["same_seed_equal"] = bool(torch.equal(b, again))
out["other_seed_diff"] = float((b - other).abs().mean())
print("RESULT " + json.dumps(out))
'''


def test_tiny_sd3_loads_as_sd3_and_samples_64px_fast(tiny_sd3_dir):
    out = run_script(CHECK.replace("PATH", repr(str(tiny_sd3_dir / FILENAME))), timeout=300)
    assert out["model_class"] == "SD3" and out["model_config"] == "SD3"
    assert out["vae_model"] == "TAESD" and out["latent_channels"] == 16
    assert out["clip_l"] and not out["clip_g"]
    assert out["unet_mismatch"] == [] and out["vae_mismatch"] == [] and out["clip_mismatch"] == []
    assert out["image_shape"] == [1, 64, 64, 3]
    assert out["image_std"] > 0.05, "decoded image is flat"
    assert out["same_seed_equal"], "same seed must give the same image"
    assert out["other_seed_diff"] > 0.01, "another seed must give another image"
    assert out["sample_s"] < 1.0, f"sampling 64x64 in 4 steps took {out['sample_s']:.2f}s of CPU time"
    assert out["decode_s"] < 1.0, f"decoding 64x64 took {out['decode_s']:.2f}s of CPU time"
