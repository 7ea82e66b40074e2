"""How much a fast scoring decode changes the ranking: the same Random search scored through the full VAE and through
a `scoring_decode` preview mode, compared by rank correlation (issue 12). Needs trained weights to mean anything.

    python benchmarks/rank_agreement.py --comfyui /path/to/ComfyUI --checkpoint v1-5-pruned-emaonly.safetensors \\
        --verifier-model clip-vit-large-patch14 --candidates 32 --json agreement.json

Both runs go through NoiseSearchSampler.execute with the same seed, so they sample the same candidates (the JSON says
how far their latents differ: 0 on a CPU) and differ only in the decode the verifier scored. Per prompt: Spearman's
rho and Kendall's tau-b between the two score lists, whether the winner is the same, and the overlap of the top 4.
The checkpoint comes from the ComfyUI models folder (--base-directory to use another), the TAESD decoder from
models/vae_approx as ComfyUI's previewer finds it, the verifier through the pack's Load Verifier.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Optional, Sequence

from _pack import load_pack  # beside this script

load_pack()

from noise_search.search.stats import ranks, spearman  # noqa: E402, F401 (ranks: part of this script's statistics)

PROMPTS = ("a photograph of an astronaut riding a horse", "a red cube on top of a blue sphere",
           "a watercolor painting of a lighthouse at dusk", "two cats sleeping on a sofa")
FULL_VAE = "full VAE"
TOP = 4


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (tie-corrected), O(n^2): lists here hold tens of candidates."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom else float("nan")


def agreement(full: Sequence[float], fast: Sequence[float], top: int = TOP) -> dict:
    """Rank agreement of two score lists over the same candidates (higher is better in both)."""
    best = lambda s: sorted(range(len(s)), key=lambda i: (-s[i], i))  # noqa: E731
    k = min(top, len(full))
    return {"spearman": spearman(full, fast), "kendall": kendall(full, fast),
            "same_winner": best(full)[0] == best(fast)[0],
            f"top{top}_overlap": len(set(best(full)[:k]) & set(best(fast)[:k])) / k}


def run(args: argparse.Namespace) -> dict:
    """Both searches per prompt inside this ComfyUI process; the JSON-safe result."""
    import torch

    import nodes
    from noise_search.nodes import NoiseSearchSampler, NoiseSearchVerifierLoader

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(args.checkpoint)[:3]
    verifier = NoiseSearchVerifierLoader.execute(args.verifier_kind, args.verifier_model, "auto", "auto", False, "",
                                                 "").args[0]
    if not isinstance(vae.downscale_ratio, int):
        raise SystemExit(f"{args.checkpoint}: its VAE is not an image VAE (downscale {vae.downscale_ratio})")
    shape = (1, vae.latent_channels, args.size // vae.downscale_ratio, args.size // vae.downscale_ratio)
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    out = {"checkpoint": args.checkpoint, "verifier": verifier.name, "decode": args.decode,
           "candidates": args.candidates, "steps": args.steps, "size": args.size, "prompts": []}
    for prompt in args.prompts:
        positive = nodes.CLIPTextEncode().encode(clip, prompt)[0]
        scores, latents = {}, {}
        for decode in (FULL_VAE, args.decode):
            report = NoiseSearchSampler.execute(
                model, positive, negative, {"samples": torch.zeros(shape)}, args.seed, args.steps, args.cfg,
                args.sampler, args.scheduler, 1.0, vae, verifier, prompt, algorithm="random",
                candidates=args.candidates, top_k=1, scoring_decode=decode).args[4]
            finals = sorted((c for c in report.results[0].candidates if c.final), key=lambda c: c.id)
            scores[decode] = [c.score for c in finals]
            latents[decode] = torch.stack([report.latents[0][c.id] for c in finals]).float()
        row = {"prompt": prompt, "full": scores[FULL_VAE], "fast": scores[args.decode],
               "latent_max_diff": float((latents[FULL_VAE] - latents[args.decode]).abs().max()),
               **agreement(scores[FULL_VAE], scores[args.decode])}
        out["prompts"].append(row)
        print(f"{prompt[:40]:<40}  rho {row['spearman']:+.3f}  tau {row['kendall']:+.3f}  same winner "
              f"{row['same_winner']}  top{TOP} overlap {row[f'top{TOP}_overlap']:.2f}", flush=True)
    for key in ("spearman", "kendall", f"top{TOP}_overlap"):
        out[f"mean_{key}"] = sum(r[key] for r in out["prompts"]) / len(out["prompts"])
    out["same_winner_share"] = sum(r["same_winner"] for r in out["prompts"]) / len(out["prompts"])
    return out


def main(argv: Optional[list] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout")
    parser.add_argument("--base-directory", help="ComfyUI base directory holding models/ (default: the checkout)")
    parser.add_argument("--checkpoint", required=True, help="a file in models/checkpoints")
    parser.add_argument("--verifier-kind", default="clip_score", help="Load Verifier's kind")
    parser.add_argument("--verifier-model", required=True, help="Load Verifier's model (name or folder)")
    parser.add_argument("--decode", default="TAESD for all", help="the scoring_decode compared with the full VAE")
    parser.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default="simple")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    json_path = args.json.resolve() if args.json else None  # ComfyUI runs with its checkout as cwd
    base = str(Path(args.base_directory).resolve()) if args.base_directory else None
    if Path(args.verifier_model).exists():
        args.verifier_model = str(Path(args.verifier_model).resolve())
    from overhead_worker import start_comfy  # beside this script, on sys.path when it runs

    start_comfy(str(args.comfyui.resolve()), base)
    import torch

    with torch.inference_mode():
        result = run(args)
    print(f"mean over {len(result['prompts'])} prompts: rho {result['mean_spearman']:+.3f}, tau "
          f"{result['mean_kendall']:+.3f}, same winner {result['same_winner_share']:.0%}, top{TOP} overlap "
          f"{result[f'mean_top{TOP}_overlap']:.2f}")
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
