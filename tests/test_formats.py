import json

import pytest

from vidnotes.formats import format_timestamp, get_writer
from vidnotes.types import Segment, Transcript

T = Transcript(
    segments=[Segment(0.0, 2.5, " Hello <b>world</b> & more."), Segment(3661.25, 3662.0, "Second --> line\n\nwith gap")],
    duration=3662.0,
    model="whisper/tiny.en-x",
)


def test_timestamps():
    assert format_timestamp(0) == "00:00.000"
    assert format_timestamp(3661.2504, decimal=",", always_hours=True) == "01:01:01,250"
    with pytest.raises(ValueError):
        format_timestamp(-1)


def test_srt():
    # "-->" in the text would make a line that looks like a timing line start a cue of its own
    assert get_writer("srt").render(T) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello <b>world</b> & more.\n\n"
        "2\n01:01:01,250 --> 01:01:02,000\nSecond -> line\nwith gap\n\n"
    )


def test_vtt_escapes_markup_and_arrows():
    assert get_writer("vtt").render(T) == (
        "WEBVTT\n\n00:00.000 --> 00:02.500\nHello &lt;b>world&lt;/b> &amp; more.\n\n"
        "01:01:01.250 --> 01:01:02.000\nSecond --&gt; line\nwith gap\n\n"
    )


def test_txt_and_json_round_trip():
    assert get_writer("txt").render(T) == "Hello <b>world</b> & more.\nSecond --> line\n\nwith gap\n"
    data = json.loads(get_writer("JSON").render(T))
    assert data["model"] == "whisper/tiny.en-x" and data["segments"][1]["start"] == 3661.25
    assert Transcript.from_dict(data).segments == T.segments


def test_unknown_format():
    with pytest.raises(ValueError, match="txt, srt, vtt, json"):
        get_writer("docx")
