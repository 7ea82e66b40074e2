"""Aesthetic (LAION MLP), PickScore and HPSv2 on tiny real-format checkpoints, against independent computations."""

import shutil

import numpy as np
import pytest
import torch

from noise_search.tests.helpers.tiny_models import (
    TINY_OPEN_CLIP,
    TINY_OPEN_CLIP_CONFIG,
    make_aesthetic_mlp,
    make_hf_cache_repo,
    make_hf_clip,
    make_hf_processor,
    make_open_clip_checkpoint,
    random_images,
    register_tiny_open_clip,
)
from noise_search.verifiers import loading
from noise_search.verifiers.aesthetic import load_aesthetic
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.preference import load_hpsv2, load_pickscore

SIZE = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("preference_models")
    register_tiny_open_clip()
    return {"clip": make_hf_clip(root / "clip", seed=3),
            "pick": make_hf_clip(root / "pick", seed=4, with_processor=False),
            "proc": make_hf_processor(root / "proc", image_size=SIZE),
            "mlp": make_aesthetic_mlp(root / "mlp.pth", input_dim=16, seed=5),
            "hps": make_open_clip_checkpoint(root / "HPS_v2.1_compressed.pt", seed=6, wrap_state_dict=True,
                                             dtype=torch.float16)}


def uint8_images(n, h=SIZE, w=SIZE, seed=0):
    raw = np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    return raw, torch.from_numpy(raw).float() / 255.0


def normalised(x):
    x = x if isinstance(x, torch.Tensor) else x.pooler_output
    return x / x.norm(dim=-1, keepdim=True)


def hf_embeddings(model_dir, proc_dir, raw, texts=None):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer
    model = CLIPModel.from_pretrained(str(model_dir)).eval()
    pixels = CLIPImageProcessor.from_pretrained(str(proc_dir))(images=list(raw), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        img = normalised(model.get_image_features(pixel_values=pixels))
        if texts is None:
            return model, img, None
        tok = CLIPTokenizer.from_pretrained(str(proc_dir))(texts, padding=True, return_tensors="pt")
        txt = normalised(model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))
    return model, img, txt


# --- aesthetic ----------------------------------------------------------------------------------------------------

def test_aesthetic_equals_mlp_over_normalised_clip_embeddings(models):
    raw, images = uint8_images(6, seed=1)
    _, emb, _ = hf_embeddings(models["clip"], models["clip"], raw)
    state = torch.load(str(models["mlp"]), weights_only=True)
    x = emb
    for i in (0, 2, 4, 6, 7):  # Dropout layers are identity at inference
        x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    v = load_aesthetic(str(models["mlp"]), clip_model=str(models["clip"]))
    assert v.needs == frozenset()
    scores = v.score(images)
    assert scores.shape == (6,) and torch.allclose(scores, x[:, 0], atol=1e-4)
    assert torch.equal(scores, v.score(images, prompt="ignored"))


def test_aesthetic_order_and_batching(models):
    v = load_aesthetic(str(models["mlp"]), clip_model=str(models["clip"]), batch_size=1)
    images = random_images(9, 50, 37, seed=2)
    one = v.score(images)
    v.batch_size = 7
    seven = v.score(images)
    perm = torch.arange(9).flip(0)
    assert torch.allclose(one, seven, atol=1e-5) and torch.allclose(v.score(images[perm]), seven[perm], atol=1e-5)


def test_aesthetic_safetensors_and_state_dict_wrapper(models, tmp_path):
    from safetensors.torch import save_file
    state = torch.load(str(models["mlp"]), weights_only=True)
    save_file(state, str(tmp_path / "mlp.safetensors"))
    torch.save({"state_dict": state}, str(tmp_path / "wrapped.pth"))
    images = random_images(3, seed=3)
    ref = load_aesthetic(str(models["mlp"]), clip_model=str(models["clip"])).score(images)
    for name in ("mlp.safetensors", "wrapped.pth"):
        assert torch.equal(load_aesthetic(str(tmp_path / name), clip_model=str(models["clip"])).score(images), ref)


def test_aesthetic_rejects_mismatched_or_foreign_weights(models, tmp_path):
    make_aesthetic_mlp(tmp_path / "wide.pth", input_dim=24)
    with pytest.raises(VerifierError, match="24-d embeddings but clip_model .* gives 16-d"):
        load_aesthetic(str(tmp_path / "wide.pth"), clip_model=str(models["clip"]))
    torch.save({"fc.weight": torch.zeros(1, 16)}, str(tmp_path / "other.pth"))
    with pytest.raises(VerifierError, match="not the LAION aesthetic MLP.*layers.0.weight"):
        load_aesthetic(str(tmp_path / "other.pth"), clip_model=str(models["clip"]))


def test_aesthetic_default_name_found_in_the_hf_cache(models, tmp_path, monkeypatch):
    """The dropdown name resolves to camenduru/improved-aesthetic-predictor's file in the hub cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    make_hf_cache_repo(tmp_path / "cache", "camenduru/improved-aesthetic-predictor",
                       {"sac+logos+ava1-l14-linearMSE.pth": models["mlp"]})
    images = random_images(2, seed=4)
    v = load_aesthetic(clip_model=str(models["clip"]))
    explicit = load_aesthetic(str(models["mlp"]), clip_model=str(models["clip"]))
    assert torch.equal(v.score(images), explicit.score(images))


def test_aesthetic_missing_clip_names_the_option_and_source(models, tmp_path):
    saved = loading.model_dirs()
    loading.set_model_dirs([tmp_path])
    try:
        with pytest.raises(VerifierError) as err:
            load_aesthetic(str(models["mlp"]), clip_model="openai/clip-vit-large-patch14")
    finally:
        loading.set_model_dirs(saved)
    msg = str(err.value)
    assert "aesthetic" in msg and str(tmp_path) in msg and "https://huggingface.co/openai/clip-vit-large-patch14" in msg


# --- PickScore ----------------------------------------------------------------------------------------------------

def test_pickscore_equals_logit_scale_times_cosine(models):
    raw, images = uint8_images(5, seed=7)
    model, img, txt = hf_embeddings(models["pick"], models["proc"], raw, ["a cat in a hat"])
    expected = model.logit_scale.exp().item() * (img @ txt[0])
    v = load_pickscore(str(models["pick"]), processor=str(models["proc"]))
    assert torch.allclose(v.score(images, prompt="a cat in a hat"), expected, atol=1e-3)
    with pytest.raises(VerifierError, match="needs a prompt"):
        v.score(images)


def test_pickscore_batching_and_processor_errors(models, tmp_path):
    v = load_pickscore(str(models["pick"]), processor=str(models["proc"]), batch_size=1)
    images = random_images(9, seed=8)
    one = v.score(images, prompt="x")
    v.batch_size = 7
    assert torch.allclose(one, v.score(images, prompt="x"), atol=1e-5)
    saved = loading.model_dirs()
    loading.set_model_dirs([tmp_path])
    try:
        with pytest.raises(VerifierError) as err:
            load_pickscore(str(models["pick"]), processor="laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    finally:
        loading.set_model_dirs(saved)
    assert "preprocessor_config.json" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(VerifierError, match="pick has no image processor: expected preprocessor_config.json"):
        load_pickscore(str(models["pick"]), processor=None)  # PickScore_v1 itself ships no processor files
    image_only = tmp_path / "image_only"
    image_only.mkdir()
    shutil.copyfile(models["proc"] / "preprocessor_config.json", image_only / "preprocessor_config.json")
    with pytest.raises(VerifierError, match="image_only has no tokenizer: expected tokenizer.json or vocab.json"):
        load_pickscore(str(models["pick"]), processor=str(image_only))


# --- HPSv2 --------------------------------------------------------------------------------------------------------

def test_hpsv2_equals_cosine_with_longest_side_resize_and_black_padding(models):
    """HPSv2 fits the long side and pads with black; images with long side 32 need padding only, so compare exactly."""
    import open_clip

    ckpt = torch.load(str(models["hps"]), weights_only=True)
    assert set(ckpt) == {"state_dict"} and next(iter(ckpt["state_dict"].values())).dtype == torch.float16
    ref = open_clip.create_model(TINY_OPEN_CLIP).eval()
    ref.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    tok = open_clip.get_tokenizer(TINY_OPEN_CLIP)
    raw, images = uint8_images(4, h=20, w=SIZE, seed=9)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
    padded = []
    for r in raw:  # 20 x 32 -> rows 6..25 hold the image, black above and below
        canvas = torch.zeros(3, SIZE, SIZE)
        canvas[:, 6:26] = torch.from_numpy(r.copy()).permute(2, 0, 1).float() / 255
        padded.append((canvas - mean) / std)
    with torch.no_grad():
        expected = normalised(ref.encode_image(torch.stack(padded))) @ normalised(ref.encode_text(tok(["a castle"])))[0]
    v = load_hpsv2(str(models["hps"]), arch=TINY_OPEN_CLIP)
    assert torch.allclose(v.score(images, prompt="a castle"), expected, atol=1e-4)


def test_hpsv2_dropdown_name_found_in_model_folder_and_batching(models):
    saved = loading.model_dirs()
    loading.set_model_dirs([models["hps"].parent])
    try:
        v = load_hpsv2(arch=TINY_OPEN_CLIP, batch_size=1)
    finally:
        loading.set_model_dirs(saved)
    images = random_images(9, 40, 64, seed=10)
    one = v.score(images, prompt="a dog")
    v.batch_size = 7
    assert torch.allclose(one, v.score(images, prompt="a dog"), atol=1e-5)
    perm = torch.tensor([8, 1, 2, 0, 4, 3, 6, 7, 5])
    assert torch.allclose(v.score(images[perm], prompt="a dog"), one[perm], atol=1e-5)


def test_hpsv2_architecture_mismatch_names_arch(models):
    wide = register_tiny_open_clip("NoiseSearch-Tiny-ViT-Wide", {**TINY_OPEN_CLIP_CONFIG, "embed_dim": 24})
    with pytest.raises(VerifierError, match="option 'arch'"):
        load_hpsv2(str(models["hps"]), arch=wide)


def test_hpsv2_missing_checkpoint_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    saved = loading.model_dirs()
    loading.set_model_dirs([tmp_path / "verifiers"])
    try:
        with pytest.raises(VerifierError) as err:
            load_hpsv2()
    finally:
        loading.set_model_dirs(saved)
    msg = str(err.value)
    for part in ("hpsv2", "HPS_v2.1_compressed.pt", str(tmp_path / "verifiers"), str(tmp_path / "empty_cache"),
                 "xswu/HPSv2", "https://huggingface.co/xswu/HPSv2"):
        assert part in msg, part
