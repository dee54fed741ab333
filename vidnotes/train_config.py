"""The YAML config file of ``vidnotes train run --config FILE`` (train/config.example.yaml
documents every field), validated with pydantic: an unknown field, a wrong type or a value out
of range is an error naming the field. The fields are TrainConfig's (vidnotes.train) plus how
this invocation runs (run_dir, threads, name, publish). Precedence: defaults < file < flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

RUN_OPTIONS = ("run_dir", "threads", "name", "publish")


class TrainFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    # what and where
    data: str | None = None
    init: str | None = None
    train: Literal["decoder", "full"] | None = None
    language: str | None = None
    # optimization
    steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    max_grad_norm: float | None = Field(None, gt=0)
    l2sp: float | None = Field(None, ge=0)
    encoder: Literal["served", "torch"] | None = None
    seed: int | None = None
    checkpoint_every: int | None = Field(None, ge=1)
    eval_every: int | None = Field(None, ge=1)
    max_train: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=1)
    # regression set and gate
    regression: Literal["varied-en", "none"] | None = None
    max_regression: int | None = Field(None, ge=1)
    max_wer_increase: float | None = Field(None, ge=0)
    require_improvement: bool | None = None
    max_regression_increase: float | None = Field(None, ge=0, le=1)
    normalizer: Literal["whisper", "vidnotes"] | None = None
    # tracking
    tracking: bool | None = None
    experiment: str | None = Field(None, min_length=1)
    # this invocation
    run_dir: str | None = None
    threads: int | None = Field(None, ge=1)
    name: str | None = None
    publish: bool | None = None


def parse_config(data: Any, source: str = "config") -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig settings, run options) of a parsed YAML document; ValueError naming the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of field: value (train/config.example.yaml), got {type(data).__name__}")
    try:
        cfg = TrainFile.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"field '{field}': {msg} (got {err.get('input')!r})")
        known = ", ".join(TrainFile.model_fields)
        raise ValueError(f"{source}: " + "; ".join(problems) + f". Fields: {known}") from None
    values = cfg.model_dump(exclude_none=True)
    opts = {k: values.pop(k) for k in RUN_OPTIONS if k in values}
    return values, opts


def load_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML: {e}") from None
    return parse_config(data, str(p))
