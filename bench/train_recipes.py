"""Compare fine-tuning recipes on the same data: domain WER (the dataset's test split) and
regression WER (vidnotes.datasets.varied_english: other speakers, never trained on) before and
after, in PyTorch fp32 greedy, as the training evals measure them. One process: the encoder
outputs are computed once and shared (Trainer.prepared_cache); every recipe is an ordinary
Trainer run with its own run directory, metrics.json and MLflow run (experiment vidnotes-recipes).

    .venv/bin/python bench/train_recipes.py --data build/datasets/asterisk --threads 1 \\
        'A lr=5e-5 eval_every=50' 'B lr=1e-5' 'C lr=5e-5 l2sp=0.1'

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
    ap.add_argument("recipes", nargs="+")
    args = ap.parse_args()
    Trainer.prepared_cache = {}
    store = ModelStore(REPO / "models")
    res_path = Path(args.results)
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
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
        }
        res_path.parent.mkdir(parents=True, exist_ok=True)
        res_path.write_text(json.dumps(results, indent=2) + "\n")
        r = results[name]
        print(f"{name}: domain {r['domain_before']:.4f} -> {r['domain_after']:.4f}, regression {r['regression_before']:.4f} -> "
              f"{r['regression_after']:.4f}, {r['train_seconds']} s", flush=True)  # fmt: skip
    lines = ["| recipe | steps | domain WER before -> after | regression WER before -> after | evals (step: domain / regression) | train s |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        ev = ", ".join(f"{s}: {r['domain_evals'][s]:.2%} / {r['regression_evals'].get(s, float('nan')):.2%}" for s in r["domain_evals"])
        lines.append(
            f"| {name} `{' '.join(r['recipe'].split()[1:])}` | {r['steps']} | {r['domain_before']:.2%} -> {r['domain_after']:.2%} | "
            f"{r['regression_before']:.2%} -> {r['regression_after']:.2%} | {ev} | {r['train_seconds']} |"
        )
    res_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
