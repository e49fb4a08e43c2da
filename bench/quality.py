#!/usr/bin/env python3
"""Quality parity of training: the reference trainer (bench/reference/st_train.py, i.e.
sentence-transformers' SentenceTransformerTrainer) vs `embtune train` on the same data and
hyper-parameters, each evaluated on the same held-out retrieval split.

Steps:
  1. `embtune gen --strategy baseline --sampler same-category --data data/demo/products.csv
     --output-dir W/gen --eval-ratio 0.2 --seed 42` -> a supervised training CSV
     (anchor, positive, negative) plus eval_queries/eval_corpus/eval_qrels (the part prefix
     is detected).
  2. Reference: st_train.py --loss mnrl --epochs 1 --batch-size 16 --lr 5e-5
     --warmup-ratio 0.1 --seed 42 --max-seq-length L --eval-dir ... (NDCG@10 before/after).
  3. embtune: `embtune train` with the same flags and --eval-dir/--eval-part.
  4. Prints NDCG@10 of the untrained model (from both sides' "before"), of the
     reference-trained and of the embtune-trained model, and checks
     |embtune - reference| <= --tolerance (0.01) and both trained > untrained.
     Exit status 1 when a check fails.

L defaults to the model's own max_seq_length (sentence_bert_config.json), passed explicitly
to both sides. Both sides get the same OMP_NUM_THREADS (--threads, default all cores).
In-batch duplicates: the gen data repeats each anchor with several positives (and shared
positives such as a category name), so a batch often holds identical texts. embtune masks
identical in-batch texts out of the negatives by default; the reference's MNRL with the
plain batch sampler does not. `--no-dedupe` makes embtune do the same as the reference.

Offline: standard library only; the reference runs in --python's venv.

    python3 bench/quality.py --embtune target/release/embtune --python .venv-ref/bin/python \
        --device cpu --out /tmp/quality.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ST_TRAIN = ROOT / "bench" / "reference" / "st_train.py"
METRIC = "cosine_ndcg@10"


def run_json(cmd: list[str], env: dict, log: Path) -> dict:
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"command failed (rc {p.returncode}): {' '.join(cmd)}\n--- stderr tail ({log}) ---\n"
                         + log.read_text()[-3000:])
    # The JSON report is the last object on stdout; libraries may print dict-like logs first.
    out = p.stdout
    for start in sorted((i for i, c in enumerate(out) if c == "{" and (i == 0 or out[i - 1] == "\n")), reverse=True):
        try:
            obj, end = json.JSONDecoder().raw_decode(out, start)
        except json.JSONDecodeError:
            continue
        if not out[end:].strip():
            print(f"  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
            return obj
    raise SystemExit(f"no JSON report at the end of stdout of: {' '.join(cmd)}\n{out[-2000:]}")


def find_split(gen_dir: Path, part: str | None) -> tuple[Path, str, str | None]:
    """(training CSV, eval file prefix, eval part name) from what `embtune gen` wrote."""
    queries = sorted(gen_dir.glob("*eval_queries.csv"))
    if not queries:
        raise SystemExit(f"{gen_dir}: no eval_queries.csv written (was --eval-ratio given?)")
    names = [q.name[: -len("eval_queries.csv")] for q in queries]  # "" or "all_"
    if part is not None:
        prefix = f"{part}_" if part else ""
        if prefix not in names:
            raise SystemExit(f"{gen_dir}: no {prefix}eval_queries.csv (found {[q.name for q in queries]})")
    elif len(names) == 1:
        prefix = names[0]
    else:
        raise SystemExit(f"{gen_dir}: several eval splits {[q.name for q in queries]}; pick one with --part")
    part_name = prefix[:-1] if prefix.endswith("_") else None
    sup = sorted(gen_dir.glob(f"{prefix}*supervised.csv" if prefix else "*supervised.csv"))
    sup = [s for s in sup if not s.name.endswith("unsupervised.csv")]
    if len(sup) != 1:
        raise SystemExit(f"{gen_dir}: expected one supervised training CSV for prefix '{prefix}', found {[s.name for s in sup]}")
    return sup[0], prefix, part_name


def model_max_len(model: Path) -> int | None:
    cfg = model / "sentence_bert_config.json"
    if cfg.is_file():
        v = json.loads(cfg.read_text()).get("max_seq_length")
        return int(v) if v else None
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--data", default=str(ROOT / "data" / "demo" / "products.csv"))
    p.add_argument("--part", default=None, help="eval part name when gen writes several (e.g. all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--train-seed", type=int, default=None,
                   help="seed of both trainers (default: --seed); --seed alone then fixes the data split")
    p.add_argument("--eval-ratio", type=float, default=0.2)
    p.add_argument("--max-seq-length", type=int, default=None, help="default: the model's max_seq_length")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-dedupe", action="store_true",
                   help="pass --no-dedupe to embtune (keep identical in-batch texts as negatives, as the "
                        "reference's MNRL with the plain batch sampler does); default: embtune's default masking")
    p.add_argument("--tolerance", type=float, default=0.01, help="max |embtune - reference| NDCG@10")
    p.add_argument("--embtune", default=str(ROOT / "target" / "release" / "embtune"))
    p.add_argument("--python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    p.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--loss", default="mnrl", choices=["mnrl", "matryoshka", "gist", "cached-gist"],
                   help="matryoshka = Matryoshka(MNRL); gist/cached-gist are guided by --guide")
    p.add_argument("--matryoshka-dims", default="384,256,128,64", help="matryoshka: the dimensions, largest first")
    p.add_argument("--guide", default=None, help="gist/cached-gist: guide model folder (default: --model, untrained)")
    p.add_argument("--mini-batch-size", type=int, default=8, help="cached-gist: GradCache mini-batch size")
    p.add_argument("--truncate-dims", default="", help="also evaluate both trained models at these dimensions (e.g. 64)")
    p.add_argument("--lora", default=None, help="embtune side only: train LoRA adapters with this spec (implies --no-reference)")
    p.add_argument("--no-reference", action="store_true", help="embtune side only: report its NDCG@10, no comparison")
    a = p.parse_args(argv)
    if a.lora is not None:
        a.no_reference = True
    truncate_dims = [int(d) for d in a.truncate_dims.split(",") if d.strip()]
    model = Path(a.model).resolve()
    embtune = str(Path(a.embtune).resolve())
    for what, path in (("--model", model), ("--embtune", embtune), ("--python", a.python), ("--data", a.data)):
        if not Path(path).exists():
            raise SystemExit(f"{what} {path}: not found")
    max_len = a.max_seq_length or model_max_len(model) or 128

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="quality-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    started = datetime.datetime.now(datetime.timezone.utc)

    gen_dir = work / "gen"
    shutil.rmtree(gen_dir, ignore_errors=True)
    gen_cmd = [embtune, "gen", "--strategy", "baseline", "--sampler", "same-category", "--data", a.data,
               "--output-dir", str(gen_dir), "--eval-ratio", str(a.eval_ratio), "--seed", str(a.seed), "--quiet"]
    print("$ " + " ".join(gen_cmd), file=sys.stderr, flush=True)
    g = subprocess.run(gen_cmd, capture_output=True, text=True, env=env)
    if g.returncode != 0:
        raise SystemExit(f"embtune gen failed (rc {g.returncode}):\n{g.stderr[-3000:]}")
    train_csv, prefix, part_name = find_split(gen_dir, a.part)
    with open(train_csv, encoding="utf-8-sig") as f:
        header = f.readline().strip()
        rows = sum(1 for line in f if line.strip())  # approximate (quoted newlines are rare here)

    guide = str(Path(a.guide).resolve()) if a.guide else str(model)
    ref_loss = {"mnrl": ["--loss", "mnrl"],
                "matryoshka": ["--loss", "matryoshka-mnrl", "--matryoshka-dims", a.matryoshka_dims],
                "gist": ["--loss", "gist", "--guide", guide],
                "cached-gist": ["--loss", "cached-gist", "--guide", guide, "--mini-batch-size", str(a.mini_batch_size)]}[a.loss]
    emb_loss = {"mnrl": ["--loss", "mnrl"],
                "matryoshka": ["--loss", "matryoshka", "--loss-opt", "loss=mnrl",
                               "--loss-opt", f"matryoshka_dims={a.matryoshka_dims}"],
                "gist": ["--loss", "gist", "--loss-opt", f"guide={guide}"],
                "cached-gist": ["--loss", "cached-gist", "--loss-opt", f"guide={guide}",
                                "--loss-opt", f"mini_batch_size={a.mini_batch_size}"]}[a.loss]
    if a.lora is not None:
        emb_loss += ["--lora", a.lora]
    common = ["--model", str(model), "--data", str(train_csv), "--batch-size", str(a.batch_size),
              "--epochs", str(a.epochs), "--lr", str(a.lr), "--warmup-ratio", str(a.warmup_ratio),
              "--seed", str(a.seed if a.train_seed is None else a.train_seed),
              "--max-seq-length", str(max_len), "--device", a.device,
              "--eval-dir", str(gen_dir)]
    ref_cmd = [a.python, str(ST_TRAIN), *common, *ref_loss, "--threads", str(a.threads), "--output", str(work / "ref-out")]
    if truncate_dims:
        ref_cmd += ["--eval-truncate-dims", ",".join(map(str, truncate_dims))]
    if prefix:
        ref_cmd += ["--eval-prefix", prefix]
    if a.precision == "bf16":
        ref_cmd.append("--bf16")
    emb_cmd = [embtune, "train", *common, *emb_loss, "--precision", a.precision, "--output", str(work / "embtune-out")]
    if part_name:
        emb_cmd += ["--eval-part", part_name]
    if a.no_dedupe:
        emb_cmd.append("--no-dedupe")

    if a.no_reference:
        ref = None
    else:
        ref = run_json(ref_cmd, env, work / "reference.log")
    emb = run_json(emb_cmd, env, work / "embtune.log")
    # embtune's trained model at truncated dimensions: `embtune eval --truncate-dim D` on final/.
    emb_truncated = {}
    for d in truncate_dims:
        ev_cmd = [embtune, "eval", "--model", str(work / "embtune-out" / "final"), "--device", a.device,
                  "--eval-dir", str(gen_dir), "--truncate-dim", str(d)]
        if part_name:
            ev_cmd += ["--eval-part", part_name]
        emb_truncated[str(d)] = run_json(ev_cmd, env, work / f"embtune-eval-{d}.log")
    trainable = None
    if a.lora is not None or a.no_reference:
        log = (work / "embtune.log").read_text(errors="replace")
        trainable = [line.strip() for line in log.splitlines() if "trainable" in line.lower()][:3]
    if ref is None:
        emb_before, emb_after = emb["before"][METRIC], emb["after"][METRIC]
        report = {"bench": "quality", "loss": a.loss, "lora": a.lora, "embtune_only": True,
                  "ndcg@10": {"untrained_embtune_eval": emb_before, "embtune_trained": emb_after},
                  "truncated": {d: m.get(METRIC) for d, m in emb_truncated.items()},
                  "trainable": trainable, "steps": emb.get("steps"),
                  "train_seconds": emb.get("train_seconds"), "command": emb_cmd}
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
        print()
        print(f"training quality (embtune only): {model.name}, {train_csv.name} ({rows} rows), loss {a.loss}"
              f"{', LoRA ' + a.lora if a.lora is not None else ''}, {emb.get('steps')} steps")
        print(f"untrained NDCG@10 {emb_before:.4f}, trained {emb_after:.4f}")
        for d, v in report["truncated"].items():
            print(f"trained at {d} dims: NDCG@10 {v:.4f}")
        for line in trainable or []:
            print(f"  {line}")
        return 0

    def metric(m, side, when):
        if not m or METRIC not in m:
            raise SystemExit(f"{side}: no {METRIC} in its '{when}' metrics: {m}")
        return float(m[METRIC])

    ref_before, ref_after = metric(ref["eval_before"], "reference", "eval_before"), metric(ref["eval_after"], "reference", "eval_after")
    emb_before, emb_after = metric(emb["before"], "embtune", "before"), metric(emb["after"], "embtune", "after")
    untrained = ref_before
    truncated = {}
    for d in truncate_dims:
        r = (ref.get("eval_after_truncated") or {}).get(str(d), {}).get(METRIC)
        e = emb_truncated[str(d)].get(METRIC)
        if r is None or e is None:
            raise SystemExit(f"no {METRIC} at {d} dims: reference {r}, embtune {e}")
        truncated[str(d)] = {"reference": r, "embtune": e, "abs_diff": abs(e - r)}
    checks = {
        f"|embtune - reference| <= {a.tolerance}": abs(emb_after - ref_after) <= a.tolerance,
        **{f"at {d} dims: |embtune - reference| <= {a.tolerance}": t["abs_diff"] <= a.tolerance
           for d, t in truncated.items()},
        "reference > untrained": ref_after > untrained,
        "embtune > untrained": emb_after > untrained,
    }
    ok = all(checks.values())
    report = {
        "bench": "quality",
        "date_utc": started.isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {"model": str(model), "data": a.data, "train_csv": train_csv.name, "train_header": header,
                   "train_rows": rows, "eval_prefix": prefix, "batch_size": a.batch_size, "epochs": a.epochs,
                   "lr": a.lr, "warmup_ratio": a.warmup_ratio, "seed": a.seed, "train_seed": a.train_seed,
                   "max_seq_length": max_len,
                   "device": a.device, "precision": a.precision, "threads": a.threads,
                   "embtune_dedupe": not a.no_dedupe},
        "eval_sizes": ref.get("eval_sizes"),
        "ndcg@10": {"untrained_reference_eval": ref_before, "untrained_embtune_eval": emb_before,
                    "reference_trained": ref_after, "embtune_trained": emb_after,
                    "abs_diff_trained": abs(emb_after - ref_after), "abs_diff_untrained": abs(emb_before - ref_before)},
        "loss": a.loss,
        "truncated": truncated,
        "steps": {"reference": ref.get("steps"), "embtune": emb.get("steps")},
        "train_loss_reference": ref.get("train_loss"),
        "train_seconds": {"reference": ref.get("train_s"), "embtune": emb.get("train_seconds")},
        "metrics": {"reference_before": ref["eval_before"], "reference_after": ref["eval_after"],
                    "embtune_before": emb["before"], "embtune_after": emb["after"]},
        "commands": {"gen": gen_cmd, "reference": ref_cmd, "embtune": emb_cmd},
        "versions": ref.get("versions"),
        "checks": checks,
        "ok": ok,
    }
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"training quality: {model.name}, {train_csv.name} ({rows} rows), loss {a.loss}, {a.epochs} epoch, batch "
          f"{a.batch_size}, lr {a.lr}, warmup {a.warmup_ratio}, seed {a.seed}, max len {max_len}, {a.device}/{a.precision}")
    print(f"eval split: {report['eval_sizes']}")
    print(f"{'model':<22}{'NDCG@10':>10}")
    print(f"{'untrained':<22}{untrained:10.4f}   (embtune's own eval of it: {emb_before:.4f})")
    print(f"{'reference-trained':<22}{ref_after:10.4f}   ({ref.get('steps')} steps)")
    print(f"{'embtune-trained':<22}{emb_after:10.4f}   ({emb.get('steps')} steps)")
    print(f"|embtune - reference| = {abs(emb_after - ref_after):.4f}")
    for d, t in truncated.items():
        print(f"at {d} dims: reference {t['reference']:.4f}, embtune {t['embtune']:.4f}, |diff| {t['abs_diff']:.4f}")
    for name, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
