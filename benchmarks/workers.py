"""Throughput of a search spread over Ray workers against the same search in one process, as a ratio.

    python benchmarks/workers.py --url http://127.0.0.1:8188 --checkpoint v1-5-pruned-emaonly.safetensors \\
        --verifier-model clip-vit-large-patch14 --workers 1 2 --gpus-per-worker 0.5 --json workers.json

It queues the same Random search on a running ComfyUI (with this pack and Ray installed) over HTTP: once without
workers, then with each --workers count (Noise Search Workers, a local Ray, --gpus-per-worker each; 0 = CPU-only
workers). Per row: the node's seconds, the seconds until the workers were ready (Ray started, ComfyUI booted in
each, the workflow run up to the search), the search's own seconds (the difference), and the ratios of the
one-process seconds to the row's: `search_ratio` (the search alone: above 1 = faster) and `total_ratio` (start-up
included). Every row must find the same winner; the script exits non-zero where one does not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Optional

READY = re.compile(r"workers ready in ([0-9.]+) s")


def post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"POST {path} answered {e.code}: {e.read().decode(errors='replace')}") from e


def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return json.loads(response.read())


def defaults(url: str, node_class: str) -> dict:
    """A node's required inputs at their defaults (the first option of a list), from the server's /object_info."""
    spec = get(url, f"/object_info/{node_class}")[node_class]["input"]["required"]
    out = {}
    for name, (kind, *options) in spec.items():
        if isinstance(kind, list):
            out[name] = kind[0] if kind else None
        elif options and "default" in options[0]:
            out[name] = options[0]["default"]
    return out


def graph(args: argparse.Namespace, workers: Optional[int]) -> tuple[dict, str]:
    """The API-format prompt of one row, and the Score Viewer's node id."""
    nodes = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": args.checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": args.prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": args.latent_node, "inputs": {"width": args.size, "height": args.size, "batch_size": 1}},
        "5": {"class_type": "NoiseSearchVerifierLoader",
              "inputs": {"kind": args.verifier_kind, "model": args.verifier_model, "device": "auto", "dtype": "auto",
                         "allow_download": False, "labels": "", "target": ""}},
        "6": {"class_type": "NoiseSearchSampler",
              "inputs": {**defaults(args.url, "NoiseSearchSampler"),
                         "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                         "seed": args.seed, "steps": args.steps, "cfg": args.cfg, "sampler_name": "euler",
                         "scheduler": "simple", "denoise": 1.0, "vae": ["1", 2], "verifier": ["5", 0],
                         "prompt": args.prompt, "algorithm": "random", "candidates": args.candidates,
                         "batch_size": args.batch_size}},
        "7": {"class_type": "NoiseSearchScoreViewer", "inputs": {"report": ["6", 4], "pick": -1}},
    }
    if workers:
        nodes["8"] = {"class_type": "NoiseSearchWorkers",
                      "inputs": {"address": args.address, "workers": workers,
                                 "gpus_per_worker": args.gpus_per_worker}}
        nodes["6"]["inputs"]["workers"] = ["8", 0]
    return nodes, "7"


def run_row(args: argparse.Namespace, workers: Optional[int]) -> dict:
    prompt, viewer = graph(args, workers)
    prompt_id = post(args.url, "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]
    deadline = time.monotonic() + args.timeout
    while True:
        history = get(args.url, f"/history/{prompt_id}").get(prompt_id)
        if history and history.get("status", {}).get("completed") is not None:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"row with {workers} workers did not finish within {args.timeout:.0f} s")
        time.sleep(0.5)
    if history["status"].get("status_str") != "success":
        raise SystemExit(f"row with {workers} workers failed: {history['status'].get('messages')}")
    report = history["outputs"][viewer]["noise_search"][0]
    seconds = float(report["seconds"])
    ready = next((float(m.group(1)) for n in report["notes"] if (m := READY.search(n))), 0.0)
    item = report["items"][0]
    return {"workers": workers or 0, "seconds": round(seconds, 2), "ready_s": round(ready, 2),
            "search_s": round(seconds - ready, 2), "nfe": item["nfe"], "best_id": item["best_id"]}


def measure(args: argparse.Namespace) -> list[dict]:
    rows = [run_row(args, None)]
    for n in args.workers:
        rows.append(run_row(args, n))
    one = rows[0]
    for row in rows:
        row["search_ratio"] = round(one["search_s"] / row["search_s"], 3)
        row["total_ratio"] = round(one["seconds"] / row["seconds"], 3)
        row["same_winner"] = row["best_id"] == one["best_id"]
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'workers':>8} {'seconds':>9} {'ready s':>8} {'search s':>9} {'NFE':>6} {'search x':>9} "
             f"{'total x':>8} {'winner':>7}"]
    for r in rows:
        lines.append(f"{r['workers'] or 'none':>8} {r['seconds']:>9.1f} {r['ready_s']:>8.1f} {r['search_s']:>9.1f} "
                     f"{r['nfe']:>6} {r['search_ratio']:>9.2f} {r['total_ratio']:>8.2f} "
                     f"{'same' if r['same_winner'] else 'DIFFERS':>7}")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack and Ray")
    parser.add_argument("--checkpoint", required=True, help="a file in the server's models/checkpoints")
    parser.add_argument("--latent-node", default="EmptyLatentImage", help="EmptySD3LatentImage for SD3-class models")
    parser.add_argument("--verifier-kind", default="clip_score")
    parser.add_argument("--verifier-model", required=True, help="Load Verifier's model (a models/verifiers folder)")
    parser.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=0, help="the sampler's batch_size (0 = auto)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, one row each")
    parser.add_argument("--gpus-per-worker", type=float, default=1.0, help="0 = CPU-only workers")
    parser.add_argument("--address", default="", help="a Ray cluster to join instead of a local Ray")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one row may take")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    rows = measure(args)
    print(table(rows), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if not all(r["same_winner"] for r in rows):
        sys.exit("a spread search found another winner than the one-process search")
    return rows


if __name__ == "__main__":
    main()
