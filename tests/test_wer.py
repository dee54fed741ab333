import jiwer
import pytest

from vidnotes.wer import normalize, wer


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
