"""vidnotes: recorded talks and lectures to transcripts and notes."""

__version__ = "0.1.0"
