"""The scaling table on the trained Fashion-MNIST world, through the nodes: more steps against Random and the other
searches at 1x, 4x and 16x the NFEs of one sample, judged by the evaluator (accuracy on the prompted garment) and a
Frechet distance on its features to the held-out test images (issue 21).

    python benchmarks/train_fashion.py --comfyui /path/to/ComfyUI      # once, or use the committed weights
    python benchmarks/fashion_scaling.py --comfyui /path/to/ComfyUI --seeds 10 --json fashion_scaling.json

Each search is NoiseSearchSampler.execute in this ComfyUI process on the checkpoint CheckpointLoaderSimple loads,
scored by the scoring CLIP through Load Verifier, with the budgets and settings of benchmarks/scaling.py (the digits
table); "steps" is the stock KSampler with 1x, 4x, 16x the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from fashion_world import (
    CHECKPOINT,
    CLASSES,
    FILES,
    SIZE,
    caption,
    feature_stats,
    install,
    load_data,
    load_evaluator,
    mcnemar_one_sided,
)

from digits_models import frechet_from_stats

STEPS, CFG = 20, 1.0  # guidance 1.0 as the paper samples (and the digits table, and the e2e test)
METHODS = ("steps", "random", "zero_order", "paths", "smc", "trust_region", "evolution", "racing")
MULTIPLES = (1, 4, 16)


def node_inputs(algorithm: str, config: dict) -> dict:
    """benchmarks/scaling.py's search config as the sampler node's inputs (its names and encodings)."""
    from noise_search.nodes.settings import INPUT_NAMES

    names = INPUT_NAMES[algorithm]
    out = {}
    for param, value in config.items():
        if param == "max_rounds" and value is None:
            value = 0
        if isinstance(value, tuple):
            value = ", ".join(f"{v:g}" for v in value)
        out[names[param]] = value
    return out


def sample(world: dict, method: str, multiple: int, label: int, seed: int) -> tuple[torch.Tensor, int, float]:
    """One prompt's output image [1, H, W, 3], the NFEs spent and the verifier's score of it (nan for steps)."""
    import nodes
    from noise_search.nodes import NoiseSearchSampler

    from scaling import method_config

    positive = world["positive"][label]
    latent = {"samples": torch.zeros(1, 16, SIZE // 8, SIZE // 8)}
    steps, config = method_config(method, multiple, STEPS)
    if method == "steps":
        out = nodes.common_ksampler(world["model"], seed, steps, CFG, "euler", "simple", positive,
                                    world["negative"], latent)[0]
        return world["vae"].decode(out["samples"]), steps, float("nan")
    algorithm = method
    report = NoiseSearchSampler.execute(
        world["model"], positive, world["negative"], latent, seed, steps, CFG, "euler", "simple", 1.0,
        world["vae"], world["verifier"], caption(label), algorithm=algorithm, budget_nfe=STEPS * multiple, top_k=1,
        **{k: v for k, v in node_inputs(algorithm, config).items() if k != "budget_nfe"}).args
    result = report[4].results[0]
    best = next(c for c in result.candidates if c.id == result.best_id)
    return report[1], result.nfe, best.score


def real_floor(evaluator, reference: dict, per_class: int, draws: int = 20, seed: int = 0) -> dict:
    """What real garments score at a row's sample size: `draws` balanced sets of `per_class` held-out test images
    per class, their Frechet distance to the whole held-out set (mean, sd) and the evaluator's accuracy; a Frechet
    distance over few samples in 64 dimensions is biased upwards, and this is the size of that bias and its noise."""
    images, labels = load_data()["heldout"]
    gen = torch.Generator().manual_seed(seed)
    ref = [reference[k].double().numpy() for k in ("mu", "sigma")]
    by_class = [torch.nonzero(labels == c)[:, 0] for c in range(len(CLASSES))]
    values, accuracies = [], []
    for _ in range(draws):
        idx = torch.cat([i[torch.randperm(len(i), generator=gen)[:per_class]] for i in by_class])
        with torch.no_grad():
            feats = evaluator.features(images[idx])
            accuracies.append((evaluator.head(feats).argmax(1) == labels[idx]).float().mean().item())
        values.append(frechet_from_stats(*(t.numpy() for t in feature_stats(feats)), *ref))
    v = torch.tensor(values)
    return {"samples": len(CLASSES) * per_class, "draws": draws, "frechet_mean": v.mean().item(),
            "frechet_sd": v.std().item(), "eval_accuracy": sum(accuracies) / draws}


def run(world: dict, evaluator, reference: dict, methods: Sequence[str], multiples: Sequence[int],
        seeds: Sequence[int], log=print) -> list:
    rows = []
    for multiple in multiples:
        for method in methods:
            if method == "paths" and multiple == 1:
                continue  # unbranched Paths (the digits table's 1x row) has no node setting: 0 rounds means no limit
            start = time.perf_counter()
            images, labels, spent, scores = [], [], [], []
            for label in range(len(CLASSES)):
                for seed in seeds:
                    image, nfe, score = sample(world, method, multiple, label, seed)
                    images.append(image[0].movedim(-1, 0).float().cpu())
                    labels.append(label)
                    spent.append(nfe)
                    scores.append(score)
            x = torch.stack(images)
            with torch.no_grad():
                feats = evaluator.features(x)
                correct = evaluator.head(feats).argmax(1) == torch.tensor(labels)
            accuracy = correct.float().mean().item()
            mu, sigma = feature_stats(feats)
            row = {"method": method, "multiple": multiple, "budget_nfe": STEPS * multiple,
                   "nfe_spent": sum(spent) / len(spent), "verifier_score": sum(scores) / len(scores),
                   "eval_accuracy": accuracy, "frechet": frechet_from_stats(*(t.double().numpy() for t in (
                       mu, sigma, reference["mu"], reference["sigma"]))),
                   "correct": correct.tolist(),
                   "samples": len(images), "seconds": time.perf_counter() - start}
            if row["nfe_spent"] > row["budget_nfe"]:
                raise RuntimeError(f"{method} at {multiple}x spent {row['nfe_spent']} NFEs over {row['budget_nfe']}")
            rows.append(row)
            log(f"{method:<12} {multiple:>3}x  nfe {row['nfe_spent']:6.1f}  acc {accuracy:.3f}  "
                f"frechet {row['frechet']:7.2f}  {row['seconds']:5.0f} s")
    return rows


def table(rows: Sequence[dict]) -> str:
    """The README's tables. A row per method, a column per budget: evaluator accuracy / Frechet distance (and the
    NFEs spent where under budget). Then each against the plain sample (steps at 1x) of the same prompt and seed:
    the pairs where only the method's image shows the prompted garment : only the plain one, and McNemar's p."""
    multiples = sorted({r["multiple"] for r in rows})
    at = {(r["method"], r["multiple"]): r for r in rows}
    plain = at.get(("steps", 1))
    head = "| method | " + " | ".join(f"{m}× ({STEPS * m} NFE)" for m in multiples) + " |"
    rule = "|---" * (len(multiples) + 1) + "|"
    scores, paired = [head, rule], [head, rule]
    for method in [m for m in METHODS if any(r["method"] == m for r in rows)]:
        score_cells, pair_cells = [], []
        for m in multiples:
            r = at.get((method, m))
            if r is None:
                score_cells.append("—")
                pair_cells.append("—")
                continue
            spent = f" ({r['nfe_spent']:g} NFE)" if r["nfe_spent"] < r["budget_nfe"] else ""
            score_cells.append(f"{r['eval_accuracy']:.2f} / {r['frechet']:.1f}{spent}")
            if plain is None or len(plain["correct"]) != len(r["correct"]):
                pair_cells.append("—")
                continue
            better = sum(a and not b for a, b in zip(r["correct"], plain["correct"]))
            worse = sum(b and not a for a, b in zip(r["correct"], plain["correct"]))
            p = mcnemar_one_sided(better, worse)
            pair_cells.append(f"{better}:{worse} (p {p:.3f})" if p >= 0.001 else f"{better}:{worse} (p < 0.001)")
        scores.append(f"| {method} | " + " | ".join(score_cells) + " |")
        paired.append(f"| {method} | " + " | ".join(pair_cells) + " |")
    return "\n".join(scores + ["", "against the plain sample, pairs better:worse (one-sided p):", ""] + paired)


def load_world(base: Path) -> dict:
    import nodes
    from noise_search.nodes import NoiseSearchVerifierLoader

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT)[:3]
    verifier = NoiseSearchVerifierLoader.execute("clip_score", str(base / "models" / "verifiers" / FILES["clip"]),
                                                 "auto", "auto", False, "", "").args[0]
    encode = nodes.CLIPTextEncode().encode
    return {"model": model, "vae": vae, "verifier": verifier, "negative": encode(clip, "")[0],
            "positive": [encode(clip, caption(c))[0] for c in range(len(CLASSES))]}


def main(argv: Optional[list] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--multiples", type=int, nargs="+", default=list(MULTIPLES))
    parser.add_argument("--seeds", type=int, default=10, help="seeds per class")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    if args.comfyui is None or not (args.comfyui / "main.py").is_file():
        parser.error("point --comfyui (or COMFYUI_PATH) at a ComfyUI checkout")
    json_path = args.json.resolve() if args.json else None
    from overhead_worker import start_comfy  # beside this script

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        install(base / "models")
        start_comfy(str(args.comfyui.resolve()), str(base))
        with torch.inference_mode():
            evaluator, reference = load_evaluator()
            rows = run(load_world(base), evaluator, reference, args.methods, args.multiples, range(args.seeds))
            real = real_floor(evaluator, reference, args.seeds)
    print(table(rows))
    print(f"real test images, {real['samples']} per set ({real['draws']} sets): accuracy {real['eval_accuracy']:.3f}, "
          f"Frechet {real['frechet_mean']:.1f} (sd {real['frechet_sd']:.1f})")
    out = {"rows": rows, "real": real}
    if json_path:
        json_path.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
