"""One configuration of benchmarks/overhead.py, measured in a fresh ComfyUI process so peaks never accumulate.

    python benchmarks/overhead_worker.py '<json job>'     # started by overhead.py; prints `RESULT <json>`

The job names the ComfyUI checkout, the model (overhead_models.ARCHS), the size, the sampler settings and either a
search (algorithm, node inputs) or a stock run. Timers: the diffusion model's forward (forward hooks, CUDA
synchronised), the Scorer's decode and score; wall time around the node's execute (or the stock calls). Peak RSS
is the process's high-water mark, reset (/proc/self/clear_refs) after the models are built and warmed up.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch

SEED = 1234
PROMPT = "a photograph of an astronaut riding a horse"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def now() -> float:
    """perf_counter after the device has finished its queued work."""
    _sync()
    return time.perf_counter()


def rss_mb(field: str = "VmRSS") -> Optional[float]:
    """This process's resident set (or its high-water mark, VmHWM) in MiB, from /proc (Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def reset_peak() -> bool:
    """Start the RSS high-water mark afresh (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak RSS since the last reset: VmHWM, else getrusage's ru_maxrss (which also counts model building)."""
    hwm = rss_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1024 / 1024


class Timers:
    """Seconds spent inside the diffusion model's forward, the Scorer's decode and its score."""

    def __init__(self) -> None:
        self.seconds = {"model": 0.0, "decode": 0.0, "verify": 0.0}
        self.calls = 0
        self._start = 0.0

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.calls = 0

    def hook_model(self, module: torch.nn.Module) -> None:
        def pre(_module, _args):
            self._start = now()

        def post(_module, _args, _out):
            self.seconds["model"] += now() - self._start
            self.calls += 1

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def wrap(self, owner: type, name: str, key: str) -> None:
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            start = now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += now() - start

        setattr(owner, name, timed)


def watch_rss(cap_mb: float, started: float, info: dict) -> None:
    """Abort the process (with a RESULT saying so) once its RSS passes `cap_mb`: the machine is shared."""
    def loop():
        while True:
            rss = rss_mb()
            if rss is not None and rss > cap_mb:
                emit(info | {"aborted": True, "peak_rss_mb": rss, "seconds": time.perf_counter() - started})
                os._exit(0)
            time.sleep(0.02)

    threading.Thread(target=loop, daemon=True).start()


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def start_comfy(comfyui: str, base_dir: Optional[str] = None) -> None:
    """Import ComfyUI from its checkout as main.py would (CPU mode without CUDA, models under `base_dir`) and
    register the pack."""
    sys.argv = [sys.argv[0]] + ([] if torch.cuda.is_available() else ["--cpu"])
    sys.argv += ["--base-directory", base_dir] if base_dir else []
    sys.path.insert(0, comfyui)
    os.chdir(comfyui)
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False

    from _pack import load_pack

    load_pack()


class Bench:
    """The models of one job, built as ComfyUI loads them, with the timers installed."""

    def __init__(self, job: dict):
        import overhead_models as om

        import comfy.samplers

        from noise_search.nodes import NoiseSearchVerifierLoader, guider_bridge
        from noise_search.nodes.denoise import NfeCounter
        from noise_search.nodes.scoring import Scorer
        from noise_search.nodes.settings import SearchSettings

        self.job = job
        self.settings = SearchSettings(node="overhead", algorithm=job.get("algorithm", "random"), **job["settings"])
        self.arch = arch = om.ARCHS[job["arch"]]
        if job.get("base_dir"):
            import folder_paths

            om.write_taesd_decoder(Path(folder_paths.models_dir), arch)
        self.model = om.diffusion_model(arch, seed=0)
        self.vae = om.vae(arch.vae, seed=1)
        clip_dir = om.make_clip_folder(Path(job["clip_dir"]), job["clip"])
        loader = NoiseSearchVerifierLoader.execute("clip_score", str(clip_dir), "auto", "auto", False, "", "")
        self.verifier = loader.args[0]
        self.positive, self.negative = om.conditioning(arch, 2), om.conditioning(arch, 3)
        self.shape = ((om.latent_channels(arch),) + om.latent_frames(arch, job.get("frames", 0))
                      + (job["size"] // om.latent_downscale(arch),) * 2)
        self.timers = Timers()
        self.timers.hook_model(self.model.model.diffusion_model)
        self.timers.wrap(Scorer, "decode", "decode")
        self.timers.wrap(Scorer, "decode_preview", "decode")
        self.timers.wrap(Scorer, "score", "verify")
        self.batch: dict = {}
        auto_rows = guider_bridge.auto_rows
        guider_bridge.auto_rows = lambda *a: self.batch.setdefault("auto", auto_rows(*a))
        sampling = self.model.get_model_object("model_sampling")
        sigmas = comfy.samplers.calculate_sigmas(sampling, job["scheduler"], job["steps"]).cpu()
        self.unit = NfeCounter(comfy.samplers.sampler_object(job["sampler"]), sampling, self.model)(sigmas)

    def latent(self, rows: int) -> dict:
        return {"samples": torch.zeros((rows,) + self.shape)}

    def ksampler(self, rows: int, steps: int) -> torch.Tensor:
        """The stock KSampler node's own function over a latent batch of `rows`."""
        import nodes

        job = self.job
        return nodes.common_ksampler(self.model, SEED, steps, self.arch.cfg, job["sampler"], job["scheduler"],
                                     self.positive, self.negative, self.latent(rows))[0]["samples"]

    def warm_up(self, rows: int) -> None:
        """One stock step, one decode (and one preview decode where the row scores with TAESD) and one score, so
        neither side pays first-call costs (kernel choice, loading) in the measurement."""
        latent = self.ksampler(rows, 1)[:1]
        image = self.vae.decode(latent)
        decode = self.job.get("decode", self.job["default_decode"])
        if self.job["mode"] == "search" and decode != self.job["default_decode"]:
            from noise_search.nodes.comfy_search import preview_decoder

            preview_decoder("overhead", decode, self.model)(self.model.model.process_latent_in(latent))
        self.verifier.load()
        self.verifier.verifier.score(image.reshape(-1, *image.shape[-3:])[:1], PROMPT, None)  # a video: one frame
        self.timers.reset()

    def stock(self, rows: int) -> dict:
        """KSampler over `rows` rows, then VAE Decode of the one image a user keeps."""
        import nodes

        self.timers.reset()
        start = now()
        samples = self.ksampler(rows, self.job["steps"])
        sampled = now()
        nodes.VAEDecode().decode(self.vae, {"samples": samples[:1]})
        end = now()
        nfe = rows * self.unit
        return {"seconds": end - start, "sampling_s": sampled - start, "model_s": self.timers.seconds["model"],
                "decode_s": end - sampled, "verify_s": 0.0, "nfe": nfe, "nfe_planned": nfe, "rows": rows}

    def search(self) -> dict:
        """The Noise Search Sampler node's execute with the job's algorithm and inputs."""
        from noise_search.nodes import NoiseSearchSampler

        job = self.job
        settings = {"algorithm": job["algorithm"], **job["settings"]}
        check_decode(NoiseSearchSampler, job["decode"], job["default_decode"], settings)
        self.timers.reset()
        start = now()
        out = NoiseSearchSampler.execute(self.model, self.positive, self.negative, self.latent(1), SEED,
                                         job["steps"], self.arch.cfg, job["sampler"], job["scheduler"], 1.0, self.vae,
                                         self.verifier, PROMPT, **settings).args
        end = now()
        results = out[4].results
        seconds = self.timers.seconds
        return {"seconds": end - start, "model_s": seconds["model"], "decode_s": seconds["decode"],
                "verify_s": seconds["verify"], "nfe": sum(r.nfe for r in results),
                "nfe_planned": sum(r.nfe_planned for r in results),
                "rows": self.stock_rows()}

    def stock_rows(self) -> int:
        """B: the batch size the search resolved (batch_size, or auto), at most its candidates."""
        return min(self.settings.batch_size or self.batch["auto"], self.settings.candidates)


def run(job: dict) -> dict:
    """Build, warm up, reset the RSS peak, measure; with `stock_after`, a stock run of the search's batch follows
    (its time only: the peak is the search's). Everything runs in inference mode, as ComfyUI runs a prompt."""
    start_comfy(job["comfyui"], job.get("base_dir"))
    with torch.inference_mode():
        return measure(job)


def measure(job: dict) -> dict:
    from noise_search.nodes.comfy_model import CPU_ROWS

    bench = Bench(job)
    # a search's auto batch is known only once it runs: CPU_ROWS stands in for it
    bench.warm_up(job.get("rows") or min(bench.settings.candidates, bench.settings.batch_size or CPU_ROWS))
    info = {"threads": torch.get_num_threads(), "device": str(bench.model.load_device),
            "dtype": str(bench.model.model.get_dtype()).replace("torch.", "")}
    reset_peak()
    info["base_rss_mb"] = rss_mb()
    if job.get("rss_cap_mb"):
        watch_rss(job["rss_cap_mb"], time.perf_counter(), info)
    result = bench.stock(job["rows"]) if job["mode"] == "stock" else bench.search()
    result["peak_rss_mb"] = peak_mb()
    if job.get("stock_after"):
        result["stock"] = bench.stock(result["rows"])
    return info | result


def check_decode(node: type, decode: str, default: str, settings: dict) -> None:
    """Pass `scoring_decode` only where the node has that input and offers `decode` (unknown inputs and values
    would be ignored silently)."""
    inputs = {i.id: i for i in node.define_schema().inputs}
    if "scoring_decode" in inputs:
        options = inputs["scoring_decode"].options
        if decode not in options:
            raise SystemExit(f"scoring_decode '{decode}' is not one of the sampler's: {options}")
        settings["scoring_decode"] = decode
    elif decode != default:
        raise SystemExit(f"this checkout's sampler has no scoring_decode input: only '{default}' can run")


if __name__ == "__main__":
    emit(run(json.loads(sys.argv[1])))
