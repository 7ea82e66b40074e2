"""vlm_grader: tiny Qwen2.5-VL and SmolVLM (Idefics3) folders loaded through load_verifier; VQAScore against the
model's own forward, batching and left padding, greedy aspect grading that parses or names the unparseable answer."""

import shutil

import pytest
import torch

from noise_search.tests.helpers.tiny_models import make_hf_clip, random_images
from noise_search.tests.helpers.tiny_vlm import TINY_VLM_ARCHS, make_tiny_vlm
from noise_search.verifiers import describe, load_verifier
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.grading import UnparsedAnswer, aspect_request, vqa_question
from noise_search.verifiers.loading import find_known, known_models
from noise_search.verifiers.vlm import DEFAULT_MODEL

ANSWER = "accuracy to prompt: 7\nvisual quality: 4\n"
TWO = "accuracy to prompt, visual quality"
YES = {"qwen2_5_vl": "Yes", "smolvlm": "ĠYes"}  # what each chat template writes first in the assistant's turn


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {(arch, forced): make_tiny_vlm(root / f"{arch}_{forced}", arch=arch, seed=3,
                                          answer=ANSWER if forced else None)
            for arch in TINY_VLM_ARCHS for forced in (False, True)}


def _reference(folder):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return (AutoProcessor.from_pretrained(str(folder)),
            AutoModelForImageTextToText.from_pretrained(str(folder)).eval())


def _one(processor, image, text):
    """The processor's output for one image and question, no padding (the test's own path to the model)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=[prompt], images=[[image.permute(2, 0, 1)]], return_tensors="pt", do_rescale=False)


@pytest.mark.parametrize("arch", TINY_VLM_ARCHS)
def test_vqascore_is_the_softmax_of_yes_at_the_last_position(folders, arch):
    folder = folders[arch, False]
    images = random_images(3, 40, 48, seed=1)
    v = load_verifier("vlm_grader", str(folder), batch_size=2)
    got = v.score(images, prompt="a red cat")
    processor, model = _reference(folder)
    yes = processor.tokenizer.convert_tokens_to_ids(YES[arch])
    with torch.no_grad():
        want = torch.stack([model(**_one(processor, im, vqa_question("a red cat"))).logits[0, -1].softmax(-1)[yes]
                            for im in images])
    assert v.answer_id == yes and v.member_scores() == {}
    assert got.shape == (3,) and got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-7), (got, want)
    assert ((got > 0) & (got < 1)).all() and len(set(got.tolist())) == 3


@pytest.mark.parametrize("arch", TINY_VLM_ARCHS)
def test_batched_and_left_padded_rows_equal_one_by_one(folders, arch):
    v = load_verifier("vlm_grader", str(folders[arch, False]), batch_size=8)
    images = random_images(3, 40, 48, seed=2)
    clips = images.unsqueeze(1)  # one image per question
    prompts = ["a cat", "a very long prompt about a small grey cat sitting on a mat in the sun", "dog"]
    batch = v.inputs(clips, [vqa_question(p) for p in prompts])
    assert (batch["attention_mask"][:, -1] == 1).all() and (batch["attention_mask"] == 0).any()  # padded, on the left
    together = v.vqascore(clips, prompts)
    alone = torch.cat([v.vqascore(clips[i:i + 1], prompts[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, rtol=1e-4, atol=1e-7), (together, alone)
    one_prompt = v.score(images, prompt="a cat")
    assert torch.allclose(one_prompt, torch.cat([v.score(images[i:i + 1], prompt="a cat") for i in range(3)]),
                          rtol=1e-4, atol=1e-7)


def test_images_reach_the_processor_as_its_pil_path_would_give_them(folders):
    """Float tensors with do_rescale=False equal the processor's own handling of the 8-bit image."""
    from PIL import Image

    v = load_verifier("vlm_grader", str(folders["qwen2_5_vl", False]))
    image = (random_images(1, 40, 48, seed=4) * 255).round() / 255
    ours = v.inputs(image.unsqueeze(1), ["q"])["pixel_values"]
    pil = Image.fromarray((image[0] * 255).round().byte().numpy())
    text = v.processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                         {"type": "text", "text": "q"}]}],
                                           add_generation_prompt=True)
    theirs = v.processor(text=[text], images=[pil], return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape and (ours - theirs).abs().max() < 0.05


@pytest.mark.parametrize("arch", TINY_VLM_ARCHS)
def test_aspects_mode_parses_the_greedy_answer_and_reports_every_aspect(folders, arch):
    v = load_verifier("vlm_grader", str(folders[arch, True]), mode="aspects", aspects=TWO, batch_size=2,
                      max_new_tokens=4)
    scores = v.score(random_images(3, 40, 48, seed=5), prompt="a cat")
    assert torch.equal(scores, torch.full((3,), 5.5))
    members = v.member_scores()
    assert list(members) == ["accuracy to prompt", "visual quality"]
    assert torch.equal(members["accuracy to prompt"], torch.full((3,), 7.0))
    assert torch.equal(members["visual quality"], torch.full((3,), 4.0))
    assert v.answers(random_images(1, 40, 48, seed=6).unsqueeze(1), ["a dog"]) == [ANSWER]


@pytest.mark.parametrize("arch", TINY_VLM_ARCHS)
def test_a_video_is_one_question_about_frames_spread_over_it(folders, arch):
    v = load_verifier("vlm_grader", str(folders[arch, True]), mode="aspects", aspects=TWO, batch_size=2,
                      max_new_tokens=4)
    asked = []
    template = v.processor.apply_chat_template
    v.processor.apply_chat_template = lambda conversations, **kw: asked.extend(conversations) or template(
        conversations, **kw)
    videos = random_images(2 * 5, 40, 48, seed=7).view(2, 5, 40, 48, 3)
    scores = v.score_video(videos, prompt="a cat", frames=3)
    assert torch.equal(scores, torch.full((2,), 5.5)) and v.frame_indices == [0, 2, 4] and v.frame_scores == {}
    assert len(asked) == 2  # one question per clip
    for conversation, video in zip(asked, videos):
        parts = conversation[0]["content"]
        shown = [p["image"] for p in parts if p["type"] == "image"]
        assert len(shown) == 3 and all(torch.equal(s, video[i].movedim(-1, 0)) for s, i in zip(shown, (0, 2, 4)))
        assert parts[-1]["text"] == aspect_request("a cat", ("accuracy to prompt", "visual quality"), 3)


@pytest.mark.parametrize("arch", TINY_VLM_ARCHS)
def test_an_unparseable_answer_names_the_image_and_the_raw_answer(folders, arch):
    folder = folders[arch, False]
    v = load_verifier("vlm_grader", str(folder), mode="aspects", aspects=TWO, batch_size=2, max_new_tokens=6)
    images = random_images(3, 40, 48, seed=7)
    with pytest.raises(UnparsedAnswer) as err:
        v.score(images, prompt="a cat")
    processor, model = _reference(folder)
    inputs = _one(processor, images[0], aspect_request("a cat", v.aspects))
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=6)
    raw = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert err.value.index == 0 and err.value.answer == raw and raw.strip()
    assert "image 0" in str(err.value) and repr(raw) in str(err.value)
    assert v.member_scores() == {}


@pytest.mark.parametrize("arch", TINY_VLM_ARCHS)
def test_the_index_of_an_unparseable_answer_counts_across_batches(folders, arch):
    """NaN pixels make that image's row (and only it) answer '!' over and over; it sits in the second model call."""
    v = load_verifier("vlm_grader", str(folders[arch, True]), mode="aspects", aspects=TWO, batch_size=2,
                      max_new_tokens=4)
    images = random_images(5, 40, 48, seed=9)
    images[3] = float("nan")
    with pytest.raises(UnparsedAnswer) as err:
        v.score(images, prompt="a cat")
    assert err.value.index == 3 and err.value.answer == "!!!!" and "image 3 " in str(err.value)


def test_a_separate_processor_folder_and_sharded_weights(folders, tmp_path):
    from transformers import AutoModelForImageTextToText

    source = folders["smolvlm", False]
    model_dir, proc_dir = tmp_path / "model", tmp_path / "processor"
    AutoModelForImageTextToText.from_pretrained(str(source)).save_pretrained(model_dir, max_shard_size="100KB")
    shards = sorted(p.name for p in model_dir.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (model_dir / "model.safetensors").exists()
    proc_dir.mkdir()
    for p in source.iterdir():
        if p.name not in ("config.json", "generation_config.json", "model.safetensors"):
            shutil.copy(p, proc_dir / p.name)
    images = random_images(2, 40, 48, seed=8)
    want = load_verifier("vlm_grader", str(source)).score(images, prompt="a cat")
    got = load_verifier("vlm_grader", str(model_dir), processor=str(proc_dir)).score(images, prompt="a cat")
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-8)
    with pytest.raises(VerifierError, match=f"{model_dir} has no image processor: expected preprocessor_config"):
        load_verifier("vlm_grader", str(model_dir))
    (proc_dir / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    with pytest.raises(VerifierError, match="has no tokenizer: expected tokenizer.json"):
        load_verifier("vlm_grader", str(model_dir), processor=str(proc_dir))
    (tmp_path / "tokenizer.json").rename(proc_dir / "tokenizer.json")
    (model_dir / shards[-1]).unlink()
    with pytest.raises(VerifierError, match=f"lacks 1 of the {len(shards)} weight shards.*{shards[-1]}"):
        load_verifier("vlm_grader", str(model_dir), processor=str(proc_dir))


def test_folders_that_are_not_a_vlm_chat_model(folders, tmp_path):
    clip = make_hf_clip(tmp_path / "clip")
    with pytest.raises(VerifierError, match="describes a 'clip' model .*not an image-text-to-text model"):
        load_verifier("vlm_grader", str(clip))
    broken = tmp_path / "future"
    shutil.copytree(folders["qwen2_5_vl", False], broken)
    cfg = (broken / "config.json").read_text().replace('"qwen2_5_vl"', '"qwen9_vl"')
    (broken / "config.json").write_text(cfg)
    with pytest.raises(VerifierError, match="'qwen9_vl' model .*does not know; upgrade transformers"):
        load_verifier("vlm_grader", str(broken))
    plain = tmp_path / "no_template"
    shutil.copytree(folders["qwen2_5_vl", False], plain)
    (plain / "chat_template.jinja").unlink()
    with pytest.raises(VerifierError, match="no chat template"):
        load_verifier("vlm_grader", str(plain))
    with pytest.raises(VerifierError, match="token id .* expects|predicts"):
        load_verifier("vlm_grader", str(folders["qwen2_5_vl", False]), processor=str(folders["smolvlm", False]))


def test_options_and_prompt_are_checked(folders):
    folder = str(folders["qwen2_5_vl", False])
    for options, message in [({"mode": "stars"}, "unknown mode 'stars'"), ({"temperature": 1}, "no option 'temp"),
                             ({"aspects": "detail"}, "read in mode 'aspects' only"),
                             ({"mode": "aspects", "aspects": "7, 8"}, "in words"),
                             ({"batch_size": 0}, "batch_size"), ({"max_new_tokens": 1.5}, "max_new_tokens")]:
        with pytest.raises(VerifierError, match=message):
            load_verifier("vlm_grader", folder, **options)
    v = load_verifier("vlm_grader", folder, mode="aspects")
    assert len(v.aspects) == 5 and v.needs == {"prompt"}
    with pytest.raises(VerifierError, match="needs a prompt"):
        v.score(random_images(1, 40, 48), prompt=" ")
    assert v.score(random_images(0, 40, 48), prompt="a cat").shape == (0,)


def test_registry_and_known_models():
    d = describe("vlm_grader")
    assert d["needs"] == ["prompt"] and d["default_model"] == DEFAULT_MODEL
    assert {"mode", "aspects", "batch_size", "max_new_tokens", "processor"} <= set(d["options"])
    assert find_known(DEFAULT_MODEL, "vlm_grader") is not None
    names = [m.name for m in known_models("vlm_grader")]
    assert names == ["Qwen/Qwen2.5-VL-3B-Instruct", "HuggingFaceTB/SmolVLM-256M-Instruct"]


def test_a_half_precision_checkpoint_loads_without_an_upcast(folders, tmp_path):
    """The loader keeps the checkpoint's dtype (a 7B model in float32 would need twice the memory); load_verifier then
    moves it to the dtype asked for, and the scores follow the module wherever it is."""
    from transformers import AutoModelForImageTextToText

    from noise_search.verifiers.vlm import load_vlm_grader

    source = folders["smolvlm", False]
    half = tmp_path / "bf16"
    AutoModelForImageTextToText.from_pretrained(str(source), dtype=torch.bfloat16).save_pretrained(half)
    for p in source.iterdir():
        if not (half / p.name).exists():
            shutil.copy(p, half / p.name)
    v = load_vlm_grader(str(half))
    assert v.dtype == torch.bfloat16 and isinstance(v.model, torch.nn.Module)
    images = random_images(2, 40, 48, seed=10)
    low = v.score(images, prompt="a cat")
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    full = load_verifier("vlm_grader", str(half), dtype=torch.float64)
    assert full.dtype == torch.float64
    assert torch.allclose(v.to(dtype=torch.float64).score(images, prompt="a cat"), full.score(images, prompt="a cat"))
