"""A sample talk video for demos and tests: espeak-ng speech over a generated picture, muxed by
ffmpeg. Real tools, synthetic voice; nothing downloaded."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

SAMPLE_TALK = (
    "Welcome to this short lecture on how rivers shape the land. "
    "Water flowing downhill picks up sand and small stones, and carries them towards the sea. "
    "Over thousands of years this slow work cuts deep valleys into solid rock. "
    "Next, let us talk about bridges. "
    "A bridge must carry its own weight as well as the traffic that crosses it. "
    "Engineers choose between beams, arches and cables depending on the distance to span. "
    "Finally, a word about bread. "
    "Bakers mix flour, water, salt and yeast, then let the dough rise before baking it in a hot oven. "
    "Thank you for listening, and see you next week."
)


def make_sample_video(out: Path, *, text: str = SAMPLE_TALK, voice: str = "en-us", timeout: float = 120.0) -> Path:
    """Write an MP4 (H.264 picture + AAC speech) of ``text`` read by espeak-ng."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "135", "-g", "4", "-w", str(wav), text], check=True, timeout=timeout)
        subprocess.run(
            [
                "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", "color=c=0x1d3557:s=640x360:r=10",
                "-i", str(wav),
                "-vf", "drawbox=x=40:y=150:w=560:h=60:color=0xf1faee@0.9:t=fill",
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-b:a", "64k", "-shortest", str(out),
            ],
            check=True,
            timeout=timeout,
        )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Make a sample talk video (espeak-ng + ffmpeg).")
    ap.add_argument("out", type=Path, help="output .mp4")
    ap.add_argument("--text", default=SAMPLE_TALK, help="what the voice says")
    args = ap.parse_args(argv)
    print(make_sample_video(args.out, text=args.text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
