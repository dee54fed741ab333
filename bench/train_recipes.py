"""Compare fine-tuning recipes on the same data: domain WER (the dataset's test split) and
regression WER (vidnotes.datasets.varied_english: other speakers, never trained on) before and
after, in PyTorch fp32 greedy, as the training evals measure them, with the run's normalizer
(Whisper's, the default) and literally. One process: the encoder outputs are computed once and
shared (Trainer.prepared_cache); every recipe is an ordinary Trainer run with its own run
directory, metrics.json and MLflow run (experiment vidnotes-recipes). With ``--int8`` each recipe's
model is also exported as the gate exports it (ONNX, int8 per-channel) and scored beside the
store's CURRENT, as the gate scores them (greedy, no timestamps, both normalizers).

    .venv/bin/python bench/train_recipes.py --data build/datasets/asterisk --threads 2 --int8 \\
        'A lr=5e-5 steps=200' 'D' 'D-seed1 seed=1'

Writes bench/results/train_recipes.json and .md (appending to what is there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidnotes.store import ModelStore  # noqa: E402
from vidnotes.train import TrainConfig, Trainer  # noqa: E402


def parse_recipe(spec: str) -> tuple[str, dict]:
    name, *pairs = spec.split()
    types = {f.name: f.type for f in fields(TrainConfig)}
    out = {}
    for p in pairs:
        k, v = p.split("=", 1)
        t = types[k]
        out[k] = float(v) if "float" in str(t) else int(v) if "int" in str(t) else v
    return name, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out-dir", default="build/exp")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default=str(REPO / "bench" / "results" / "train_recipes.json"))
    ap.add_argument("--int8", action="store_true", help="also export each model to int8 ONNX and score it as the gate does")
    ap.add_argument("recipes", nargs="+")
    args = ap.parse_args()
    Trainer.prepared_cache = {}
    store = ModelStore(REPO / "models")
    res_path = Path(args.results)
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
    gate_sets = _gate_sets(args.data, Path(args.out_dir)) if args.int8 else None
    current = None
    if gate_sets:
        cur_dir, _ = store.fetch("whisper", store.current("whisper"))
        current = _score_int8(cur_dir, gate_sets)
        print(f"CURRENT {store.current('whisper')} int8: {current}", flush=True)
    for spec in args.recipes:
        name, over = parse_recipe(spec)
        cfg = TrainConfig(data=args.data, experiment="vidnotes-recipes", **{"eval_every": 100, **over})
        run_dir = Path(args.out_dir) / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        m = Trainer(cfg, run_dir, store=store, sources_cache=REPO / "build" / "models" / "sources", threads=args.threads).run()
        results[name] = {
            "recipe": spec,
            "overrides": over,
            "steps": cfg.steps,
            "lr": cfg.lr,
            "l2sp": cfg.l2sp,
            "train": cfg.train,
            "domain_before": m["wer_before"],
            "domain_after": m["wer_after"],
            "regression_before": m["regression"]["wer_before"],
            "regression_after": m["regression"]["wer_after"],
            "domain_evals": m["evals"],
            "regression_evals": m["regression"]["evals"],
            "train_seconds": m["train_seconds"],
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "mlflow_run": (m.get("mlflow") or {}).get("run_id"),
            "normalizer": m.get("normalizer"),
            "domain_literal": [m["evals_literal"].get("0"), m["evals_literal"].get(str(cfg.steps))],
            "regression_literal": [m["regression"]["evals_literal"].get("0"), m["regression"]["evals_literal"].get(str(cfg.steps))],
        }
        if gate_sets:
            results[name]["int8"] = {"current": current, "candidate": _score_int8(_export_int8(Path(m["model_dir"]), run_dir / "export"), gate_sets)}
        res_path.parent.mkdir(parents=True, exist_ok=True)
        res_path.write_text(json.dumps(results, indent=2) + "\n")
        r = results[name]
        print(f"{name}: domain {r['domain_before']:.4f} -> {r['domain_after']:.4f}, regression {r['regression_before']:.4f} -> "
              f"{r['regression_after']:.4f}, {r['train_seconds']} s", flush=True)  # fmt: skip
    lines = ["| recipe | steps | normalizer | domain WER before -> after | regression WER before -> after | literal: domain, regression | "
             "int8 vs CURRENT: domain, regression (literal) | evals (step: domain / regression) | train s |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        ev = ", ".join(f"{s}: {r['domain_evals'][s]:.2%} / {r['regression_evals'].get(s, float('nan')):.2%}" for s in r["domain_evals"])
        lit = (f"{r['domain_literal'][0]:.2%} -> {r['domain_literal'][1]:.2%}, {r['regression_literal'][0]:.2%} -> {r['regression_literal'][1]:.2%}"
               if r.get("domain_literal") else "(same)")  # fmt: skip
        q = r.get("int8")
        i8 = (f"{q['current']['domain']:.2%} -> {q['candidate']['domain']:.2%}, {q['current']['regression']:.2%} -> {q['candidate']['regression']:.2%} "
              f"({q['current']['regression_literal']:.2%} -> {q['candidate']['regression_literal']:.2%})" if q else "")  # fmt: skip
        lines.append(
            f"| {name} `{' '.join(r['recipe'].split()[1:])}` | {r['steps']} | {r.get('normalizer') or 'vidnotes'} | {r['domain_before']:.2%} -> "
            f"{r['domain_after']:.2%} | {r['regression_before']:.2%} -> {r['regression_after']:.2%} | {lit} | {i8} | {ev} | {r['train_seconds']} |"
        )
    res_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


def _gate_sets(data: str, out_dir: Path) -> dict:
    from vidnotes.train import dataset_eval_set, regression_eval_set

    return {"domain": dataset_eval_set(data, out_dir / "data"), "regression": regression_eval_set("varied-en")}


def _export_int8(model_dir: Path, work: Path) -> Path:
    """The gate's export (vidnotes.export.whisper.export_int8, what export_whisper runs before its parity checks)."""
    from vidnotes.export.whisper import export_int8

    export_int8(model_dir, work / "fp32", work / "int8")
    return work / "int8"


def _score_int8(model_dir: Path, sets: dict) -> dict:
    from vidnotes.asr import WhisperOnnx
    from vidnotes.train import _onnx_wer
    from vidnotes.wer import normalizer

    model = WhisperOnnx(model_dir, name=model_dir.name)
    out = {}
    for key, eval_set in sets.items():
        out[key], out[f"{key}_literal"] = _onnx_wer(model, eval_set, timestamps=False, norm=normalizer("whisper"))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
