"""Train the miniature Fashion-MNIST world (issue 21) and save it in the formats ComfyUI and this pack load.

    apt-get install dataset-fashion-mnist
    python benchmarks/train_fashion.py --comfyui /path/to/ComfyUI    # writes benchmarks/weights/fashion_*

Stages, in order (each saves its weights, so `--only` can redo one): the evaluator, the scoring CLIP, the VAE (TAESD
layout, trained as an autoencoder), the diffusion model (ComfyUI's own MMDiT module, rectified flow with SD3's time
shift, read through the checkpoint's CLIP-L as ComfyUI encodes the captions), the preview decoder (a TAESD decoder
distilled from the VAE's), then a check: one sample per class through ComfyUI's KSampler, classified by the evaluator.
Every draw comes from a torch.Generator per stage and the thread count is fixed, so a run reproduces the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from fashion_world import (
    CLASSES,
    FILES,
    SIZE,
    WEIGHTS,
    Evaluator,
    caption,
    checkpoint_state_dict,
    feature_stats,
    load_data,
    load_evaluator,
    save,
)
from safetensors.torch import load_file

THREADS = 2
STAGES = ("evaluator", "clip", "vae", "mmdit", "preview", "check")
DEFAULTS = {
    "evaluator": {"steps": 800, "batch": 128, "lr": 2e-3, "seed": 1},
    "clip": {"steps": 1500, "batch": 128, "lr": 1e-3, "seed": 2},
    "vae": {"steps": 400, "batch": 16, "lr": 1e-3, "latent_noise": 0.1, "latent_l2": 1e-3, "seed": 3},
    "mmdit": {"steps": 1500, "batch": 64, "lr": 1e-3, "caption_dropout": 0.1, "latents": 20000, "seed": 4},
    "preview": {"steps": 150, "batch": 16, "lr": 1e-3, "seed": 5},
    "check": {"steps": 20, "cfg": 4.0, "seed": 6},
}
OUT = WEIGHTS  # where the stages write (--out)
CLIP_TEMPLATES = ("a photo of a {}", "a {}", "a picture of a {}", "{}")


def log(stage: str, step: int, steps: int, loss: float, start: float) -> None:
    if step % max(1, steps // 10) == 0 or step == steps - 1:
        print(f"{stage:>9} {step + 1:5d}/{steps}  loss {loss:.4f}  {time.perf_counter() - start:6.0f} s", flush=True)


def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimiser step on `loss`; returns its value."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def init_(module: torch.nn.Module, gen: torch.Generator) -> torch.nn.Module:
    """PyTorch's default bounds (U(+-1/sqrt(fan_in))) drawn from `gen`: ComfyUI's layers skip their own init."""
    with torch.no_grad():
        for m in module.modules():
            for name in ("weight", "bias"):
                p = getattr(m, name, None)
                if isinstance(p, torch.nn.Parameter) and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    w = m.weight
                    bound = 1.0 / math.sqrt(w[0].numel())
                    p.uniform_(-bound, bound, generator=gen)
    return module


def shifted(x: torch.Tensor, gen: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Each image moved by up to `pixels` in x and y (zeros come in): the augmentation of the classifiers."""
    padded = F.pad(x, (pixels,) * 4)
    dx, dy = torch.randint(0, 2 * pixels + 1, (2, len(x)), generator=gen)
    return torch.stack([p[:, j: j + x.shape[2], i: i + x.shape[3]] for p, i, j in zip(padded, dx, dy)])


def train_evaluator(data, steps: int, batch: int, lr: float, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    x, y = data["evaluator"]
    model = init_(Evaluator(), gen).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        loss = F.cross_entropy(model(shifted(x[idx], gen)), y[idx])
        value = update(opt, loss)
        log("evaluator", step, steps, value, start)
    model.eval()
    hx, hy = data["heldout"]
    with torch.no_grad():
        feats = torch.cat([model.features(hx[i: i + 1000]) for i in range(0, len(hx), 1000)])
        accuracy = (model.head(feats).argmax(1) == hy).float().mean().item()
    mu, sigma = feature_stats(feats)
    sd = dict(model.state_dict(), **{"heldout.mu": mu.float(), "heldout.sigma": sigma.float()})
    save(sd, OUT / FILES["evaluator"])
    return {"heldout_accuracy": accuracy, "seconds": time.perf_counter() - start}


def train_clip(data, steps: int, batch: int, lr: float, seed: int) -> dict:
    """A CLIPModel (Radford et al., 2021) trained contrastively; a batch's captions of one class all count as its
    image's positives."""
    from transformers import CLIPModel, CLIPTokenizer

    from noise_search.tests.helpers.tiny_models import hf_clip_config, make_hf_processor
    from noise_search.verifiers.clip import _features
    from noise_search.verifiers.preprocess import OPENAI_MEAN, OPENAI_STD

    gen = torch.Generator().manual_seed(seed)
    folder = OUT / FILES["clip"]
    make_hf_processor(folder, image_size=32)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    config = hf_clip_config(image_size=32, projection_dim=32)
    for part in (config.text_config, config.vision_config):
        part.hidden_size, part.intermediate_size, part.num_attention_heads = 64, 128, 4
    config.vision_config.patch_size = 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.train()
    texts = [t.format(c) for c in CLASSES for t in CLIP_TEMPLATES]
    text_labels = torch.tensor([c for c in range(len(CLASSES)) for _ in CLIP_TEMPLATES])
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (OPENAI_MEAN, OPENAI_STD))
    x, y = data["generator"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        pick = y[idx] * len(CLIP_TEMPLATES) + torch.randint(len(CLIP_TEMPLATES), (batch,), generator=gen)
        out = model(input_ids=tokens.input_ids[pick], attention_mask=tokens.attention_mask[pick],
                    pixel_values=(shifted(x[idx], gen) - mean) / std)
        same = (y[idx][:, None] == text_labels[pick][None]).float()
        loss = 0.5 * (F.cross_entropy(out.logits_per_image, same / same.sum(1, keepdim=True))
                      + F.cross_entropy(out.logits_per_text, same.T / same.T.sum(1, keepdim=True)))
        value = update(opt, loss)
        log("clip", step, steps, value, start)
    model.eval()
    hx, hy = data["heldout"]
    with torch.no_grad():
        class_tokens = tokenizer([caption(c) for c in range(len(CLASSES))], padding=True, return_tensors="pt")
        text = F.normalize(_features(model.get_text_features(**class_tokens)), dim=-1)
        image = torch.cat([_features(model.get_image_features(pixel_values=(hx[i: i + 1000] - mean) / std))
                           for i in range(0, len(hx), 1000)])
        accuracy = ((F.normalize(image, dim=-1) @ text.T).argmax(1) == hy).float().mean().item()
    model.save_pretrained(str(folder))
    return {"heldout_zero_shot_accuracy": accuracy, "seconds": time.perf_counter() - start}


def taesd(latent_channels: int = 16):
    from comfy.taesd.taesd import TAESD

    return TAESD(latent_channels=latent_channels)


def train_vae(data, steps: int, batch: int, lr: float, latent_noise: float, latent_l2: float, seed: int) -> dict:
    """ComfyUI's TAESD module as the checkpoint's VAE: encoder and decoder trained together on pixels in [0, 1],
    with noise on the latents so the decoder takes imperfect samples; vae_scale then makes the latents unit-variance
    in SD3's latent space ((raw - 0.0609) * 1.5305, as ComfyUI's SD3 latent format maps them)."""
    gen = torch.Generator().manual_seed(seed)
    model = init_(taesd(), gen)
    enc, dec = model.taesd_encoder.train(), model.taesd_decoder.train()
    x, _ = data["generator"]
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=lr)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        z = enc(x[idx])
        out = dec(z + latent_noise * torch.randn(z.shape, generator=gen))
        loss = F.mse_loss(out, x[idx]) + 0.1 * F.l1_loss(out, x[idx]) + latent_l2 * z.pow(2).mean()
        value = update(opt, loss)
        log("vae", step, steps, value, start)
    with torch.no_grad():
        hx = data["heldout"][0][:1000]
        z = enc.eval()(hx)
        error = F.mse_loss(dec.eval()(z).clamp(0, 1), hx).item()
        std = z.std().item()
        model.vae_scale.fill_(1.5305 * std)
        model.vae_shift.fill_(0.0609)
    save({k: v.half() for k, v in model.state_dict().items()}, OUT / FILES["vae"])
    return {"heldout_mse": error, "latent_std": std, "seconds": time.perf_counter() - start}


def load_world_checkpoint(mmdit: dict, vae: dict):
    """The checkpoint as CheckpointLoaderSimple loads it: (model patcher, clip, vae)."""
    import comfy.sd

    with tempfile.TemporaryDirectory() as tmp:
        path = save(checkpoint_state_dict(mmdit, vae), Path(tmp) / "world.safetensors")
        model, clip, vae_, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return model, clip, vae_


def initial_mmdit(gen: torch.Generator) -> dict:
    """The MMDiT of tests/helpers/tiny_sd3 (depth 2, hidden 128), DiT's init: modulation and output layers zero."""
    from noise_search.tests.helpers.tiny_sd3 import HIDDEN, POS_EMBED_MAX, mmdit_spec, sincos_pos_embed

    sd = {"pos_embed": sincos_pos_embed(HIDDEN, POS_EMBED_MAX)}
    for key, shape in mmdit_spec():
        if "adaLN_modulation" in key or key.startswith("final_layer.linear") or key.endswith("bias"):
            sd[key] = torch.zeros(shape)
        else:
            sd[key] = torch.randn(shape, generator=gen) * math.sqrt(1.0 / shape[-1])
    return sd


def encode_captions(clip) -> tuple[torch.Tensor, torch.Tensor]:
    """Every class caption and the empty one (last), as CLIPTextEncode gives them: ([11, 77, 4096], [11, 2048])."""
    conds, pooled = [], []
    for text in [caption(c) for c in range(len(CLASSES))] + [""]:
        cond, pool = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        conds.append(cond)
        pooled.append(pool)
    return torch.cat(conds).float(), torch.cat(pooled).float()


def train_mmdit(data, steps: int, batch: int, lr: float, caption_dropout: float, latents: int, seed: int) -> dict:
    """Rectified flow (Liu et al., 2022) with SD3's logit-normal times and shift 3 (Esser et al., 2024), trained on
    ComfyUI's own MMDiT as the checkpoint builds it; the latents come from the trained VAE as VAE Encode gives them."""
    gen = torch.Generator().manual_seed(seed)
    vae_sd = load_file(str(OUT / FILES["vae"]))
    patcher, clip, vae = load_world_checkpoint(initial_mmdit(gen), vae_sd)
    model = patcher.model
    x, y = data["generator"]
    order = torch.randperm(len(x), generator=gen)[:latents]
    start = time.perf_counter()
    with torch.no_grad():
        z = torch.cat([model.process_latent_in(vae.encode(x[order[i: i + 500]].movedim(1, -1)))
                       for i in range(0, len(order), 500)]).float()
        cond, pooled = encode_captions(clip)
    labels = y[order]
    net = model.diffusion_model.float().train()
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    empty = len(CLASSES)
    for step in range(steps):
        idx = torch.randint(len(z), (batch,), generator=gen)
        x0 = z[idx]
        c = torch.where(torch.rand(batch, generator=gen) < caption_dropout, empty, labels[idx])
        t = torch.sigmoid(torch.randn(batch, generator=gen))
        sigma = 3.0 * t / (1.0 + 2.0 * t)
        eps = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1)
        out = net((1 - s) * x0 + s * eps, model.model_sampling.timestep(sigma), context=cond[c], y=pooled[c])
        loss = F.mse_loss(out.float(), eps - x0)
        value = update(opt, loss)
        sched.step()
        log("mmdit", step, steps, value, start)
    save({k: v.half() for k, v in net.state_dict().items()}, OUT / FILES["mmdit"])
    return {"latent_std": z.std().item(), "final_loss": value, "seconds": time.perf_counter() - start}


def train_preview(data, steps: int, batch: int, lr: float, seed: int) -> dict:
    """A TAESD decoder distilled from the VAE's: SD3-space latents in, the VAE's decoded pixels out, as ComfyUI's
    previewer (and the pack's "TAESD" scoring decode) use a models/vae_approx decoder."""
    gen = torch.Generator().manual_seed(seed)
    teacher = taesd()
    teacher.load_state_dict({k: v.float() for k, v in load_file(str(OUT / FILES["vae"])).items()})
    teacher.eval()
    student = init_(taesd().taesd_decoder, gen).train()
    x, _ = data["generator"]
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    scale, shift = teacher.vae_scale.item() / 1.5305, teacher.vae_shift.item()

    def latents_and_target(images):
        with torch.no_grad():
            raw = teacher.encode(images * 2 - 1)
            return (raw - shift) * 1.5305, teacher.decode(raw).add(1).div(2).clamp(0, 1)

    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        latent, target = latents_and_target(x[idx])
        loss = F.mse_loss(student(latent), target)
        value = update(opt, loss)
        log("preview", step, steps, value, start)
    with torch.no_grad():
        latent, target = latents_and_target(data["heldout"][0][:500])
        error = F.mse_loss(student.eval()(latent).clamp(0, 1), target).item()
    save({k: v.half() for k, v in student.state_dict().items()}, OUT / FILES["preview"])
    return {"heldout_mse_to_vae": error, "latent_scale": scale, "seconds": time.perf_counter() - start}


def check(data, steps: int, cfg: float, seed: int) -> dict:
    """One sample per class through ComfyUI's KSampler (euler, simple), classified by the evaluator."""
    import nodes

    patcher, clip, vae = load_world_checkpoint(load_file(str(OUT / FILES["mmdit"])),
                                               load_file(str(OUT / FILES["vae"])))
    evaluator, _ = load_evaluator(OUT)
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    correct = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for c in range(len(CLASSES)):
            positive = nodes.CLIPTextEncode().encode(clip, caption(c))[0]
            latent = {"samples": torch.zeros(1, 16, SIZE // 8, SIZE // 8)}
            out = nodes.common_ksampler(patcher, seed + c, steps, cfg, "euler", "simple", positive, negative, latent)[0]
            image = vae.decode(out["samples"]).movedim(-1, 1)
            correct += int(evaluator(image).argmax(1).item() == c)
    return {"class_accuracy_one_seed": correct / len(CLASSES), "seconds": time.perf_counter() - start}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    parser.add_argument("--only", nargs="+", choices=STAGES, help="these stages (default: all, in order)")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="write the weights here")
    parser.add_argument("--smoke", action="store_true", help="a few steps per stage: checks the script, trains nothing")
    args = parser.parse_args(argv)
    global OUT
    OUT = args.out.resolve()
    settings = {k: dict(v) for k, v in DEFAULTS.items()}
    if args.smoke:
        for name, stage in settings.items():
            if name != "check":
                stage["steps"] = 3
        settings["mmdit"]["latents"] = 200
    if args.comfyui is None or not (args.comfyui / "main.py").is_file():
        parser.error("point --comfyui (or COMFYUI_PATH) at a ComfyUI checkout")
    torch.set_num_threads(THREADS)
    from overhead_worker import start_comfy  # beside this script

    start_comfy(str(args.comfyui.resolve()))
    data = load_data()
    OUT.mkdir(parents=True, exist_ok=True)
    record_path = OUT / FILES["training"]
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    trainers = {"evaluator": train_evaluator, "clip": train_clip, "vae": train_vae, "mmdit": train_mmdit,
                "preview": train_preview, "check": check}
    for stage in args.only or STAGES:
        result = trainers[stage](data, **settings[stage])
        record[stage] = {"settings": settings[stage], **result}
        record["threads"], record["torch"] = THREADS, torch.__version__
        record_path.write_text(json.dumps(record, indent=1) + "\n")
        print(stage, json.dumps(result), flush=True)
    return record


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
