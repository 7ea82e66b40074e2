"""ImageReward on a tiny checkpoint in THUDM's key layout, loaded through the registry, against a plain-torch forward
of the raw tensors (timm ViT, BLIP med.py BERT, the MLP), plus tokenisation, preprocessing and strict loading."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noise_search.tests.helpers.tiny_image_reward import (
    TINY,
    bert_vocab,
    image_reward_state,
    make_bert_tokenizer,
    make_image_reward,
)
from noise_search.tests.helpers.tiny_models import random_images
from noise_search.verifiers import describe, load_verifier, loading
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.image_reward import image_preprocess, load_image_reward, tokenize

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # ImageReward.py's Normalize
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROMPT = "a red cat sitting on the mat"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_reward")
    return {"root": root, "model": make_image_reward(root / "ImageReward", seed=7),
            "tokenizer": make_bert_tokenizer(root / "bert-base-uncased")}


@pytest.fixture(scope="module")
def verifier(files):
    return load_verifier("image_reward", str(files["model"]), dtype=torch.float64, tokenizer=str(files["tokenizer"]))


def original_tokenizer(folder):
    """BLIP's init_tokenizer, as ImageReward builds it."""
    from transformers import BertTokenizer
    tok = BertTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


# --- an independent forward of the raw checkpoint tensors --------------------------------------------------------

def layer_norm(x, s, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], s[f"{prefix}.weight"], s[f"{prefix}.bias"], eps)


def linear(x, s, prefix):
    return F.linear(x, s[f"{prefix}.weight"], s[f"{prefix}.bias"])


def vit(s, pixels, heads):
    """BLIP's timm VisionTransformer: patches + [CLS] + positions, pre-norm blocks (eps 1e-6), final norm."""
    v = "blip.visual_encoder."
    x = F.conv2d(pixels, s[f"{v}patch_embed.proj.weight"], s[f"{v}patch_embed.proj.bias"],
                 stride=s[f"{v}patch_embed.proj.weight"].shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([s[f"{v}cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + s[f"{v}pos_embed"]
    b, n, c = x.shape
    for i in range(TINY["vision_layers"]):
        p = f"{v}blocks.{i}."
        qkv = linear(layer_norm(x, s, f"{p}norm1", 1e-6), s, f"{p}attn.qkv")
        q, k, val = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
        x = x + linear((att @ val).transpose(1, 2).reshape(b, n, c), s, f"{p}attn.proj")
        h = F.gelu(linear(layer_norm(x, s, f"{p}norm2", 1e-6), s, f"{p}mlp.fc1"))
        x = x + linear(h, s, f"{p}mlp.fc2")
    return layer_norm(x, s, f"{v}norm", 1e-6)


def bert_attention(s, prefix, x, context, mask, heads):
    """med.py's BertAttention: scaled dot product with an additive mask, then dense + residual + LayerNorm."""
    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
    q, k, v = (split(linear(inp, s, f"{prefix}.self.{n}")) for inp, n in ((x, "query"), (context, "key"),
                                                                         (context, "value")))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
    return layer_norm(linear(out, s, f"{prefix}.output.dense") + x, s, f"{prefix}.output.LayerNorm", 1e-12)


def reference_scores(s, pixels, ids, mask):
    """ImageReward.score: ViT tokens, BERT cross-attending to them, MLP on [CLS], (r - mean) / std."""
    s = {k: v.double() if v.is_floating_point() else v for k, v in s.items()}
    image = vit(s, pixels.double(), heads=TINY["vision_width"] // 64)
    t = "blip.text_encoder."
    x = s[f"{t}embeddings.word_embeddings.weight"][ids] + s[f"{t}embeddings.position_embeddings.weight"][:ids.shape[1]]
    x = layer_norm(x, s, f"{t}embeddings.LayerNorm", 1e-12)
    self_mask = (1.0 - mask[:, None, None, :].double()) * -10000.0
    image_mask = torch.zeros(1, 1, 1, image.shape[1], dtype=torch.float64)
    for i in range(TINY["text_layers"]):
        p = f"{t}encoder.layer.{i}."
        x = bert_attention(s, f"{p}attention", x, x, self_mask, TINY["text_heads"])
        x = bert_attention(s, f"{p}crossattention", x, image, image_mask, TINY["text_heads"])
        h = F.gelu(linear(x, s, f"{p}intermediate.dense"))
        x = layer_norm(linear(h, s, f"{p}output.dense") + x, s, f"{p}output.LayerNorm", 1e-12)
    r = x[:, 0]
    for i in (0, 2, 4, 6, 7):
        r = linear(r, s, f"mlp.layers.{i}")
    return ((r.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072).float()


def test_scores_equal_an_independent_forward_of_the_raw_tensors(files, verifier):
    images = random_images(3, 32, 32, seed=1)  # the model's own size: preprocessing is normalisation alone
    state = torch.load(str(files["model"] / "ImageReward.pt"), weights_only=True)
    pixels = (images.permute(0, 3, 1, 2) - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(
        1, 3, 1, 1)
    for prompt in (PROMPT, "dogs", "a " * 60):
        tokens = original_tokenizer(files["tokenizer"])(prompt, padding="max_length", truncation=True, max_length=35,
                                                        return_tensors="pt")
        ref = reference_scores(state, pixels, tokens["input_ids"].expand(3, -1),
                               tokens["attention_mask"].expand(3, -1))
        ours = verifier.score(images, prompt=prompt)
        assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)
    assert verifier.score(images, prompt="a blue dog").sub(verifier.score(images, prompt=PROMPT)).abs().max() > 1e-3


def test_batched_equals_one_by_one_and_the_model_is_one_module(files, verifier):
    images = random_images(5, 48, 40, seed=2)
    one = load_verifier("image_reward", str(files["model"]), dtype=torch.float64, tokenizer=str(files["tokenizer"]),
                        batch_size=1)
    assert verifier.batch_size == 16 and one.batch_size == 1
    assert torch.allclose(verifier.score(images, prompt=PROMPT), one.score(images, prompt=PROMPT), atol=1e-9)
    assert verifier.name == "image_reward" and verifier.needs == {"prompt"}
    assert all(p.dtype == torch.float64 for p in verifier.model.parameters())
    n_weights = sum(1 for _ in verifier.model.state_dict())
    assert n_weights == len(image_reward_state(0)) - 5  # all but the ignored projections and position_ids
    with pytest.raises(VerifierError, match="needs a prompt"):
        verifier.score(images)


def test_tokenisation_follows_the_original_rules(files, verifier):
    ref = original_tokenizer(files["tokenizer"])
    vocab = bert_vocab()
    assert ref.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(vocab), len(vocab) + 1]
    for prompt in (PROMPT, "Photo of Cats [ENC]", "a " * 60, "unknown words"):
        ids, mask = tokenize(verifier.tokenizer, prompt)
        expected = ref(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])
        assert ids.shape == (1, 35) and ids[0, 0] == vocab.index("[CLS]")  # [CLS] stays: no [ENC] swap
    ids, mask = tokenize(verifier.tokenizer, "a " * 60)
    assert ids[0, -1] == vocab.index("[SEP]") and bool(mask.all())
    ids, mask = tokenize(verifier.tokenizer, "Photo of Cats [ENC]")
    assert ids[0, :7].tolist() == [vocab.index(w) for w in ("[CLS]", "photo", "of", "cat", "##s")] + [
        len(vocab) + 1, vocab.index("[SEP]")]
    assert mask.sum() == 7 and bool((ids[0, 7:] == 0).all())


def test_preprocess_matches_the_reference_transform():
    """ImageReward.py's Resize(224, bicubic), CenterCrop(224), ToTensor, Normalize on PIL, within 8-bit rounding."""
    from PIL import Image
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
    reference = Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224), ToTensor(),
                         Normalize(CLIP_MEAN, CLIP_STD)])
    rng = np.random.default_rng(0)
    for hw in ((300, 417), (401, 300), (225, 301)):
        low = (rng.random((hw[0] // 16 + 2, hw[1] // 16 + 2, 3)) * 200 + 25).astype(np.uint8)
        raw = np.asarray(Image.fromarray(low).resize((hw[1], hw[0]), Image.BILINEAR))
        ref = reference(Image.fromarray(raw))[None]
        ours = image_preprocess(224)(torch.from_numpy(raw.copy())[None].float() / 255)
        steps = (ours - ref).abs() * torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255
        assert ours.shape == ref.shape == (1, 3, 224, 224)
        assert steps.max() <= 2 and steps.mean() < 0.5, (float(steps.max()), float(steps.mean()))


# --- strict loading -----------------------------------------------------------------------------------------------

def _load(folder, tokenizer):
    return load_image_reward(str(folder), tokenizer=str(tokenizer))


def _with_state(files, tmp_path, edit):
    state = image_reward_state(7)
    edit(state)
    return make_image_reward(tmp_path / "edited", state=state)


@pytest.mark.parametrize("key", ["blip.visual_encoder.blocks.1.attn.qkv.weight", "blip.visual_encoder.cls_token",
                                 "blip.text_encoder.encoder.layer.1.crossattention.self.key.bias",
                                 "mlp.layers.7.bias"])
def test_a_missing_tensor_is_named_with_the_file(files, tmp_path, key):
    folder = _with_state(files, tmp_path, lambda s: s.pop(key))
    with pytest.raises(VerifierError) as err:
        _load(folder, files["tokenizer"])
    assert f"lacks the tensor '{key}'" in str(err.value) and str(folder / "ImageReward.pt") in str(err.value)


@pytest.mark.parametrize("key", ["blip.itm_head.weight", "blip.text_encoder.encoder.layer.2.output.dense.weight",
                                 "module.mlp.layers.0.weight"])
def test_an_unexpected_tensor_is_named_with_the_file(files, tmp_path, key):
    folder = _with_state(files, tmp_path, lambda s: s.__setitem__(key, torch.zeros(2, 2)))
    with pytest.raises(VerifierError) as err:
        _load(folder, files["tokenizer"])
    assert f"holds the tensor '{key}'" in str(err.value) and str(folder / "ImageReward.pt") in str(err.value)


def test_the_ignored_tensors_may_be_absent_and_a_misshapen_one_is_named(files, tmp_path):
    ignored = ("blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias",
               "blip.text_encoder.embeddings.position_ids")
    folder = _with_state(files, tmp_path, lambda s: [s.pop(k) for k in ignored])
    images = random_images(2, 32, 32)
    assert torch.allclose(_load(folder, files["tokenizer"]).score(images, prompt=PROMPT),
                          _load(files["model"], files["tokenizer"]).score(images, prompt=PROMPT))
    key = "blip.text_encoder.encoder.layer.0.attention.self.value.weight"
    folder = _with_state(files, tmp_path, lambda s: s.__setitem__(key, s[key][:, :-1]))
    with pytest.raises(VerifierError, match=f"holds '{key}' with shape \\(64, 63\\)"):
        _load(folder, files["tokenizer"])


def test_damaged_or_missing_files_are_named(files, tmp_path):
    folder = shutil.copytree(files["model"], tmp_path / "damaged")
    data = (folder / "ImageReward.pt").read_bytes()
    (folder / "ImageReward.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(VerifierError, match="ImageReward.pt is truncated or corrupt"):
        _load(folder, files["tokenizer"])
    torch.save({"model": image_reward_state(7)}, str(folder / "ImageReward.pt"))  # BLIP's wrapped layout
    with pytest.raises(VerifierError, match="its key 'model' holds no tensor"):
        _load(folder, files["tokenizer"])
    (folder / "med_config.json").write_text('{"hidden_size": 64,')
    with pytest.raises(VerifierError, match="med_config.json is not valid JSON"):
        _load(folder, files["tokenizer"])
    cfg = json.loads((files["model"] / "med_config.json").read_text())
    (folder / "med_config.json").write_text(json.dumps({**cfg, "add_cross_attention": False}))
    with pytest.raises(VerifierError, match="add_cross_attention"):
        _load(folder, files["tokenizer"])
    (folder / "med_config.json").unlink()
    with pytest.raises(VerifierError, match="med_config.json .* must sit beside"):
        _load(folder / "ImageReward.pt", files["tokenizer"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VerifierError, match="has no ImageReward.pt"):
        _load(empty, files["tokenizer"])


def test_the_tokenizer_must_fit_the_text_encoder(files, tmp_path):
    no_vocab = tmp_path / "no_vocab"
    no_vocab.mkdir()
    (no_vocab / "config.json").write_text("{}")
    with pytest.raises(VerifierError, match="has no vocab.txt or tokenizer.json"):
        _load(files["model"], no_vocab)
    small = tmp_path / "small"
    small.mkdir()
    (small / "vocab.txt").write_text("\n".join(bert_vocab()[:-1]) + "\n")
    n = len(bert_vocab()) + 2
    expected = rf"has {n - 1} tokens with \[DEC\] and \[ENC\], but med_config.json says {n}:"
    with pytest.raises(VerifierError, match=expected):
        _load(files["model"], small)


def test_defaults_are_found_by_name_and_are_known_models(files, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    loading.set_model_dirs([files["root"]])
    try:
        by_name = load_verifier("image_reward")  # THUDM/ImageReward as models/ImageReward, bert-base-uncased likewise
        from_file = load_verifier("image_reward", str(files["model"] / "ImageReward.pt"))
        with pytest.raises(VerifierError, match="verifier 'image_reward_tokenizer' cannot find model 'bert-large'"):
            load_verifier("image_reward", tokenizer="bert-large")
    finally:
        loading.set_model_dirs([])
    images = random_images(2, 36, 30, seed=3)
    assert torch.equal(by_name.score(images, prompt=PROMPT), from_file.score(images, prompt=PROMPT))
    info = describe("image_reward")
    assert info["needs"] == ["prompt"] and info["default_model"] == "THUDM/ImageReward"
    assert set(info["options"]) == {"tokenizer", "batch_size"}
    model = loading.find_known("THUDM/ImageReward", "image_reward")
    tokenizer = loading.find_known("bert-base-uncased", "image_reward_tokenizer")
    assert model.files == ("ImageReward.pt", "med_config.json") and "vocab.txt" in tokenizer.files
    with pytest.raises(VerifierError, match="has no option 'med_config'"):
        load_image_reward(str(files["model"]), med_config="x")


def test_loading_leaves_the_global_rng_alone(files):
    before = torch.random.get_rng_state()
    _load(files["model"], files["tokenizer"])
    assert torch.equal(before, torch.random.get_rng_state())
