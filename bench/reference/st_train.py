#!/usr/bin/env python3
"""Reference trainer for side-by-side benchmarks: fine-tunes a local sentence-transformers
model with the reference's own ``SentenceTransformerTrainer`` and reports timing,
throughput, peak GPU memory and (optionally) retrieval metrics before/after as JSON.

The flags mirror ``embtune train`` and the hyper-parameters are embtune's defaults
(docs: /work/shared/PARITY.md, "Training defaults of the reference trainer"): AdamW with
torch's betas/eps and weight decay 0, linear warm-up (ceil(ratio * steps)) then linear
decay to 0, gradient clipping at 1.0, seed 42, MNRL scale 20, triplet euclidean margin 5.

Runs offline (HF_HUB_OFFLINE=1): --model must be a local folder.

    .venv-ref/bin/python bench/reference/st_train.py --model models/all-MiniLM-L6-v2 \
        --data train.csv --loss mnrl --batch-size 32 --epochs 1 --device cuda --bf16 \
        --eval-dir data/ --output /tmp/st-out --json-out /tmp/st.json

Data: CSV with a header; columns `anchor,positive` then the negatives (`negative_1..k`
or `hard_negative`), in file order. TripletLoss takes the first negative column only.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import argparse
import csv
import json
import math
import platform
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="local sentence-transformers folder")
    p.add_argument("--data", required=True, help="training CSV (anchor,positive,negative_1..k | hard_negative)")
    p.add_argument("--loss", default="mnrl", choices=["mnrl", "triplet", "cached-mnrl", "matryoshka-mnrl", "gist", "cached-gist"])
    p.add_argument("--matryoshka-dims", default="768,512,256,128", help="matryoshka-mnrl: comma-separated dimensions")
    p.add_argument("--guide", default=None, help="gist / cached-gist: local guide model folder")
    p.add_argument("--gist-temperature", type=float, default=0.01)
    p.add_argument("--eval-truncate-dims", default="", help="also evaluate after training at these dimensions (comma-separated)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (overrides --epochs)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (the trainer's --bf16)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--scale", type=float, default=20.0, help="MNRL / cached-MNRL scale")
    p.add_argument("--triplet-margin", type=float, default=5.0)
    p.add_argument("--mini-batch-size", type=int, default=32, help="cached-mnrl mini-batch size")
    p.add_argument("--no-duplicates", action="store_true", help="BatchSamplers.NO_DUPLICATES instead of the plain sampler")
    p.add_argument("--eval-dir", default=None, help="folder with eval_queries.csv, eval_corpus.csv, eval_qrels.csv")
    p.add_argument("--eval-prefix", default="", help="file-name prefix of the eval split files")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--output", default="st-train-out", help="trainer output_dir (nothing is saved unless --save-model)")
    p.add_argument("--save-model", action="store_true", help="save the trained model to OUTPUT/final")
    p.add_argument("--json-out", default=None, help="also write the JSON report here")
    p.add_argument("--query-prompt", default=None, help="prompt prepended to anchors")
    p.add_argument("--document-prompt", default=None, help="prompt prepended to positives and negatives")
    args = p.parse_args(argv)
    if args.max_steps is not None and args.max_steps <= 0:
        args.max_steps = None
    return args


def read_columns(path: str) -> dict[str, list[str]]:
    """CSV -> ordered column name -> texts (BOM tolerated, missing cells become "")."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        sys.exit(f"{path}: empty file")
    header, body = rows[0], rows[1:]
    return {h: [r[i] if i < len(r) else "" for r in body] for i, h in enumerate(header)}


def training_dataset(path: str, loss: str):
    from datasets import Dataset

    cols = read_columns(path)
    names = list(cols)
    for bad in ("label", "score"):
        if bad in names:
            sys.exit(f"{path}: column '{bad}' found; this script trains on (anchor, positive, negatives...) only")
    if len(names) < 2:
        sys.exit(f"{path}: need at least anchor and positive columns, found {names}")
    if loss == "triplet":
        if len(names) < 3:
            sys.exit(f"{path}: triplet loss needs a negative column, found {names}")
        names = names[:3]
    return Dataset.from_dict({n: cols[n] for n in names}), names


def retrieval_evaluator(args, truncate_dim=None):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    d = Path(args.eval_dir)

    def two(name, want):
        cols = read_columns(str(d / f"{args.eval_prefix}{name}.csv"))
        if list(cols)[:2] != want:
            sys.exit(f"{d / name}.csv: expected header {','.join(want)}, found {','.join(cols)}")
        return list(zip(cols[want[0]], cols[want[1]]))

    queries = dict(two("eval_queries", ["id", "text"]))
    corpus = dict(two("eval_corpus", ["id", "text"]))
    relevant: dict[str, set[str]] = {}
    for q, c in two("eval_qrels", ["query_id", "corpus_id"]):
        relevant.setdefault(q, set()).add(c)
    return InformationRetrievalEvaluator(
        queries=queries,
        corpus=corpus,
        relevant_docs=relevant,
        batch_size=args.eval_batch_size,
        name="",
        write_csv=False,
        show_progress_bar=False,
        query_prompt=args.query_prompt,
        corpus_prompt=args.document_prompt,
        truncate_dim=truncate_dim,
    ), {"queries": len(queries), "corpus": len(corpus), "qrels": sum(len(v) for v in relevant.values())}


def evaluate(evaluator, model, device: str) -> tuple[dict[str, float], float]:
    import torch

    t0 = time.perf_counter()
    raw = evaluator(model)
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    # Keep the plain metric names (`cosine_ndcg@10`) whatever prefix the version adds.
    out = {}
    for k, v in raw.items():
        key = k[k.index("cosine_"):] if "cosine_" in k else k.lstrip("_")
        out[key] = float(v)
    return out, secs


def examples_seen(steps: int, rows: int, batch: int) -> int:
    """Rows consumed by `steps` optimizer steps (drop_last=False: the last batch of an epoch may be short)."""
    per_epoch = math.ceil(rows / batch)
    full, rest = divmod(steps, per_epoch)
    return full * rows + min(rest * batch, rows)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    import transformers
    import sentence_transformers as st
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    if not Path(args.model).is_dir():
        sys.exit(f"--model {args.model}: not a local folder (this script never downloads)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    if args.threads:
        # On a busy machine, OpenMP threads that outnumber free cores spin-wait and slow
        # CPU runs by an order of magnitude; pin the count to compare like with like.
        torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)

    t0 = time.perf_counter()
    model = SentenceTransformer(args.model, device=args.device, local_files_only=True)
    model.max_seq_length = args.max_seq_length
    load_s = time.perf_counter() - t0

    train_ds, columns = training_dataset(args.data, args.loss)
    rows = len(train_ds)

    if args.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, scale=args.scale)
    elif args.loss == "cached-mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, scale=args.scale, mini_batch_size=args.mini_batch_size)
    elif args.loss == "matryoshka-mnrl":
        dims = [int(d) for d in args.matryoshka_dims.split(",")]
        loss = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model, scale=args.scale), matryoshka_dims=dims)
    elif args.loss in ("gist", "cached-gist"):
        if not args.guide:
            sys.exit(f"--loss {args.loss} needs --guide DIR")
        guide = SentenceTransformer(args.guide, device=args.device, local_files_only=True)
        if args.loss == "gist":
            loss = losses.GISTEmbedLoss(model, guide=guide, temperature=args.gist_temperature)
        else:
            loss = losses.CachedGISTEmbedLoss(model, guide=guide, temperature=args.gist_temperature,
                                              mini_batch_size=args.mini_batch_size)
    else:
        loss = losses.TripletLoss(
            model, distance_metric=losses.TripletDistanceMetric.EUCLIDEAN, triplet_margin=args.triplet_margin
        )

    prompts = None
    if args.query_prompt or args.document_prompt:
        prompts = {}
        for i, c in enumerate(columns):
            p = args.query_prompt if i == 0 else args.document_prompt
            if p:
                prompts[c] = p

    evaluator, eval_sizes = (None, None)
    if args.eval_dir:
        evaluator, eval_sizes = retrieval_evaluator(args)

    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.output,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps is not None else -1,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        optim="adamw_torch",
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_ratio,  # a float < 1 is a ratio in transformers 5 (ceil(ratio * steps))
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        bf16=args.bf16,
        use_cpu=args.device == "cpu",
        batch_sampler=BatchSamplers.NO_DUPLICATES if args.no_duplicates else BatchSamplers.BATCH_SAMPLER,
        prompts=prompts,
        dataloader_drop_last=False,
        dataloader_num_workers=0,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=10**9,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=train_ds, loss=loss)

    before = eval_before_s = None
    if evaluator is not None:
        before, eval_before_s = evaluate(evaluator, model, args.device)

    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = trainer.train()
    if args.device == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else None

    steps = int(trainer.state.global_step)
    examples = examples_seen(steps, rows, args.batch_size)

    after = eval_after_s = None
    if evaluator is not None:
        after, eval_after_s = evaluate(evaluator, model, args.device)
    after_truncated = {}
    if evaluator is not None and args.eval_truncate_dims:
        for d in [int(x) for x in args.eval_truncate_dims.split(",") if x]:
            ev, _ = retrieval_evaluator(args, truncate_dim=d)
            after_truncated[str(d)], _ = evaluate(ev, model, args.device)
    if args.save_model:
        model.save(str(Path(args.output) / "final"))

    report = {
        "system": "sentence-transformers",
        "versions": {
            "sentence_transformers": st.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "config": {
            "model": args.model,
            "data": args.data,
            "columns": columns,
            "loss": args.loss,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "lr": args.lr,
            "warmup_ratio": args.warmup_ratio,
            "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm,
            "seed": args.seed,
            "max_seq_length": args.max_seq_length,
            "precision": "bf16" if args.bf16 else "fp32",
            "no_duplicates": args.no_duplicates,
            "query_prompt": args.query_prompt,
            "document_prompt": args.document_prompt,
            "mini_batch_size": args.mini_batch_size if args.loss == "cached-mnrl" else None,
        },
        "rows": rows,
        "steps": steps,
        "examples": examples,
        "load_s": round(load_s, 4),
        "train_s": round(train_s, 4),
        "triplets_per_s": round(examples / train_s, 3) if train_s > 0 else None,
        "steps_per_s": round(steps / train_s, 4) if train_s > 0 else None,
        "train_loss": float(out.training_loss),
        "peak_gpu_mem_bytes": peak,
        "peak_gpu_mem_gib": round(peak / 2**30, 3) if peak is not None else None,
        "eval_sizes": eval_sizes,
        "eval_before": before,
        "eval_after": after,
        "eval_after_truncated": after_truncated,
        "eval_before_s": eval_before_s,
        "eval_after_s": eval_after_s,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
