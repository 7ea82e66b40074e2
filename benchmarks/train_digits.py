"""Train the scaling benchmark's three tiny models on scikit-learn's 8x8 digits and save them as safetensors.

    python benchmarks/train_digits.py            # writes benchmarks/weights/digits_*.safetensors + digits_training.json

Every random draw comes from one torch.Generator per model, models are built on the meta device and initialised
from that generator, and the thread count is fixed, so a run reproduces the committed weights bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from digits_models import MODELS, NULL_CLASS, WEIGHTS, load_splits, weight_path

DEFAULTS = {
    "flow": {"steps": 200, "batch": 128, "lr": 2e-3, "label_dropout": 0.1, "seed": 1},
    "verifier": {"steps": 1500, "batch": 128, "lr": 2e-3, "weight_decay": 1e-2, "seed": 2},
    "evaluator": {"steps": 2000, "batch": 128, "lr": 2e-3, "weight_decay": 1e-2, "shift": 1, "seed": 3},
}


def build(name: str, generator: torch.Generator) -> nn.Module:
    """MODELS[name] initialised from `generator` only (PyTorch's default bounds, without the global RNG)."""
    with torch.device("meta"):
        model = MODELS[name]()
    model = model.to_empty(device="cpu")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            with torch.no_grad():
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(module, nn.Embedding):
            with torch.no_grad():
                module.weight.normal_(0.0, 1.0, generator=generator)
    return model


def train_flow(images: torch.Tensor, labels: torch.Tensor, *, steps: int, batch: int, lr: float, label_dropout: float,
               seed: int) -> nn.Module:
    """Rectified flow: regress v = eps - x0 at x_t = (1 - t) x0 + t eps, dropping labels for CFG."""
    g = torch.Generator().manual_seed(seed)
    model = build("flow", g).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        x0, y = images[idx], labels[idx].clone()
        y[torch.rand(batch, generator=g) < label_dropout] = NULL_CLASS
        eps = torch.randn(x0.shape, generator=g)
        t = torch.rand(batch, generator=g)
        xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * eps
        loss = F.mse_loss(model(xt, t, y), eps - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def _shift(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `shift` pixels (background -1 fills the border)."""
    if shift == 0:
        return x
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, x.shape[0]), generator=g)
    rows = (dy[:, None] + torch.arange(8)[None])[:, None, :, None].expand(-1, 1, 8, 8 + 2 * shift)
    cols = (dx[:, None] + torch.arange(8)[None])[:, None, None, :].expand(-1, 1, 8, 8)
    return padded.gather(2, rows).gather(3, cols)


def train_classifier(name: str, images: torch.Tensor, labels: torch.Tensor, *, steps: int, batch: int, lr: float,
                     weight_decay: float, seed: int, shift: int = 0) -> nn.Module:
    """Cross-entropy training of the verifier or evaluator on its own split."""
    g = torch.Generator().manual_seed(seed)
    model = build(name, g).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        loss = F.cross_entropy(model(_shift(images[idx], shift, g)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def train_all(settings: dict = DEFAULTS) -> tuple[dict[str, nn.Module], dict, dict]:
    """The three models, a JSON-safe record of settings and held-out accuracies, and seconds per model."""
    splits = load_splits()
    gen_x, gen_y = splits["generator"]
    ev_x, ev_y = splits["evaluator"]
    ho_x, ho_y = splits["heldout"]
    models, seconds = {}, {}
    for name, (x, y) in {"flow": (gen_x, gen_y), "verifier": (gen_x, gen_y), "evaluator": (ev_x, ev_y)}.items():
        start = time.perf_counter()
        if name == "flow":
            models[name] = train_flow(x, y, **settings[name])
        else:
            models[name] = train_classifier(name, x, y, **settings[name])
        seconds[name] = round(time.perf_counter() - start, 2)
    record = {
        "objective": "rectified flow (x_t = (1 - t) x0 + t eps, predict eps - x0), CFG label dropout",
        "data": "sklearn.datasets.load_digits, pixels / 8 - 1, per-class split "
                "generator (flow + verifier) / evaluator / heldout (Frechet reference)",
        "split_sizes": {k: len(v[1]) for k, v in splits.items()},
        "settings": settings,
        "heldout_accuracy": {k: round(accuracy(models[k], ho_x, ho_y), 4) for k in ("verifier", "evaluator")},
        "torch": torch.__version__,
    }
    return models, record, seconds


def save(models: dict[str, nn.Module], record: dict, root: Path = WEIGHTS) -> None:
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weight_path(name, root)))
    (root / "digits_training.json").write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="folder for the safetensors and JSON")
    parser.add_argument("--flow-steps", type=int, default=DEFAULTS["flow"]["steps"],
                        help="optimizer steps of the flow model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for bit-exact results)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    settings = json.loads(json.dumps(DEFAULTS))
    settings["flow"]["steps"] = args.flow_steps
    models, record, seconds = train_all(settings)
    save(models, record, args.out)
    summary = {**{k: record[k] for k in ("split_sizes", "heldout_accuracy")}, "train_seconds": seconds}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
