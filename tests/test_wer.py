import jiwer
import pytest

from vidnotes.wer import normalize, normalizer, wer


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Please enter your PIN, followed by pound.", "please enter your pin followed by pound"),
        ("That's  the caller's   number...", "that's the caller's number"),
        ("'Quoted' words & symbols!", "quoted words and symbols"),
        ("Press 1 -- or one.", "press 1 or one"),
        ("Ünïcode ﬁne", "ünïcode fine"),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_wer_agrees_with_jiwer_after_normalization():
    refs = ["Please enter a new extension, followed by pound.", "The party you are calling is not available", "one two three"]
    hyps = ["please enter new extensions followed by pound", "the party you are calling is not available", "1 two three four"]
    expected = jiwer.wer([normalize(r) for r in refs], [normalize(h) for h in hyps])
    assert wer(refs, hyps) == pytest.approx(expected)
    assert wer(refs, refs) == 0.0
    assert wer(["a b"], [""]) == 1.0


def test_wer_length_mismatch():
    with pytest.raises(ValueError):
        wer(["a"], [])


def test_whisper_normalizer_scores_recognition_not_formatting():
    whisper = normalizer("whisper")
    ref = "Eight of spades. We're gonna tackle it in twenty twenty, uh, in colour."
    formatted = "8 of spades, we are going to tackle it in 2020 in color"
    assert wer([ref], [formatted], whisper) == 0.0 and wer([ref], [formatted]) > 0.4  # literal: formatting counts
    assert wer([ref], ["8 of spades we are going to tackle it in 2020 in collar"], whisper) == pytest.approx(1 / 13)
    assert normalizer("whisper", "ru")("Привет, мир! Раз-два.") == "привет мир раз два"  # other languages: the basic normalizer
    assert normalizer("vidnotes") is normalize
    with pytest.raises(ValueError, match="normalizer must be one of"):
        normalizer("jiwer")
