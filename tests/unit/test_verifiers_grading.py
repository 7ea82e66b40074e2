import pytest

from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.grading import (
    ASPECTS,
    UnparsedAnswer,
    aspect_request,
    check_mode,
    parse_aspects,
    parse_ratings,
    vqa_question,
)

TWO = ("accuracy to prompt", "visual quality")


@pytest.mark.parametrize("answer", [
    "accuracy to prompt: 7\nvisual quality: 4.5",
    "**Accuracy to Prompt**: 7/10\n**Visual Quality**: 4.5/10\nOverall: 6",
    'Here you go: {"accuracy to prompt": 7, "visual quality": 4.5}',
    "Accuracy_to_prompt = 7, visual-quality - 4.5",
])
def test_ratings_parse_from_the_formats_models_write(answer):
    assert parse_ratings("g", 0, answer, TWO) == {"accuracy to prompt": 7.0, "visual quality": 4.5}


@pytest.mark.parametrize("answer, missing", [
    ("accuracy to prompt: 7", ["visual quality"]),
    ("accuracy to prompt: 11\nvisual quality: 3", ["accuracy to prompt"]),
    ("I cannot rate this image.", list(TWO)),
])
def test_an_answer_without_every_rating_is_an_error_naming_the_image_and_the_raw_answer(answer, missing):
    with pytest.raises(UnparsedAnswer) as e:
        parse_ratings("g", 3, answer, TWO)
    assert e.value.index == 3 and e.value.missing == missing and e.value.answer == answer
    assert "image 3" in str(e.value) and repr(answer) in str(e.value)


def test_requests_name_the_prompt_and_every_aspect():
    text = aspect_request(" a red cube ", TWO)
    assert '"a red cube"' in text and all(f"{a}: <number>" in text for a in TWO)
    assert vqa_question("a red cube") == 'Does this figure show "a red cube"? Please answer yes or no.'


def test_aspects_option():
    assert parse_aspects("g", "") == ASPECTS
    assert parse_aspects("g", "detail, colour\ncolour") == ("detail", "colour")
    with pytest.raises(VerifierError, match="in words"):
        parse_aspects("g", "7, detail")
    with pytest.raises(VerifierError, match="vqascore, aspects"):
        check_mode("g", "stars")
