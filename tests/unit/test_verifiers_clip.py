"""CLIPScore, CLIP zero-shot and the shared CLIP preprocessing / encoders, on tiny real-format checkpoints."""


import numpy as np
import pytest
import torch

from noise_search.tests.helpers.tiny_models import (
    TINY_OPEN_CLIP,
    make_hf_clip,
    make_open_clip_checkpoint,
    random_images,
    register_tiny_open_clip,
)
from noise_search.verifiers import clip, loading
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.preprocess import ImagePreprocess

# The tiny models see 32x32 inputs: 8-bit images of exactly that size need no resize or crop, so the reference
# processors and our torch preprocessing agree to float rounding and values can be compared tightly.
SIZE = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_models")
    register_tiny_open_clip()
    return {"hf": make_hf_clip(root / "hf_clip", seed=1),  # seed 1: cosines of both signs
            "oc_pt": make_open_clip_checkpoint(root / "oc.pt", seed=1),
            "oc_st": make_open_clip_checkpoint(root / "oc.safetensors", seed=2)}


def uint8_images(n, h=SIZE, w=SIZE, seed=0):
    """Images whose values are multiples of 1/255, as uint8 arrays and as ComfyUI IMAGE floats."""
    raw = np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    return raw, torch.from_numpy(raw).float() / 255.0


def hf_reference(folder):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer
    return (CLIPModel.from_pretrained(str(folder)).eval(), CLIPTokenizer.from_pretrained(str(folder)),
            CLIPImageProcessor.from_pretrained(str(folder)))


def hf_image_emb(model, processor, raw):
    with torch.no_grad():
        out = model.get_image_features(pixel_values=processor(images=list(raw), return_tensors="pt")["pixel_values"])
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return out / out.norm(dim=-1, keepdim=True)


def hf_text_emb(model, tokenizer, texts):
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return out / out.norm(dim=-1, keepdim=True)


# --- preprocessing against the reference processors -------------------------------------------------------------

def noisy_uint8(h, w, seed):
    """Blocky colours plus per-pixel noise: a hard case for resampling (overshoot, rounding)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    low = (rng.random((h // 8 + 2, w // 8 + 2, 3)) * 255).astype(np.uint8)
    base = Image.fromarray(low).resize((w, h), Image.BILINEAR)
    return np.clip(np.asarray(base).astype(int) + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


# Reference pipelines resize 8-bit images (PIL: two separable passes, each rounded to uint8; torchvision's uint8
# kernel: fixed-point weights) while we resize floats. So they are not bit-exact: on this sharp noise a few pixels
# differ by up to 4 8-bit steps (torchvision's own uint8 and float resizes differ as much), 99.9% by at most one
# step and the mean by under half a step. Compared in 8-bit steps: |ours - ref| * std * 255.


def assert_close_to_reference(ours, ref, std):
    steps = (ours - ref).abs() * torch.tensor(std).view(1, 3, 1, 1) * 255
    within_one = float((steps <= 1.01).float().mean())
    assert steps.max() <= 5 and within_one >= 0.999 and steps.mean() < 0.5, \
        (float(steps.max()), within_one, float(steps.mean()))


def hf_processors():
    from transformers import CLIPImageProcessor
    procs = [CLIPImageProcessor]
    try:  # transformers >= 5 has both backends; in 4.x CLIPImageProcessor is the PIL one
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        procs.append(CLIPImageProcessorPil)
    except ImportError:
        pass
    return procs


@pytest.mark.parametrize("hw", [(300, 417), (512, 512), (97, 150), (401, 300), (225, 301)])
@pytest.mark.parametrize("sizes", [(224, 224), (256, 224)])
def test_preprocess_matches_hf_clip_image_processor(hw, sizes):
    from PIL import Image
    raw = noisy_uint8(*hw, seed=hw[0])
    for cls in hf_processors():
        proc = cls(size={"shortest_edge": sizes[0]}, crop_size={"height": sizes[1], "width": sizes[1]})
        ref = proc(images=Image.fromarray(raw), return_tensors="pt")["pixel_values"]
        ours = ImagePreprocess.from_hf(proc)(torch.from_numpy(raw)[None].float() / 255)
        assert ours.shape == ref.shape == (1, 3, sizes[1], sizes[1])
        assert_close_to_reference(ours, ref, proc.image_std)


@pytest.mark.parametrize("mode", ["shortest", "longest"])
@pytest.mark.parametrize("hw", [(300, 417), (97, 150), (401, 300), (225, 300)])
def test_preprocess_matches_open_clip_transform(mode, hw):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.transform import image_transform
    from PIL import Image
    raw = noisy_uint8(*hw, seed=hw[1])
    ref = image_transform(224, is_train=False, resize_mode=mode)(Image.fromarray(raw))[None]
    net = torch.nn.Module()
    net.preprocess_cfg = {"size": 224, "mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD,
                          "interpolation": "bicubic", "resize_mode": mode, "fill_color": 0}
    ours = ImagePreprocess.from_open_clip(net)(torch.from_numpy(raw)[None].float() / 255)
    assert ours.shape == ref.shape
    assert_close_to_reference(ours, ref, OPENAI_DATASET_STD)


def test_preprocess_follows_dtype_and_rejects_bad_layout():
    pre = ImagePreprocess(size=(16, 16))
    x = random_images(2, 20, 30)
    assert pre(x, dtype=torch.float64).dtype == torch.float64
    gray = pre(x[..., :1])
    assert torch.allclose(gray[:, 0] * pre.std[0] + pre.mean[0], gray[:, 1] * pre.std[1] + pre.mean[1], atol=1e-6)
    with pytest.raises(VerifierError, match=r"\[B, H, W, 3\]"):
        pre(x.permute(0, 3, 1, 2))


# --- CLIPScore ----------------------------------------------------------------------------------------------------

def test_clip_score_hf_equals_independent_computation(models):
    model, tokenizer, processor = hf_reference(models["hf"])
    v = clip.load_clip_score(str(models["hf"]))
    raw, images = uint8_images(6)
    for prompt in ("a cat", "a dog on grass", "zzz"):
        cos = (hf_image_emb(model, processor, raw) @ hf_text_emb(model, tokenizer, [prompt]).T)[:, 0]
        expected = torch.clamp(100 * cos, min=0)
        assert torch.allclose(v.score(images, prompt=prompt), expected, atol=1e-4)
    # the clamp is live: with these random weights some cosines are negative and some positive
    cos = (hf_image_emb(model, processor, raw) @ hf_text_emb(model, tokenizer, ["a cat", "zzz"]).T)
    assert (cos < 0).any() and (cos > 0).any()


@pytest.mark.parametrize("key", ["oc_pt", "oc_st"])
def test_clip_score_open_clip_equals_independent_computation(models, key):
    import open_clip
    from open_clip.transform import image_transform
    from PIL import Image

    ref = open_clip.create_model(TINY_OPEN_CLIP, pretrained=str(models[key])).eval()
    tok = open_clip.get_tokenizer(TINY_OPEN_CLIP)
    transform = image_transform(SIZE, is_train=False)
    raw, images = uint8_images(5, seed=3)
    with torch.no_grad():
        img = ref.encode_image(torch.stack([transform(Image.fromarray(r)) for r in raw]))
        txt = ref.encode_text(tok(["a red car"]))
    cos = (img / img.norm(dim=-1, keepdim=True)) @ (txt / txt.norm(dim=-1, keepdim=True))[0]
    v = clip.load_clip_score(str(models[key]), arch=TINY_OPEN_CLIP)
    assert torch.allclose(v.score(images, prompt="a red car"), torch.clamp(100 * cos, min=0), atol=1e-4)


@pytest.mark.parametrize("key", ["hf", "oc_pt"])
def test_clip_score_order_determinism_and_batching(models, key):
    arch = {"arch": TINY_OPEN_CLIP} if key != "hf" else {}
    v = clip.load_clip_score(str(models[key]), **arch)
    images = random_images(9, 45, 61, seed=5)
    a = v.score(images, prompt="a photo")
    assert a.shape == (9,) and a.dtype == torch.float32
    assert torch.equal(a, v.score(images, prompt="a photo"))
    perm = torch.tensor([4, 0, 8, 2, 7, 1, 6, 3, 5])
    assert torch.allclose(v.score(images[perm], prompt="a photo"), a[perm], atol=1e-5)
    v.batch_size = 1
    one = v.score(images, prompt="a photo")
    calls = []
    net = v.model.net
    name = "encode_image" if key != "hf" else "get_image_features"
    original = getattr(net, name)
    setattr(net, name, lambda *args, **kw: calls.append(1) or original(*args, **kw))
    v.batch_size = 7
    seven = v.score(images, prompt="a photo")
    assert len(calls) == 2  # one model call per chunk of batch_size (7 + 2)
    assert torch.allclose(one, seven, atol=1e-5) and torch.allclose(one, a, atol=1e-5)


def test_clip_score_follows_the_model_dtype(models):
    v = clip.load_clip_score(str(models["hf"]))
    images = random_images(3, seed=8)
    a = v.score(images, prompt="a cat")
    v.to(dtype=torch.float64)
    b = v.score(images, prompt="a cat")
    assert v.dtype == torch.float64 and b.dtype == torch.float32 and torch.allclose(a, b, atol=1e-3)


def test_prompt_missing_is_a_clear_error(models):
    v = clip.load_clip_score(str(models["hf"]))
    for prompt in (None, "", "   "):
        with pytest.raises(VerifierError, match="needs a prompt"):
            v.score(random_images(1), prompt=prompt)


def test_missing_clip_model_error(tmp_path):
    saved = loading.model_dirs()
    loading.set_model_dirs([tmp_path / "verifiers"])
    try:
        with pytest.raises(VerifierError) as err:
            clip.load_clip_score("openai/clip-vit-large-patch14-missing")
    finally:
        loading.set_model_dirs(saved)
    msg = str(err.value)
    assert "clip_score" in msg and "config.json" in msg and "open_clip" in msg
    assert str(tmp_path / "verifiers") in msg and "Hugging Face cache" in msg
    assert "https://huggingface.co/openai/clip-vit-large-patch14-missing" in msg


def test_incomplete_hf_folder_names_the_missing_files(models, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(models["hf"], broken)
    (broken / "preprocessor_config.json").unlink()
    (broken / "model.safetensors").unlink()
    with pytest.raises(VerifierError, match=r"broken lacks model\.safetensors \(or pytorch_model\.bin\)"):
        clip.load_clip_score(str(broken))
    shutil.copyfile(models["hf"] / "model.safetensors", broken / "model.safetensors")
    with pytest.raises(VerifierError, match=r"broken has no image processor: expected preprocessor_config\.json "
                                            r"\(or processor_config\.json"):
        clip.load_clip_score(str(broken))


def test_hf_folder_without_tokenizer_files(models, tmp_path):
    """transformers 5 builds an empty tokenizer from config.json alone: its size gives it away."""
    import shutil
    folder = tmp_path / "no_tokenizer"
    shutil.copytree(models["hf"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(VerifierError, match=r"no_tokenizer.*expected .*tokenizer\.json or vocab\.json \+ merges\.txt"):
        clip.load_clip_score(str(folder))


def test_bad_options_name_the_option(models):
    with pytest.raises(VerifierError, match="arch"):
        clip.load_clip_score(str(models["oc_pt"]))
    with pytest.raises(VerifierError, match="'arch' = 'ViT-Nope'"):
        clip.load_clip_score(str(models["oc_pt"]), arch="ViT-Nope")
    with pytest.raises(VerifierError, match="'arch' applies to open_clip checkpoint files"):
        clip.load_clip_score(str(models["hf"]), arch=TINY_OPEN_CLIP)
    with pytest.raises(VerifierError, match="no option 'labels'.*arch, batch_size"):
        clip.load_clip_score(str(models["hf"]), labels="a, b")
    with pytest.raises(VerifierError, match="batch_size"):
        clip.load_clip_score(str(models["hf"]), batch_size=0)


# --- shared encoders ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["hf", "oc_st"])
def test_encode_images_helper(models, key):
    arch = TINY_OPEN_CLIP if key != "hf" else None
    backbone = clip.load_clip_backbone(str(models[key]), arch=arch)
    images = random_images(4, 40, 50, seed=9)
    feats = clip.encode_images(backbone.kind, backbone.net, images, backbone.preprocess)
    assert feats.shape == (4, backbone.embed_dim) and feats.dtype == torch.float32
    assert torch.allclose(feats.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.equal(feats, backbone.encode_images(images))
    if key == "hf":
        with pytest.raises(VerifierError, match="ImagePreprocess"):
            clip.encode_images("hf", backbone.net, images)
    else:  # open_clip models carry their own preprocess_cfg
        assert torch.equal(feats, clip.encode_images("open_clip", backbone.net, images))


# --- zero-shot ----------------------------------------------------------------------------------------------------

LABELS = ["cat", "dog", "red bird"]


def test_zero_shot_equals_independent_softmax(models):
    model, tokenizer, processor = hf_reference(models["hf"])
    templates = ["a photo of a {}.", "art of the {}"]
    raw, images = uint8_images(5, seed=11)
    img = hf_image_emb(model, processor, raw)
    classes = []
    for label in LABELS:
        t = hf_text_emb(model, tokenizer, [tpl.format(label) for tpl in templates]).mean(dim=0)
        classes.append(t / t.norm())
    logits = model.logit_scale.exp().item() * img @ torch.stack(classes).T
    expected = torch.log_softmax(logits, dim=-1)
    total = torch.zeros(5)
    for target in range(3):
        v = clip.load_clip_zero_shot(str(models["hf"]), labels=LABELS, target=target, templates=templates)
        s = v.score(images)
        assert torch.allclose(s, expected[:, target], atol=1e-4)
        total += s.exp()
    assert torch.allclose(total, torch.ones(5), atol=1e-5)


def test_zero_shot_caches_text_embeddings_and_batches(models):
    v = clip.load_clip_zero_shot(str(models["oc_pt"]), arch=TINY_OPEN_CLIP, labels="cat, dog\nred bird", target="dog")
    assert v.labels == LABELS and v.target == 1 and v.templates == list(clip.DEFAULT_TEMPLATES)
    calls = []
    original = v.model.net.encode_text
    v.model.net.encode_text = lambda *a, **k: calls.append(1) or original(*a, **k)
    images = random_images(9, seed=12)
    v.batch_size = 4
    a = v.score(images)
    v.batch_size = 9
    b = v.score(images)
    assert len(calls) == 1 and torch.allclose(a, b, atol=1e-5) and bool((a <= 0).all())


def test_zero_shot_option_parsing():
    assert clip.parse_labels(" cat ,dog\n\nbird ") == ["cat", "dog", "bird"]
    assert clip.parse_target("bird", ["cat", "bird"]) == 1
    assert clip.parse_target("1", ["cat", "bird"]) == 1
    assert clip.parse_target(0, ["cat", "bird"]) == 0
    assert clip.parse_target("7", ["7", "bird"]) == 0  # an exact label wins over an index
    assert clip.parse_templates("a {}\nart of {}") == ["a {}", "art of {}"]
    for bad in (None, "", "cat", ["cat", " "]):
        with pytest.raises(VerifierError, match="'labels' needs at least two"):
            clip.parse_labels(bad)
    with pytest.raises(VerifierError, match="repeats cat"):
        clip.parse_labels("cat, dog, cat")
    with pytest.raises(VerifierError, match="'target'.*cat, bird.*0..1"):
        clip.parse_target("fish", ["cat", "bird"])
    with pytest.raises(VerifierError, match="'target'"):
        clip.parse_target(2, ["cat", "bird"])
    with pytest.raises(VerifierError, match="'templates'"):
        clip.parse_templates(["a photo"])


def test_zero_shot_needs_labels_before_loading_weights():
    with pytest.raises(VerifierError, match="'labels'"):
        clip.load_clip_zero_shot("/nonexistent/model")
