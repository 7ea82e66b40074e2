"""The search settings both samplers share: their inputs (names, order, defaults, tooltips) and their checks."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Optional

from comfy_api.latest import io

from ..search import ALGORITHMS
from ..search.budget import paths_schedule
from .types import SearchReportType, VerifierType

ALGORITHM_NAMES = ["random", "zero_order", "paths"]


def _default(algorithm: str, name: str):
    return inspect.signature(ALGORITHMS[algorithm]).parameters[name].default


ZO_ROUNDS = _default("zero_order", "rounds")
ZO_STEP_COS = _default("zero_order", "step_cos")
PATHS_M = _default("paths", "m")
PATHS_SIGMA_START = _default("paths", "sigma_start")
PATHS_DELTA_F = _default("paths", "delta_f")
PATHS_DELTA_B = _default("paths", "delta_b")
_SEARCH_NAMES = {"sigma_start": "paths_sigma_start", "delta_f": "paths_delta_f", "delta_b": "paths_delta_b",
                 "max_rounds": "paths_max_rounds"}


def search_inputs() -> list:
    """The shared inputs, in contract order (after each sampler's own inputs)."""
    return [
        io.Vae.Input("vae", tooltip="Decodes every candidate for the verifier (use the VAE of the model)."),
        VerifierType.Input("verifier", tooltip="Scores candidates (Load Verifier or Verifier Ensemble); higher wins."),
        io.String.Input("prompt", multiline=True, default="",
                        tooltip="The text the image should match, for verifiers that need one (CLIPScore, PickScore, "
                                "HPSv2, ensembles with them). Connect the same text you encode for the sampler."),
        io.Combo.Input("algorithm", options=ALGORITHM_NAMES, default="random",
                       tooltip="random: best of N seeds (seed, seed+1, ...). zero_order: hill-climb on neighbours of "
                               "the best noise. paths: branch and re-noise partial trajectories, keep the best."),
        io.Int.Input("candidates", default=4, min=1, max=4096,
                     tooltip="random: N seeds tried. zero_order: neighbours per round. paths: paths kept per round."),
        io.Int.Input("zo_rounds", default=ZO_ROUNDS, min=0, max=1000,
                     tooltip="zero_order only: rounds of neighbours after the seed's own noise."),
        io.Float.Input("zo_step_cos", default=ZO_STEP_COS, min=0.0, max=0.999, step=0.005, round=0.0001,
                       tooltip="zero_order only: cosine between the pivot noise and a neighbour; closer to 1 = "
                               "smaller steps. The angle doubles after a round without improvement."),
        io.Int.Input("paths_branches", default=PATHS_M, min=1, max=256,
                     tooltip="paths only: branches (M) re-noised from every kept path each round."),
        io.Float.Input("paths_sigma_start", default=PATHS_SIGMA_START, min=0.01, max=1.0, step=0.01,
                       tooltip="paths only: where branching starts, in trajectory time (1 = pure noise, 0 = clean)."),
        io.Float.Input("paths_delta_f", default=PATHS_DELTA_F, min=0.001, max=1.0, step=0.005, round=0.0001,
                       tooltip="paths only: how far each branch is re-noised back up, as a fraction of the schedule."),
        io.Float.Input("paths_delta_b", default=PATHS_DELTA_B, min=0.001, max=1.0, step=0.005, round=0.0001,
                       tooltip="paths only: how far each branch then denoises, as a fraction of the schedule; must "
                               "be larger than paths_delta_f."),
        io.Int.Input("paths_max_rounds", default=0, min=0, max=10000,
                     tooltip="paths only: branching rounds before the kept paths run to the end; 0 = branch until "
                             "sigma 0."),
        io.Int.Input("budget_nfe", default=0, min=0, max=2**31 - 1,
                     tooltip="Most model evaluations (NFEs) per latent; the search shrinks to fit and refuses to "
                             "start if even its smallest run does not fit. 0 = no limit."),
        io.Int.Input("batch_size", default=0, min=0, max=256,
                     tooltip="Candidates sampled together per model call; 0 = auto from free memory. Results do "
                             "not depend on it."),
        io.Int.Input("top_k", default=1, min=1, max=256,
                     tooltip="How many of the best final candidates go to the top_k output, best first."),
    ]


def search_outputs() -> list:
    """Outputs named (display_name) per the contract; two ids differ because V3 ids must not repeat input ids."""
    return [
        io.Latent.Output("latent", display_name="latent", tooltip="The best candidate's latent."),
        io.Image.Output("image", display_name="image", tooltip="The best candidate decoded (already decoded for scoring)."),
        io.Latent.Output("top_k_latent", display_name="top_k", tooltip="The top_k best final latents of every batch item, best first."),
        io.Noise.Output("winning_noise", display_name="noise",
                        tooltip="The winning initial noise. With SamplerCustomAdvanced and the same guider, sampler "
                                "and sigmas it reproduces the best latent (random and zero_order; for paths it is the "
                                "winner's root noise, which does not)."),
        SearchReportType.Output("report", display_name="report", tooltip="Every candidate's scores, for the Score Viewer."),
    ]


@dataclass
class SearchSettings:
    """The shared inputs as the node received them; `config()` turns them into search keyword arguments."""

    node: str  # display name, for error messages
    algorithm: str = "random"
    candidates: int = 4
    zo_rounds: int = ZO_ROUNDS
    zo_step_cos: float = ZO_STEP_COS
    paths_branches: int = PATHS_M
    paths_sigma_start: float = PATHS_SIGMA_START
    paths_delta_f: float = PATHS_DELTA_F
    paths_delta_b: float = PATHS_DELTA_B
    paths_max_rounds: int = 0
    budget_nfe: int = 0
    batch_size: int = 0
    top_k: int = 1

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.node}: {message}")

    @property
    def budget(self) -> Optional[int]:
        return int(self.budget_nfe) if self.budget_nfe else None

    def check(self, steps: int) -> None:
        """Raise a ValueError naming the input and the fix for any setting the search would reject."""
        if self.algorithm not in ALGORITHM_NAMES:
            raise self.error(f"algorithm '{self.algorithm}' is unknown: choose one of {', '.join(ALGORITHM_NAMES)}")
        for name in ("candidates", "top_k"):
            if int(getattr(self, name)) < 1:
                raise self.error(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.budget_nfe < 0 or self.batch_size < 0:
            raise self.error("budget_nfe and batch_size must be >= 0 (0 = no limit / auto)")
        if self.algorithm == "zero_order":
            if self.zo_rounds < 0:
                raise self.error(f"zo_rounds must be >= 0, got {self.zo_rounds}")
            if not 0.0 <= self.zo_step_cos < 1.0:
                raise self.error(f"zo_step_cos must be in [0, 1) (1 would never move), got {self.zo_step_cos}: "
                                 f"use e.g. {ZO_STEP_COS}")
        if self.algorithm == "paths":
            self._check_paths(steps)

    def _check_paths(self, steps: int) -> None:
        if self.paths_branches < 1:
            raise self.error(f"paths_branches must be at least 1, got {self.paths_branches}")
        if self.paths_max_rounds < 0:
            raise self.error(f"paths_max_rounds must be >= 0 (0 = until sigma 0), got {self.paths_max_rounds}")
        if not 0.0 < self.paths_sigma_start <= 1.0:
            raise self.error(f"paths_sigma_start must be in (0, 1] (1 = pure noise), got {self.paths_sigma_start}")
        if self.paths_delta_f <= 0 or self.paths_delta_b <= 0:
            raise self.error("paths_delta_f and paths_delta_b must be > 0")
        if self.paths_delta_b <= self.paths_delta_f:
            raise self.error(
                f"paths_delta_b ({self.paths_delta_b}) must be larger than paths_delta_f ({self.paths_delta_f}), "
                f"or paths never get closer to a clean image: raise paths_delta_b or lower paths_delta_f")
        try:
            paths_schedule(steps, sigma_start=self.paths_sigma_start, delta_f=self.paths_delta_f,
                           delta_b=self.paths_delta_b, max_rounds=self.paths_max_rounds or None)
        except ValueError as e:
            raise self.error(rename_search_inputs(str(e))) from e

    def notes(self) -> list[str]:
        """What the node runs anyway but the user should know: settings that have no effect as given."""
        together = int(self.candidates) * (int(self.paths_branches) if self.algorithm == "paths" else 1)
        if self.batch_size > together:
            return [f"batch_size={self.batch_size} is larger than the {together} candidates {self.algorithm} search "
                    f"runs together: at most {together} rows go to the model at once"]
        return []

    def config(self) -> dict:
        """Keyword arguments of the chosen algorithm (budget and top_k included)."""
        common = {"n": int(self.candidates), "budget_nfe": self.budget, "top_k": int(self.top_k)}
        if self.algorithm == "zero_order":
            return common | {"rounds": int(self.zo_rounds), "step_cos": float(self.zo_step_cos)}
        if self.algorithm == "paths":
            return common | {"m": int(self.paths_branches), "sigma_start": float(self.paths_sigma_start),
                             "delta_f": float(self.paths_delta_f), "delta_b": float(self.paths_delta_b),
                             "max_rounds": int(self.paths_max_rounds) or None}
        return common

    def smallest(self) -> dict:
        """The config of the cheapest run of the algorithm (what a budget must at least pay for)."""
        small = self.config() | {"n": 1, "budget_nfe": None}
        if self.algorithm == "zero_order":
            small["rounds"] = 0
        if self.algorithm == "paths":
            small["m"] = 1
        return small


def rename_search_inputs(message: str) -> str:
    """Name the node inputs (paths_delta_b, ...) where a search error names the algorithm's parameters."""
    return re.sub(r"\b(" + "|".join(_SEARCH_NAMES) + r")\b", lambda m: _SEARCH_NAMES[m.group(1)], message)
