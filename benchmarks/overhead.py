"""Where a noise search's time and memory go: what it should spend is NFEs, everything else is overhead.

    python benchmarks/overhead.py                  # full run (full_plan): a day on 2 CPU cores, see below
    python benchmarks/overhead.py --quick          # 3 to 5 minutes on 2 cores (QUICK)
    python benchmarks/overhead.py --smoke          # under a minute: tiny models, for the tests (SMOKE)
    python benchmarks/overhead.py --video          # the video rows (VIDEO): a Wan 2.1-class clip on the CPU
    python benchmarks/overhead.py --json out.json  # also write the rows
    python benchmarks/overhead.py --decode "full VAE" --algorithms random paths --no-memory --steps 20 --size 512
    python benchmarks/overhead.py --models sd15 --no-memory                     # only SD1.5's rows (with CUDA)
    python benchmarks/overhead.py --memory-only --memory-model sd15 --memory-size 512   # the memory row alone

ComfyUI comes from --comfyui (default $COMFYUI_PATH). Every configuration runs in a fresh ComfyUI process
(overhead_worker.py) with models of the real size and ComfyUI's own classes, random weights
(overhead_models.py): SD1.5's UNet at 512 px on the CPU, SDXL's and Flux's at 1024 px only where CUDA is present,
ComfyUI's VAE class from a random AutoencoderKL state dict, and a clip_score verifier (a random CLIP ViT-L/14 folder
as the hub ships it; ViT-B/32 in --quick) loaded through the pack's Load Verifier node. Conditioning is random of
the real shape ([1, 77, 768] for SD1.5). The search runs through NoiseSearchSampler.execute (CFGGuider, the node's
own code path) with the node's defaults (20 steps, cfg 8 (Flux 1), euler, simple, 4 candidates, batch_size auto,
every algorithm's own defaults), once per scoring_decode: "full VAE", "TAESD for x0 previews" (only what is scored
before sigma 0 goes through TAESD: Paths and SMC) and "TAESD for all". Each process builds its models (and a random
TAESD decoder in its base directory's models/vae_approx, where ComfyUI's previewer looks), then, in inference mode
as ComfyUI runs a prompt, warms up (one stock step, one decode, one score), resets its RSS high-water mark and
measures.

Cost: the seven algorithms at the node's defaults spend 1784 NFEs (random 80, zero_order 340, paths 500, smc 104,
trust_region 400, evolution 320, racing 40), three times over for the three decodes, the stock run 80; an SD1.5
CFG pair at 512 px takes 10-20 s on 2 CPU cores, and the memory row about 1 s per candidate there. --algorithms,
--decode, --steps, --size and --no-memory cut it down.

Row values:
- nfe: NFEs the search spent (a CFG pair is one; Heun would count 2 per step); checked equal to its plan.
- seconds: wall time of the node's execute, CUDA synchronised.
- model_share: time inside the diffusion model's forward (forward hooks); decode_share: the Scorer's decode and
  decode_preview (VAE or TAESD decode of candidates, NaN checks, copy to the CPU; the winners' full VAE decode after
  a TAESD search included); verify_share: the Scorer's score (loading the verifier
  through ComfyUI's model management, then scoring); other_share: the rest (noise, sampler arithmetic, search
  bookkeeping, reloading the diffusion model after scoring, outputs and report). The four sum to 1.
- ratio_to_stock: seconds / stock seconds for the same NFEs. Stock is what a user without this pack runs: ComfyUI's
  KSampler (nodes.common_ksampler -> comfy.sample.sample) with the same model, conditioning, sampler, scheduler,
  steps, cfg and latent size on a latent batch of B rows, B = the search's batch size as it resolved (batch_size
  auto included) but at most its candidates, then VAE Decode of ONE image: the one image the user keeps, as the
  search outputs one. One such run is measured per model: stock seconds(nfe) = sampling seconds / (B x NFEs of one
  trajectory) x nfe + that one decode's seconds. The stock row itself shows the measured run (ratio 1).
- peak_rss_mb: the process's peak resident memory during the measured run (VmHWM after a reset, Linux; elsewhere
  ru_maxrss, which also counts building the models). On a CPU run it includes every weight (SD1.5 fp32 3.3 GiB,
  CLIP ViT-L/14 1.6 GiB, the VAE 0.3 GiB).

The memory row is a Random search over 4096 candidates (the node's maximum) at full output resolution, 1024 px,
1 step, full VAE decode: every model is tiny so what the search keeps per candidate dominates. With CUDA it is an
SD1.5-class UNet (SD1.5's blocks at one level) with the real SD VAE: SD latents, 256 KiB each. At 1024 px every real
latent decoder costs half a TFLOP or more per image (hours for 4096 on a CPU), so without CUDA the row uses ComfyUI's
pixel-space classes instead: a small Chroma Radiance transformer and the pixel-space VAE (decode is free, but the
latents are full-size images, 12 MiB each in fp32; --memory-model picks either, --memory-size the resolution: on an
H100 the 4096 VAE decodes at 1024 px take over 5 minutes). The tests' tiny CLIP scores, through the same loader. The
target is < 4 GB of host RAM; a run that passes --rss-cap-mb (default 8192: the machine may be shared) is stopped and
reported as aborted. The printed device line gives each process's RSS before measuring (CUDA's libraries alone hold
about 2 GB of it). The video memory row (--video) searches clips of the one-block Wan 2.1-class model with the real
Wan VAE: with CUDA 64 clips of 81 frames at 640 px (832 x 480 has as many pixels), the issue's "64 candidates of 81
frames at 480p"; without, 16 clips of 17 frames at 128 px (--memory-candidates, --memory-size and --memory-frames
change it: the Wan VAE decodes an 81-frame 640 px clip in minutes on a CPU).

JSON rows have exactly the keys in KEYS; `algorithm` is "<model>:<algorithm>" ("sd15:random", "sd15:stock",
"memory:random"); an aborted row has null for what it did not measure, a failed row (an error, a timeout, NFEs off
the plan) null for everything but its labels: the table says why, the other rows still run, and the script exits
non-zero naming the failed rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

BENCH = Path(__file__).resolve().parent
WORKER = BENCH / "overhead_worker.py"
KEYS = ("algorithm", "decode", "nfe", "seconds", "model_share", "decode_share", "verify_share", "other_share",
        "ratio_to_stock", "peak_rss_mb")
ALGORITHMS = ("random", "zero_order", "paths", "smc", "trust_region", "evolution", "racing")
FULL_VAE, TAESD_X0, TAESD_ALL = "full VAE", "TAESD for x0 previews", "TAESD for all"
DECODES = (FULL_VAE, TAESD_X0, TAESD_ALL)  # the sampler's scoring_decode values; the first is its default
STOCK_DECODE = FULL_VAE  # a stock user decodes with the VAE


@dataclass(frozen=True)
class Config:
    """One model configuration: which model, its size and sampler settings, the node inputs every search gets."""

    arch: str
    size: int
    steps: int
    clip: str
    sampler: str = "euler"
    scheduler: str = "simple"
    settings: dict = field(default_factory=dict)  # node inputs beyond algorithm (candidates, batch_size, ...)
    label: Optional[str] = None  # the JSON prefix; the arch by default
    frames: int = 0  # a video model's frames per clip (0: the arch's own)

    @property
    def name(self) -> str:
        return self.label or self.arch


@dataclass(frozen=True)
class Plan:
    configs: tuple
    runs: tuple  # (algorithm, scoring decode) pairs searched on every config
    memory: Optional[Config]


def every(algorithms: tuple, decodes: tuple) -> tuple:
    return tuple((a, d) for a in algorithms for d in decodes)


# the memory row's models: pixel-space Chroma Radiance (decodes for free; its latents are images), the SD1.5-class
# UNet at one level with the real SD VAE (latents 1/48 of the image; 4096 decodes at 1024 px need a GPU), or the
# one-block Wan 2.1-class model with the real Wan VAE (video clips)
MEMORY_MODELS = {"radiance": "tiny_radiance", "sd15": "tiny_sd15", "wan": "tiny_wan"}


def memory_config(model: str, candidates: int, size: int = 1024, frames: int = 0) -> Config:
    return Config(MEMORY_MODELS[model], size, 1, "tiny", settings={"candidates": candidates}, label="memory",
                  frames=frames)


def full_plan(cuda: bool) -> Plan:
    """SD1.5 at 512 px (SDXL and Flux at 1024 px with CUDA), the node's defaults, every algorithm with every scoring
    decode; the 4096-candidate memory row (SD latents with CUDA, pixel space without)."""
    configs = [Config("sd15", 512, 20, "vit-l-14")]
    if cuda:
        configs += [Config("sdxl", 1024, 20, "vit-l-14"), Config("flux", 1024, 20, "vit-l-14")]
    return Plan(tuple(configs), every(ALGORITHMS, DECODES), memory_config("sd15" if cuda else "radiance", 4096))


QUICK = Plan((Config("sd15", 128, 3, "vit-b-32", settings={"candidates": 2}),),
             ((("random", FULL_VAE), ("random", TAESD_ALL), ("smc", FULL_VAE), ("smc", TAESD_X0))),
             memory_config("radiance", 16))
# video: a Wan 2.1-layout model with one block and the real-size Wan VAE, 17 frames at 128 px on the CPU; every
# candidate's clip is decoded whole to be scored, which is what a video search adds to sampling. Its memory row:
# 64 clips of 81 frames at 640 px (the pixels of 832 x 480) with CUDA, 16 clips of 17 frames at 128 px without.
VIDEO = Plan((Config("tiny_wan", 128, 20, "vit-b-32", settings={"candidates": 4}, label="video"),),
             (("random", FULL_VAE), ("racing", FULL_VAE)), memory_config("wan", 16, 128, frames=17))
VIDEO_MEMORY_CUDA = memory_config("wan", 64, 640, frames=81)
SMOKE = Plan((Config("tiny_sd15", 64, 2, "tiny", settings={"candidates": 3}),),
             (("random", FULL_VAE), ("evolution", FULL_VAE), ("smc", TAESD_X0), ("random", TAESD_ALL)),
             memory_config("radiance", 6, size=256))


def run_worker(job: dict, comfyui: Path, timeout: Optional[float], log=print) -> dict:
    """One configuration in a fresh process (cwd: the ComfyUI checkout); its RESULT line as a dict, or
    {"failed": reason} (the worker's output tail goes to `log`) so one failing row never loses the others."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        proc = subprocess.run([sys.executable, str(WORKER), json.dumps(job)], cwd=comfyui, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len("RESULT "):])
    log(f"worker failed ({proc.returncode}) for {job}:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}")
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    return {"failed": errors[-1] if errors else f"worker exited {proc.returncode} without a result"}


def job_for(config: Config, mode: str, cache: Path, comfyui: Path, **extra) -> dict:
    """What overhead_worker.py runs: the model configuration, the search or stock mode, where the files live."""
    return {"comfyui": str(comfyui), "mode": mode, "arch": config.arch, "size": config.size, "frames": config.frames,
            "steps": config.steps,
            "sampler": config.sampler, "scheduler": config.scheduler, "clip": config.clip,
            "clip_dir": str(cache / f"clip-{config.clip}"), "settings": dict(config.settings),
            "base_dir": str(cache / "comfy_base"), "default_decode": DECODES[0], **extra}


def stock_seconds(stock: dict, nfe: int) -> float:
    """What stock ComfyUI spends on `nfe` NFEs and keeping one image (see the module docstring)."""
    return stock["sampling_s"] / stock["nfe"] * nfe + stock["decode_s"]


def make_row(label: str, decode: str, result: dict, stock: Optional[dict]) -> dict:
    """A JSON row (exactly KEYS) from a worker's result; null for what a failed or aborted run did not measure."""
    if "failed" in result:
        return {**dict.fromkeys(KEYS), "algorithm": label, "decode": decode}
    if result.get("aborted"):
        return {**dict.fromkeys(KEYS), "algorithm": label, "decode": decode,
                "peak_rss_mb": round(result["peak_rss_mb"], 1)}
    seconds = result["seconds"]
    parts = {k: result[f"{k}_s"] / seconds for k in ("model", "decode", "verify")}
    parts["other"] = 1.0 - sum(parts.values())
    usable_stock = stock is not None and "failed" not in stock
    row = {"algorithm": label, "decode": decode, "nfe": int(result["nfe"]), "seconds": round(seconds, 3),
           **{f"{k}_share": round(v, 4) for k, v in parts.items()},
           "ratio_to_stock": round(seconds / stock_seconds(stock, result["nfe"]), 3) if usable_stock else None,
           "peak_rss_mb": round(result["peak_rss_mb"], 1)}
    return {k: row[k] for k in KEYS}


def check_nfe(result: dict) -> dict:
    """The result, or a failure where the search spent other NFEs than it planned."""
    if "failed" in result or result.get("aborted") or result["nfe"] == result["nfe_planned"]:
        return result
    return {"failed": f"spent {result['nfe']} NFEs, planned {result['nfe_planned']}"}


def measure(plan: Plan, comfyui: Path, cache: Path, rss_cap_mb: float, timeout: Optional[float] = None,
            log=print) -> list[tuple[dict, dict]]:
    """(row, worker result) for every row of the plan: per model each (algorithm, decode) run, then its stock run;
    then the memory row. A failed run is a row of nulls whose result says why; the others still run."""
    out = []
    for config in plan.configs:
        searched = []
        for algorithm, decode in plan.runs:
            job = job_for(config, "search", cache, comfyui, algorithm=algorithm, decode=decode)
            log(f"  {config.name} {algorithm} ({decode}) ...")
            searched.append((algorithm, decode, check_nfe(run_worker(job, comfyui, timeout, log))))
        stocks = {}
        for b in sorted({r["rows"] for _, _, r in searched if "rows" in r}):
            log(f"  {config.name} stock KSampler, batch {b} ...")
            stocks[b] = run_worker(job_for(config, "stock", cache, comfyui, rows=b), comfyui, timeout, log)
        out += [(make_row(f"{config.name}:{a}", d, r, stocks.get(r.get("rows"))), r) for a, d, r in searched]
        out += [(make_row(f"{config.name}:stock", STOCK_DECODE, s, s), s) for s in stocks.values()]
    if plan.memory is not None:
        config = plan.memory
        clips = f"clips of {config.frames} frames" if config.frames else "candidates"
        log(f"  memory: random over {config.settings['candidates']} {clips} at {config.size} px ({config.arch}) ...")
        job = job_for(config, "search", cache, comfyui, algorithm="random", decode=FULL_VAE, rss_cap_mb=rss_cap_mb,
                      stock_after=True)
        result = check_nfe(run_worker(job, comfyui, timeout, log))
        out.append((make_row(f"{config.name}:random", FULL_VAE, result, result.get("stock")), result))
    return out


def table(measured: list[tuple[dict, dict]]) -> str:
    """The rows as a fixed-width table (percentages for the shares), each failed or aborted row saying why."""
    head = ("algorithm", "decode", "NFE", "seconds", "model", "decode", "verify", "other", "x stock", "peak RSS MB")
    lines = ["  ".join(f"{h:>11}" if i > 1 else f"{h:<22}" for i, h in enumerate(head))]

    def cell(value, fmt):
        return f"{'-':>11}" if value is None else f"{value:>11{fmt}}"

    for r, result in measured:
        cells = [f"{r['algorithm']:<22}", f"{r['decode']:<22}", cell(r['nfe'], 'd'), cell(r['seconds'], '.1f')]
        cells += [cell(None if r[k] is None else 100 * r[k], ".1f") for k in KEYS[4:8]]
        cells += [cell(r["ratio_to_stock"], ".2f"), cell(r["peak_rss_mb"], ".0f")]
        if "failed" in result:
            cells.append(f"  FAILED: {result['failed']}")
        elif result.get("aborted"):
            cells.append("  ABORTED: RSS passed the cap")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Optional[list] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="SD1.5 at 128 px, 3 steps, 2 candidates, CLIP ViT-B/32: "
                                                           "random (full VAE, TAESD for all), smc (full VAE, TAESD "
                                                           "for x0 previews); memory row with 16 candidates")
    mode.add_argument("--smoke", action="store_true", help="tiny models, seconds per row (for the tests)")
    mode.add_argument("--video", action="store_true", help="the video rows: a one-block Wan 2.1-class model with the "
                                                           "real Wan VAE, 17 frames at 128 px, random and racing")
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"),
                        help="ComfyUI checkout (default: $COMFYUI_PATH)")
    parser.add_argument("--json", type=Path, help="write the rows to this file")
    parser.add_argument("--decode", nargs="+", choices=DECODES,
                        help="scoring_decode values (with --algorithms: every pair) instead of the plan's runs")
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS,
                        help="algorithms (with --decode: every pair) instead of the plan's runs")
    parser.add_argument("--memory-model", choices=tuple(MEMORY_MODELS),
                        help="the memory row's model instead of the plan's (sd15 needs a GPU to finish)")
    parser.add_argument("--models", nargs="+", choices=("sd15", "sdxl", "flux"),
                        help="only these of the plan's models (sdxl and flux are planned only with CUDA)")
    parser.add_argument("--size", type=int, help="image size in px of every model row instead of the plan's")
    parser.add_argument("--steps", type=int, help="steps of every model row instead of the plan's")
    parser.add_argument("--memory-candidates", type=int, help="candidates of the memory row instead of the plan's")
    parser.add_argument("--memory-size", type=int, help="image size in px of the memory row instead of the plan's")
    parser.add_argument("--memory-frames", type=int, help="frames per clip of a video memory row (--memory-model wan)")
    memory = parser.add_mutually_exclusive_group()
    memory.add_argument("--no-memory", action="store_true", help="leave out the memory row")
    memory.add_argument("--memory-only", action="store_true", help="only the memory row")
    parser.add_argument("--rss-cap-mb", type=float, default=8192.0, help="stop a run whose RSS passes this")
    parser.add_argument("--cache", type=Path, help="keep the random CLIP folders here between runs")
    parser.add_argument("--timeout", type=float, help="seconds one configuration may take")
    args = parser.parse_args(argv)
    if args.comfyui is None or not (args.comfyui / "main.py").is_file():
        parser.error("point --comfyui (or COMFYUI_PATH) at a ComfyUI checkout")
    plan = SMOKE if args.smoke else QUICK if args.quick else VIDEO if args.video else full_plan(cuda_available())
    if args.video and cuda_available():
        plan = replace(plan, memory=VIDEO_MEMORY_CUDA)
    if args.algorithms or args.decode:
        algorithms = tuple(args.algorithms or dict.fromkeys(a for a, _ in plan.runs))
        plan = replace(plan, runs=every(algorithms, tuple(args.decode or dict.fromkeys(d for _, d in plan.runs))))
    if args.models:
        plan = replace(plan, configs=tuple(c for c in plan.configs if c.arch in args.models))
        if not plan.configs:
            parser.error(f"the plan has none of the models {args.models}")
    overrides = {k: v for k, v in (("size", args.size), ("steps", args.steps)) if v}
    plan = replace(plan, configs=tuple(replace(c, **overrides) for c in plan.configs))
    if plan.memory is not None and (args.memory_candidates or args.memory_model or args.memory_size
                                    or args.memory_frames):
        candidates = args.memory_candidates or plan.memory.settings["candidates"]
        model = args.memory_model or next(k for k, v in MEMORY_MODELS.items() if v == plan.memory.arch)
        plan = replace(plan, memory=memory_config(model, candidates, args.memory_size or plan.memory.size,
                                                  args.memory_frames or plan.memory.frames))
    if args.no_memory:
        plan = replace(plan, memory=None)
    if args.memory_only:
        plan = replace(plan, configs=())
    with tempfile.TemporaryDirectory(prefix="noise_search_overhead_") as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        print(f"plan: {', '.join(f'{c.name} {c.size}px {c.steps} steps {c.settings}' for c in plan.configs)}; "
              f"runs {', '.join(f'{a} ({d})' for a, d in plan.runs) if plan.configs else 'none'}; memory row "
              f"{'none' if plan.memory is None else (plan.memory.arch, plan.memory.settings)}", flush=True)
        measured = measure(plan, args.comfyui.resolve(), cache, args.rss_cap_mb, args.timeout)
    for name, info in {row["algorithm"].split(":")[0]: info for row, info in measured if "device" in info}.items():
        print(f"{name}: device {info['device']}, model dtype {info['dtype']}, torch threads {info['threads']}, "
              f"RSS before measuring {info.get('base_rss_mb') or 0:.0f} MB")
    rows = [row for row, _ in measured]
    print(table(measured))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    failed = [row["algorithm"] + f" ({row['decode']})" for row, info in measured if "failed" in info]
    if failed:
        sys.exit(f"{len(failed)} of {len(rows)} rows failed: {', '.join(failed)} (their errors are above)")
    return rows


if __name__ == "__main__":
    main()
