#!/usr/bin/env python3
"""Training quality over several training seeds: bench/quality.py once per seed (same data
split, `--seed` fixed; both trainers get `--train-seed S`), then the mean and spread of
NDCG@10 on each side and the check |mean(embtune) - mean(reference)| <= --tolerance.

Why: dropout masks and row order cannot be matched between the two trainers, so one run
each compares two draws of a noisy quantity; on the demo split (43 queries) two seeds of
the same trainer already differ by a few hundredths with GIST or Matryoshka. The mean over
seeds is what should agree.

    python3 bench/quality_seeds.py --seeds 1,2,3 -- --loss gist --device cpu --threads 2 \\
        --max-seq-length 128 --no-dedupe

Everything after `--` goes to quality.py (not --train-seed, --out or --tolerance).
Standard library only. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1,2,3", help="training seeds, comma-separated")
    p.add_argument("--tolerance", type=float, default=0.01, help="max |mean embtune - mean reference| NDCG@10")
    p.add_argument("--out", default=None, help="write the JSON summary here")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    if len(seeds) < 2:
        raise SystemExit("--seeds: give at least two seeds")
    runs = []
    with tempfile.TemporaryDirectory(prefix="quality-seeds-") as tmp:
        for s in seeds:
            out = Path(tmp) / f"seed{s}.json"
            cmd = [sys.executable, str(HERE / "quality.py"), *rest, "--train-seed", str(s),
                   "--tolerance", "1", "--out", str(out)]
            print(f"== training seed {s}", file=sys.stderr, flush=True)
            r = subprocess.run(cmd)
            if not out.is_file():
                raise SystemExit(f"quality.py wrote no report for seed {s} (rc {r.returncode})")
            runs.append(json.loads(out.read_text()))
    if any(r.get("embtune_only") for r in runs):
        raise SystemExit("quality_seeds.py compares with the reference; drop --no-reference/--lora")

    def series(key):
        return [r["ndcg@10"][key] for r in runs]

    rows = {"full": (series("reference_trained"), series("embtune_trained"))}
    for d in runs[0].get("truncated", {}):
        rows[f"{d} dims"] = ([r["truncated"][d]["reference"] for r in runs],
                             [r["truncated"][d]["embtune"] for r in runs])
    summary = {"bench": "quality_seeds", "loss": runs[0]["loss"], "seeds": seeds,
               "untrained": runs[0]["ndcg@10"]["untrained_reference_eval"],
               "config": runs[0]["config"], "versions": runs[0].get("versions"), "rows": {}, "checks": {}}
    print()
    print(f"training quality over training seeds {seeds}: loss {summary['loss']}, "
          f"untrained NDCG@10 {summary['untrained']:.4f}")
    print(f"{'':<10}{'reference (each; mean ± sd)':<44}{'embtune (each; mean ± sd)':<44}{'|diff of means|':>16}")
    for name, (ref, emb) in rows.items():
        mr, me = statistics.mean(ref), statistics.mean(emb)
        sr, se = statistics.stdev(ref), statistics.stdev(emb)
        diff = abs(me - mr)
        summary["rows"][name] = {"reference": ref, "embtune": emb, "reference_mean": mr, "embtune_mean": me,
                                 "reference_sd": sr, "embtune_sd": se, "abs_diff_of_means": diff}
        summary["checks"][f"{name}: |mean embtune - mean reference| <= {a.tolerance}"] = diff <= a.tolerance
        fmt = lambda xs, m, sd: (" ".join(f"{x:.4f}" for x in xs) + f"; {m:.4f} ± {sd:.4f}")
        print(f"{name:<10}{fmt(ref, mr, sr):<44}{fmt(emb, me, se):<44}{diff:>16.4f}")
    summary["checks"]["every run above the untrained model"] = all(
        r["ndcg@10"]["reference_trained"] > summary["untrained"] and r["ndcg@10"]["embtune_trained"] > summary["untrained"]
        for r in runs)
    ok = all(summary["checks"].values())
    summary["ok"] = ok
    for name, passed in summary["checks"].items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    if a.out:
        Path(a.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
