"""Defects a user meets on day one (issue 8), in a ComfyUI process against ComfyUI's own samplers: batch items,
every sampler ComfyUI lists, bad inputs refused before sampling, and notes that reach the log and the status text."""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.comfy_script import run_in_comfyui

pytestmark = pytest.mark.comfyui

COMMON = r'''
import copy, logging, types
from comfy.k_diffusion import sampling as k_sampling
from noise_search.tests.helpers.tiny_sd3 import tiny_taesd_state_dict

empty = {"samples": torch.zeros(1, 16, 8, 8)}

def section(name, code):
    """Run one section; a crash is recorded under out["crashed"] so the other sections still report."""
    try:
        exec(code, globals())
    except Exception as e:
        out.setdefault("crashed", {})[name] = f"{type(e).__name__}: {e}"

'''

SECTIONS = {
    "batches": r"""
# 1. Latent batches: candidate i of item b is row b of the stock KSampler batch with seed + i.
batches = {}
for rows in (1, 2, 3):
    source = torch.randn(rows, 16, 8, 8, generator=torch.Generator().manual_seed(rows))
    for mode, latent, denoise in (("txt2img", {"samples": torch.zeros(rows, 16, 8, 8)}, 1.0),
                                  ("img2img", {"samples": source}, 0.6)):
        for name in ("euler_ancestral", "dpmpp_2m_sde") if mode == "txt2img" else ("euler_ancestral",):
            report = search(latent, 70, name, candidates=2, denoise=denoise)[4]
            stocks = [stock(latent, 70 + i, name, denoise=denoise) for i in range(2)]
            diffs = [[max_diff(report.latents[b][i], stocks[i][b]) for i in range(2)] for b in range(rows)]
            distinct = rows == 1 or max_diff(report.latents[0][0], report.latents[1][0]) > 1e-3
            batches[f"{rows}-{mode}-{name}"] = [diffs, distinct]
out["batches"] = batches
""",
    "matrix": r"""
# 2. Every sampler ComfyUI lists: NFEs equal the stock run's model calls; candidate i equals stock with seed + i.
class Calls:
    def __init__(self):
        self.n = 0
    def __call__(self, args):
        self.n += 1
        return args["denoised"]

matrix = {}
for name in comfy.samplers.KSampler.SAMPLERS:
    message = error(lambda: search(empty, 5, name, candidates=2))
    if message is not None:
        matrix[name] = {"refused": message}
        continue
    try:
        report = search(empty, 5, name, candidates=2)[4]
    except Exception as e:  # recorded, so one broken sampler does not hide the others
        matrix[name] = {"crashed": f"{type(e).__name__}: {e}"}
        continue
    counter = Calls()
    counted = model.clone()
    counted.set_model_sampler_post_cfg_function(counter)
    diff = max_diff(report.latents[0][1], stock(empty, 5 + 1, name, model=counted))  # candidate 1: seed + 1
    r = report.results[0]
    matrix[name] = {"diff": diff, "stock_calls": counter.n, "nfe": r.nfe, "planned": r.nfe_planned}
out["matrix"] = matrix
""",
    "refused": r"""
# 4. Bad inputs are refused before any sampling, naming the node, the input and the fix.
class Sampled(Exception):
    pass
def refuse_sampling(*args, **kwargs):
    raise Sampled("sampling started")
watched = model.clone()
watched.set_model_unet_function_wrapper(refuse_sampling)
vae4 = comfy.sd.VAE(sd=tiny_taesd_state_dict(4))
def bad(latent, **kw):
    try:
        return error(lambda: search(latent, 1, "euler", model=watched, **kw))
    except Sampled:
        return "SAMPLED"
out["refused"] = {
    "empty_batch": bad({"samples": torch.zeros(0, 16, 8, 8)}),
    "video": bad({"samples": torch.zeros(1, 16, 3, 8, 8)}),
    "vae_channels": bad({"samples": torch.zeros(1, 16, 8, 8)}, vae=vae4),
}
""",
    "nan": r"""
# NaN from the VAE is blamed on the VAE, NaN from the model on the model.
nan_vae = copy.deepcopy(vae)
with torch.no_grad():
    next(nan_vae.first_stage_model.taesd_decoder.parameters()).fill_(float("nan"))
def nan_model(apply_model, args):
    return apply_model(args["input"], args["timestep"], **args["c"]) * float("nan")
nan_unet = model.clone()
nan_unet.set_model_unet_function_wrapper(nan_model)
out["nan"] = {"vae": error(lambda: search(empty, 1, "euler", vae=nan_vae, candidates=1)),
              "model": error(lambda: search(empty, 1, "euler", model=nan_unet, candidates=1))}
""",
    "notes": r"""
# 5. Nothing silent: every note reaches the log and the status text.
import types
server_module = sys.modules.setdefault("server", types.ModuleType("server"))
server_module.PromptServer = types.SimpleNamespace()
class FakeServer:
    def __init__(self):
        self.texts = []
    def send_progress_text(self, text, node_id, sid=None):
        self.texts.append((text, node_id))
fake = FakeServer()
server_module.PromptServer.instance = fake
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.INFO)

class Node(NoiseSearchSampler):
    pass
Node.hidden = types.SimpleNamespace(unique_id="17")
args = Node.execute(model, positive, negative, empty, 3, 4, 3.0, "euler", "simple", 1.0, vae, handle(Brightness()), "",
                    **dict(SET, candidates=4096, budget_nfe=8, top_k=5, batch_size=8)).args
report = args[4]
status = [t for t, node in fake.texts if node == "17"][-1:]
batch_note = Node.execute(model, positive, negative, empty, 3, 4, 3.0, "euler", "simple", 1.0, vae,
                          handle(Brightness()), "", **dict(SET, candidates=2, batch_size=8)).args[4].all_notes()
out["notes"] = {"batch_size": batch_note, "report": report.all_notes(), "json": report.to_dict()["notes"],
                "items": report.to_dict()["items"][0]["notes"], "log": records,
                "status": status}
""",
    "newer": r"""
# 6. Newer ComfyUI, faked where 0.3.64 lacks it.
from noise_search.nodes import comfy_model as cs, viewer as viewer_node
import comfy.model_management as mm, comfy.model_sampling
newer = {}
# fix_empty_latent_channels takes the latent's downscale ratios; the outputs drop them as the stock samplers do.
stock_fix = comfy.sample.fix_empty_latent_channels
seen_ratios = []
def fix_with_ratios(model, latent_image, downscale_ratio_spacial=None, downscale_ratio_temporal=None):
    seen_ratios.append((downscale_ratio_spacial, downscale_ratio_temporal))
    return stock_fix(model, latent_image)
comfy.sample.fix_empty_latent_channels = fix_with_ratios
hinted = {"samples": torch.zeros(1, 4, 8, 8), "downscale_ratio_spacial": 8, "custom": "kept"}
lat, img, topk, noise, report, seed_out = search(hinted, 9, "euler", candidates=2)
comfy.sample.fix_empty_latent_channels = stock_fix
newer["ratios"] = [seen_ratios[-1:], sorted(lat), sorted(topk), list(lat["samples"].shape),
                   noise.generate_noise({"samples": lat["samples"]}).shape[1]]
# default_noise_sampler offsets its CPU seed: the search follows whatever ComfyUI's own sampler draws.
stock_default = k_sampling.default_noise_sampler
def offset_default(x, seed=None):
    return stock_default(x, seed=None if seed is None else seed + 1)
k_sampling.default_noise_sampler = offset_default
report = search(empty, 12, "euler_ancestral", candidates=2)[4]
newer["offset_seed"] = [max_diff(report.latents[0][i], stock(empty, 12 + i, "euler_ancestral")) for i in range(2)]
k_sampling.default_noise_sampler = stock_default
# Model samplings whose noise scaling ignores the noise are refused; flow re-noising follows noise_scale.
class IgnoresNoise(type(model.get_model_object("model_sampling"))):
    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return latent_image
ignoring = model.clone()
ignoring.add_object_patch("model_sampling", IgnoresNoise(model.model.model_config))
newer["ignores_noise"] = error(lambda: search(empty, 1, "euler", model=ignoring))
flow = comfy.model_sampling.CONST()
flow.noise_scale = 0.5
x, n = torch.zeros(1, 4), torch.ones(1, 4)
newer["noise_scale"] = [float(cs.renoise_for(flow)(x, 0.2, 0.6, n)[0, 0]),
                        float(cs.renoise_for(comfy.model_sampling.CONST())(x, 0.2, 0.6, n)[0, 0])]
# After scoring, exactly the models sampling loaded come back (a second model included) with the rows' memory.
extra_model = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
dual = model.clone()
dual.set_additional_models("noise_search_test", [extra_model])
stock_load = mm.load_models_gpu
loads = []
def record_load(models, memory_required=0, **kwargs):
    loads.append(([type(m.model).__name__ for m in models], memory_required, kwargs.get("minimum_memory_required")))
    return stock_load(models, memory_required=memory_required, **kwargs)
mm.load_models_gpu = record_load
search(empty, 4, "euler", model=dual, candidates=3, batch_size=2)
mm.load_models_gpu = stock_load
newer["reload"] = loads
# Free memory comes from the patcher where it offers it (dynamic VRAM).
class Patcher:
    load_device = torch.device("cuda")
    def get_free_memory(self, device):
        return 1000
class Inner:
    current_patcher = Patcher()
    def memory_required(self, shape):
        return 100
class Wrap:
    model_patcher = Patcher()
    inner_model = Inner()
newer["free"] = [cs.auto_rows(Wrap(), (1, 4, 8, 8))]
Patcher.get_free_memory = None
stock_free = mm.get_free_memory
mm.get_free_memory = lambda device=None, torch_free_too=False: 500
newer["free"].append(cs.auto_rows(Wrap(), (1, 4, 8, 8)))
mm.get_free_memory = stock_free
# The viewer says when a pick would re-run the search, per caching mode.
modes = {"classic_0364": types.SimpleNamespace(cache_classic=False, cache_lru=0, cache_none=False),
         "ram_pressure": types.SimpleNamespace(cache_classic=False, cache_lru=0, cache_none=False, cache_ram=[]),
         "classic": types.SimpleNamespace(cache_classic=True, cache_lru=0, cache_none=False, cache_ram=[]),
         "none": types.SimpleNamespace(cache_classic=False, cache_lru=0, cache_none=True)}
newer["pick_warning"] = {k: viewer_node.pick_warning(v) for k, v in modes.items()}
out["newer"] = newer
""",
}

BODY = COMMON + "".join(f"section({name!r}, {code!r})\n" for name, code in SECTIONS.items())


@pytest.fixture(scope="module")
def ran(tiny_sd3_dir) -> dict:
    return run_in_comfyui(BODY, tiny_sd3_dir)


def part(ran: dict, name: str):
    """One section's results; the test fails with the section's exception when it crashed."""
    crashed = ran.get("crashed", {})
    assert name not in crashed, f"section {name} crashed: {crashed[name]}"
    return ran[name]


EXACT = 0.0


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize("case", ["txt2img-euler_ancestral", "txt2img-dpmpp_2m_sde", "img2img-euler_ancestral"])
def test_batch_item_b_candidate_i_is_row_b_of_stock_seed_plus_i(ran, rows, case):
    diffs, distinct = part(ran, "batches")[f"{rows}-{case}"]
    assert len(diffs) == rows and distinct  # items no longer share item 0's noises
    worst = max(max(d) for d in diffs)
    # one row per model call against the stock's batched call: equal to float rounding (exact for one row)
    assert worst == EXACT if rows == 1 else worst < 1e-5


def test_every_comfyui_sampler_counts_nfes_exactly_and_reproduces_stock(ran):
    matrix = part(ran, "matrix")
    assert set(matrix) >= {"euler", "uni_pc", "uni_pc_bh2", "ddim", "dpm_adaptive", "heun", "dpmpp_2m_sde"}
    for name, row in matrix.items():
        assert "crashed" not in row, (name, row)
        if "refused" in row:
            assert name == "dpm_adaptive" and "sampler_name dpm_adaptive" in row["refused"], row
            continue
        assert row["nfe"] == row["planned"] == 2 * row["stock_calls"], (name, row)  # two candidates
        if name in ("uni_pc", "uni_pc_bh2"):
            # stock uni_pc writes 0.001 into its own last sigma, so stock divides its flow result by 0.999
            assert 1e-4 < row["diff"] < 5e-3, (name, row)
        else:
            assert row["diff"] == EXACT, (name, row)


@pytest.mark.parametrize("case, needles", [
    ("empty_batch", ["Noise Search Sampler:", "latent_image", "0 items"]),
    ("video", ["Noise Search Sampler:", "latent_image", "video", "3 frames"]),
    ("vae_channels", ["Noise Search Sampler:", "vae", "4-channel", "16-channel", "VAE that belongs to the model"]),
])
def test_bad_latents_and_vaes_are_refused_before_sampling(ran, case, needles):
    message = part(ran, "refused")[case]
    assert message not in (None, "SAMPLED"), f"{case}: {message}"
    for needle in needles:
        assert needle in message, message


def test_nan_is_blamed_on_its_source(ran):
    assert "VAE decoded NaN" in part(ran, "nan")["vae"] and "--fp32-vae" in part(ran, "nan")["vae"]
    assert "model produced NaN" in part(ran, "nan")["model"] and "verifier" not in part(ran, "nan")["model"]


def test_every_note_reaches_report_log_and_status_text(ran):
    notes = part(ran, "notes")
    wanted = ["budget_nfe=8", "top_k=5"]
    for needle in wanted:
        assert any(needle in n for n in notes["report"]), notes["report"]
    for note in notes["report"]:
        assert f"Noise Search: {note}" in notes["log"]
        assert f"note: {note}" in notes["status"][0]
    assert notes["report"] == notes["json"] + notes["items"]


def test_batch_size_larger_than_candidates_is_noted(ran):
    assert any("batch_size=8" in n for n in part(ran, "notes")["batch_size"])


def test_newer_fix_empty_latent_channels_gets_the_ratios_and_outputs_drop_them(ran):
    seen, latent_keys, top_k_keys, shape, noise_channels = part(ran, "newer")["ratios"]
    assert seen == [[8, None]]
    assert latent_keys == ["custom", "samples"] and top_k_keys == ["custom", "samples"]
    assert shape == [1, 16, 8, 8] and noise_channels == 16


def test_newer_default_noise_sampler_is_followed(ran):
    assert part(ran, "newer")["offset_seed"] == [EXACT, EXACT]


def test_models_that_ignore_noise_are_refused_and_flow_renoise_uses_noise_scale(ran):
    message = part(ran, "newer")["ignores_noise"]
    assert "Noise Search Sampler:" in message and "ignores the initial noise" in message
    scaled, plain = part(ran, "newer")["noise_scale"]
    assert plain == pytest.approx((0.6**2 - (0.4 / 0.8 * 0.2) ** 2) ** 0.5)
    assert scaled == pytest.approx(0.5 * plain)


def test_reload_after_scoring_brings_back_every_sampling_model_with_row_memory(ran):
    reloads = [entry for entry in part(ran, "newer")["reload"] if "Linear" in entry[0] and "SD3" in entry[0]]
    assert reloads, part(ran, "newer")["reload"]
    assert all(required > 0 for _, required, _ in reloads)


def test_free_memory_comes_from_the_patcher_when_it_offers_it(ran):
    assert part(ran, "newer")["free"] == [8, 4]  # 1000 * 0.8 // 100 from the patcher, else 500 * 0.8 // 100


def test_viewer_says_when_a_pick_reruns_the_search(ran):
    warning = part(ran, "newer")["pick_warning"]
    assert "RAM-pressure" in warning["ram_pressure"] and "--cache-classic" in warning["ram_pressure"]
    assert "RAM-pressure" not in warning["classic"] and "re-runs" in warning["classic"]
    assert warning["classic_0364"] == warning["classic"]
    assert "every pick re-runs" in warning["none"]
