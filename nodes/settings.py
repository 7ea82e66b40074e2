"""The search settings both samplers share: their inputs (names, order, defaults, tooltips) and their checks."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from comfy_api.latest import io

from ..search import ALGORITHMS, BudgetError, SettingError, check_stop_score, estimate_nfe
from .preview_decode import FULL, SCORING_DECODES
from .types import SearchReportType, VerifierType

ALGORITHM_NAMES = list(ALGORITHMS)
# node input -> the search parameter it sets, for the algorithms that read it (declared once for config and errors)
PARAMS = {
    "random": {"candidates": "n"},
    "zero_order": {"candidates": "n", "zo_rounds": "rounds", "zo_step_cos": "step_cos"},
    "paths": {"candidates": "n", "paths_branches": "m", "paths_sigma_start": "sigma_start",
              "paths_delta_f": "delta_f", "paths_delta_b": "delta_b", "paths_max_rounds": "max_rounds"},
    "smc": {"candidates": "n", "smc_potential": "potential", "smc_lambda": "lam", "smc_ess_threshold": "ess_threshold",
            "smc_sigma_start": "sigma_start", "smc_sigma_end": "sigma_end", "smc_interval": "interval",
            "smc_delta_f": "delta_f"},
    "trust_region": {"candidates": "n", "tr_regions": "regions", "tr_per_region": "per_region", "tr_rounds": "rounds",
                     "tr_step_cos": "step_cos", "tr_grow": "grow", "tr_shrink": "shrink", "tr_patience": "patience",
                     "tr_min_cos": "min_cos"},
    "evolution": {"candidates": "n", "evo_generations": "generations", "evo_elite": "elite",
                  "evo_tournament": "tournament", "evo_mutation": "mutation"},
    "racing": {"candidates": "n", "race_eta": "eta", "race_rungs": "rungs"},
}
COMMON = {"budget_nfe": "budget_nfe", "top_k": "top_k", "stop_score": "stop_score"}
# per algorithm: search parameter -> the node input that sets it (parameter names repeat across algorithms)
INPUT_NAMES = {a: {param: name for name, param in (table | COMMON).items()} for a, table in PARAMS.items()}
SMALLEST = {"rounds": 0, "m": 1, "generations": 0}  # with n = 1: each algorithm's cheapest run


def _default(algorithm: str, name: str):
    return inspect.signature(ALGORITHMS[algorithm]).parameters[name].default


ZO_ROUNDS = _default("zero_order", "rounds")
ZO_STEP_COS = _default("zero_order", "step_cos")
PATHS_M = _default("paths", "m")
PATHS_SIGMA_START = _default("paths", "sigma_start")
PATHS_DELTA_F = _default("paths", "delta_f")
PATHS_DELTA_B = _default("paths", "delta_b")


def used_by() -> dict[str, list[str]]:
    """Input name -> the algorithms that read it, for inputs not every algorithm reads (the frontend shows an
    input only while a search that reads it is chosen)."""
    names = {name for table in PARAMS.values() for name in table}
    users = {name: [a for a in ALGORITHM_NAMES if name in PARAMS[a]] for name in sorted(names)}
    return {name: algorithms for name, algorithms in users.items() if len(algorithms) < len(ALGORITHM_NAMES)}


def search_inputs() -> list:
    """The shared inputs, in contract order (after each sampler's own inputs); algorithm-specific ones carry
    `noise_search_for` (the algorithms that read them) in their options."""
    inputs, users = _search_inputs(), used_by()
    for inp in inputs:
        if inp.id in users:
            inp.extra_dict["noise_search_for"] = users[inp.id]
    return inputs


def _search_inputs() -> list:
    return [
        io.Vae.Input("vae", tooltip="Decodes every candidate for the verifier (use the VAE of the model)."),
        VerifierType.Input("verifier", tooltip="Scores candidates (Load Verifier or Verifier Ensemble); higher wins."),
        io.String.Input("prompt", multiline=True, default="",
                        tooltip="The text the image should match, for verifiers that need one (CLIPScore, PickScore, "
                                "HPSv2, ensembles with them). Connect the same text you encode for the sampler."),
        io.Combo.Input("algorithm", options=ALGORITHM_NAMES, default="random",
                       tooltip="random: best of N seeds (seed, seed+1, ...). zero_order: hill-climb on neighbours of "
                               "the best noise. paths: branch and re-noise partial trajectories, keep the best. smc: "
                               "particles steered by the verifier and resampled (Feynman-Kac). trust_region: several "
                               "regions around the best noises that grow and shrink. evolution: a population of "
                               "noises with elites, tournaments and Gaussian mutation. racing: best of N stock "
                               "seeds, dropping the worst at rungs along the schedule (successive halving)."),
        io.Int.Input("candidates", default=4, min=1, max=4096,
                     tooltip="random: N seeds tried. zero_order: neighbours per round. paths: paths kept per round. "
                             "smc: particles. trust_region: initial seeds. evolution: population size. racing: "
                             "seeds that start the race."),
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
        *_new_algorithm_inputs(),
        io.Boolean.Input("early_exit", default=False, optional=True,
                         tooltip="Stop searching once a candidate scores at least stop_score; the report says how "
                                 "much of the budget was left. Needs a single verifier (ensemble scores are ranks)."),
        io.Float.Input("stop_score", default=0.0, min=-1e9, max=1e9, step=0.01, round=0.0001, optional=True,
                       tooltip="early_exit only: the verifier score that is good enough, on the verifier's own scale "
                               "(e.g. CLIPScore 30, aesthetic 6.5)."),
        io.Combo.Input("scoring_decode", options=list(SCORING_DECODES), default=FULL, optional=True,
                       tooltip="What decodes candidates for the verifier. full VAE: everything. TAESD for x0 "
                               "previews: the x0 predictions paths/smc score mid-trajectory and self-similarity's "
                               "reference go through ComfyUI's TAESD preview decoder (models/vae_approx), finished "
                               "candidates through the VAE. TAESD for all: every score through TAESD. Output images "
                               "are always decoded by the VAE."),
        *_racing_inputs(),
    ]


def _racing_inputs() -> list:
    """Racing's inputs: optional, after every earlier input (saved workflows keep their widget order)."""
    return [
        io.Int.Input("race_eta", default=_default("racing", "eta"), min=2, max=64, optional=True,
                     tooltip="racing only: at each rung the best 1 in race_eta candidates go on (2 = halving)."),
        io.String.Input("race_rungs", default=", ".join(f"{t:g}" for t in _default("racing", "rungs")),
                        optional=True,
                        tooltip="racing only: where candidates are compared and cut, as trajectory times separated "
                                "by commas (1 = pure noise, 0 = clean), scored on their x0 previews (scoring_decode "
                                "TAESD makes rungs cheap)."),
    ]


def _new_algorithm_inputs() -> list:
    """Inputs of the algorithms added after v0.1: optional, after every v0.1 input, so saved workflows and API
    prompts keep loading."""
    def d(algorithm: str, name: str):
        return _default(algorithm, name)

    def i(name: str, algorithm: str, param: str, tip: str, lo: int = 0, hi: int = 10000) -> io.Int.Input:
        return io.Int.Input(name, default=d(algorithm, param), min=lo, max=hi, optional=True, tooltip=tip)

    def f(name: str, algorithm: str, param: str, tip: str, lo: float = 0.0, hi: float = 1.0,
          step: float = 0.01) -> io.Float.Input:
        return io.Float.Input(name, default=d(algorithm, param), min=lo, max=hi, step=step, round=0.0001,
                              optional=True, tooltip=tip)

    return [
        io.Combo.Input("smc_potential", options=["difference", "max", "sum"], default=d("smc", "potential"),
                       optional=True, tooltip="smc only: the potential from each particle's rewards (Singhal et al. "
                                              "2025): the latest change, the best so far, or their sum."),
        f("smc_lambda", "smc", "lam", "smc only: the potential's temperature; multiplies raw verifier scores, so it "
          "depends on the verifier's scale (log-odds, CLIPScore 20-35, ...).", 0.0, 1000.0, 0.1),
        f("smc_ess_threshold", "smc", "ess_threshold", "smc only: resample when the effective sample size falls "
          "below this fraction of the particles (0 never, 1 whenever the weights differ)."),
        f("smc_sigma_start", "smc", "sigma_start", "smc only: the first potential, in trajectory time (1 = pure "
          "noise, 0 = clean)."),
        f("smc_sigma_end", "smc", "sigma_end", "smc only: the last potential, in trajectory time."),
        f("smc_interval", "smc", "interval", "smc only: the distance between potentials, as a fraction of the "
          "schedule."),
        f("smc_delta_f", "smc", "delta_f", "smc only: how far every continuation is re-noised back up before it "
          "denoises on (0 = none; copies then diverge only through an ancestral/SDE sampler's own noise)."),
        i("tr_regions", "trust_region", "regions", "trust_region only: regions searched in parallel, centred on the "
          "best initial candidates.", 1, 256),
        i("tr_per_region", "trust_region", "per_region", "trust_region only: candidates per region per round.", 1, 256),
        i("tr_rounds", "trust_region", "rounds", "trust_region only: rounds after the initial candidates."),
        f("tr_step_cos", "trust_region", "step_cos", "trust_region only: the starting region size, as the cosine "
          "between its centre and a candidate (closer to 1 = smaller).", 0.0, 0.999, 0.005),
        f("tr_grow", "trust_region", "grow", "trust_region only: the step angle grows by this after a success.",
          1.0, 10.0, 0.1),
        f("tr_shrink", "trust_region", "shrink", "trust_region only: the step angle shrinks by this after "
          "tr_patience failures in a row.", 0.01, 0.99),
        i("tr_patience", "trust_region", "patience", "trust_region only: failures in a row before a region shrinks.",
          1, 1000),
        f("tr_min_cos", "trust_region", "min_cos", "trust_region only: a region smaller than this (cosine) restarts "
          "from a fresh noise.", 0.0, 0.9999, 0.0005),
        i("evo_generations", "evolution", "generations", "evolution only: generations after the first population."),
        i("evo_elite", "evolution", "elite", "evolution only: the best of each population kept unchanged."),
        i("evo_tournament", "evolution", "tournament", "evolution only: candidates per parent-selecting "
          "tournament.", 1, 256),
        f("evo_mutation", "evolution", "mutation", "evolution only: mutation strength r; a child is "
          "sqrt(1 - r^2) * parent + r * fresh noise (1 = a fresh noise)."),
    ]


def search_outputs() -> list:
    """Outputs named (display_name) per the contract; two ids differ because V3 ids must not repeat input ids."""
    return [
        io.Latent.Output("latent", display_name="latent", tooltip="The best candidate's latent."),
        io.Image.Output("image", display_name="image",
                        tooltip="The best candidate decoded (already decoded for scoring)."),
        io.Latent.Output("top_k_latent", display_name="top_k",
                         tooltip="The top_k best final latents of every batch item, best first."),
        io.Noise.Output("winning_noise", display_name="noise",
                        tooltip="The winning initial noise. With SamplerCustomAdvanced and the same guider, sampler "
                                "and sigmas it reproduces the best latent (random and zero_order; for paths it is the "
                                "winner's root noise, which does not)."),
        SearchReportType.Output("report", display_name="report",
                                tooltip="Every candidate's scores, for the Score Viewer."),
        io.Int.Output("winning_seed", display_name="seed",
                      tooltip="The seed whose stock KSampler run reproduces the winner (same size, steps, sampler "
                              "and model): always for random and racing. Where the winner is no plain seed (a "
                              "neighbour, a re-noised path, a mutated child) it is the seed its lineage started "
                              "from, and the noise output replays the winner."),
    ]


@dataclass
class SearchSettings:
    """The shared inputs as the node received them; `config()` turns them into search keyword arguments and
    `plan()` checks them all through the search's own validation."""

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
    smc_potential: str = _default("smc", "potential")
    smc_lambda: float = _default("smc", "lam")
    smc_ess_threshold: float = _default("smc", "ess_threshold")
    smc_sigma_start: float = _default("smc", "sigma_start")
    smc_sigma_end: float = _default("smc", "sigma_end")
    smc_interval: float = _default("smc", "interval")
    smc_delta_f: float = _default("smc", "delta_f")
    tr_regions: int = _default("trust_region", "regions")
    tr_per_region: int = _default("trust_region", "per_region")
    tr_rounds: int = _default("trust_region", "rounds")
    tr_step_cos: float = _default("trust_region", "step_cos")
    tr_grow: float = _default("trust_region", "grow")
    tr_shrink: float = _default("trust_region", "shrink")
    tr_patience: int = _default("trust_region", "patience")
    tr_min_cos: float = _default("trust_region", "min_cos")
    evo_generations: int = _default("evolution", "generations")
    evo_elite: int = _default("evolution", "elite")
    evo_tournament: int = _default("evolution", "tournament")
    evo_mutation: float = _default("evolution", "mutation")
    early_exit: bool = False
    stop_score: float = 0.0
    scoring_decode: str = FULL
    race_eta: int = _default("racing", "eta")
    race_rungs: str = ", ".join(f"{t:g}" for t in _default("racing", "rungs"))

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.node}: {message}")

    def config(self) -> dict:
        """Keyword arguments of the chosen algorithm (budget and top_k included); 0 means none for the budget and
        for paths_max_rounds."""
        if self.algorithm not in PARAMS:
            raise self.error(f"algorithm '{self.algorithm}' is unknown: choose one of {', '.join(ALGORITHM_NAMES)}")
        config = {param: getattr(self, name) for name, param in (PARAMS[self.algorithm] | COMMON).items()}
        config["budget_nfe"] = int(self.budget_nfe) or None
        config["stop_score"] = float(self.stop_score) if self.early_exit else None
        if "max_rounds" in config:
            config["max_rounds"] = int(config["max_rounds"]) or None
        return config

    def plan(self, sigmas: torch.Tensor, cost: Callable, aggregate: Optional[Callable] = None) -> int:
        """NFEs one latent item will spend at most; every bad setting is refused with its input's name and the fix
        (`aggregate`: the verifier's, which rules out early exit)."""
        if self.batch_size < 0:
            raise self.error(f"batch_size must be >= 0 (0 = auto), got {self.batch_size}")
        try:
            check_stop_score(aggregate, self.config()["stop_score"])
            return estimate_nfe(self.algorithm, sigmas, cost, **self.config())
        except SettingError as e:
            raise self.error(e.render(INPUT_NAMES.get(self.algorithm, {}))) from e
        except BudgetError as e:
            unit = cost(sigmas)
            smallest = estimate_nfe(self.algorithm, sigmas, cost, **self.smallest())
            raise self.error(
                f"budget_nfe={self.budget_nfe} is too small for {self.algorithm} search: one candidate over these "
                f"{len(sigmas) - 1} steps costs {unit} NFEs with this sampler, and the smallest {self.algorithm} run "
                f"costs {smallest}. Raise budget_nfe to at least {smallest}, or set it to 0 for no limit.") from e

    def smallest(self) -> dict:
        """The config of the cheapest run of the algorithm (what a budget must at least pay for)."""
        small = self.config() | {"n": 1, "budget_nfe": None, "stop_score": None}
        return small | {k: v for k, v in SMALLEST.items() if k in small}

    def notes(self) -> list[str]:
        """What the node runs anyway but the user should know: settings that have no effect as given."""
        together = int(self.candidates) * (int(self.paths_branches) if self.algorithm == "paths" else 1)
        if self.batch_size > together:
            return [f"batch_size={self.batch_size} is larger than the {together} candidates {self.algorithm} search "
                    f"runs together: at most {together} rows go to the model at once"]
        return []
