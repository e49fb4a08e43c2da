#!/usr/bin/env python3
"""Reference side of mine-bench: sentence-transformers' `mine_hard_negatives`
(sentence_transformers/util/hard_negatives.py) on a pairs CSV, with the flags of `embtune mine`.

    .venv-ref/bin/python bench/reference/st_mine.py --model DIR --data PAIRS.csv --output OUT.csv \
        [--corpus DOCS.csv [--corpus-column text]] [--range-min 0] [--range-max N] \
        [--max-score X] [--min-score X] [--absolute-margin X] [--relative-margin X] \
        [--num-negatives 3] [--sampling-strategy top|random] [--include-positives] \
        [--output-format triplet|n-tuple|labeled-pair|labeled-list] [--output-scores] \
        [--batch-size 32] [--device cpu|cuda] [--seed 12] [--threads N] [--quiet]

PAIRS: CSV with a header; the reference mines on its first two columns (anchor, positive).
DOCS: CSV with a header; --corpus-column (default: the first column) holds the texts.
OUT: the returned dataset as CSV in its column order; list cells (scores, labeled-list
documents and labels) are JSON arrays. The reference's own report (range_max, score table,
skipped counts) goes to stderr unless --quiet.

Prints one JSON line on stdout: rows, columns, load_s (imports + model), mine_s
(mine_hard_negatives), write_s, total_s (since the script began, imports included), peak_rss_mib
(getrusage of this process), threads, device, versions.

With --score-pairs FILE (a CSV `anchor,text`) it only prints, as one JSON line, the
reference's cosine similarity of each pair (normalized embeddings, the same encode calls as
mining); mine_bench.py uses it to tell ties from disagreements.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import time

T0 = time.perf_counter()

import argparse
import contextlib
import csv
import inspect
import json
import platform
import random
import resource
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="local sentence-transformers folder")
    p.add_argument("--data", help="pairs CSV (anchor, positive: the first two columns)")
    p.add_argument("--output", help="output CSV")
    p.add_argument("--corpus", default=None, help="CSV of extra candidate documents")
    p.add_argument("--corpus-column", default=None, help="column of --corpus holding the texts (default: the first)")
    p.add_argument("--range-min", type=int, default=0)
    p.add_argument("--range-max", type=int, default=None)
    p.add_argument("--max-score", type=float, default=None)
    p.add_argument("--min-score", type=float, default=None)
    p.add_argument("--absolute-margin", type=float, default=None)
    p.add_argument("--relative-margin", type=float, default=None)
    p.add_argument("--num-negatives", type=int, default=3)
    p.add_argument("--sampling-strategy", default="top", choices=["top", "random"])
    p.add_argument("--include-positives", action="store_true")
    p.add_argument("--output-format", default="triplet", choices=["triplet", "n-tuple", "labeled-pair", "labeled-list"])
    p.add_argument("--output-scores", action="store_true")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=12, help="seeds Python's random (the reference's sampler) and torch")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="verbose=False: no report on stderr")
    p.add_argument("--score-pairs", default=None, help="CSV anchor,text: print their similarities and exit")
    a = p.parse_args(argv)
    if a.score_pairs is None and (a.data is None or a.output is None):
        p.error("--data and --output are required (unless --score-pairs)")
    return a


def read_table(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise SystemExit(f"{path}: empty file; expected a header line")
    return rows[0], rows[1:]


def cell(v) -> str:
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), ensure_ascii=False)
    return v if isinstance(v, str) else json.dumps(v)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def score_pairs(a, model) -> None:
    _, rows = read_table(a.score_pairs)
    anchors = [r[0] for r in rows]
    texts = [r[1] for r in rows]
    q = model.encode_query(anchors, batch_size=a.batch_size, normalize_embeddings=True, convert_to_tensor=True)
    d = model.encode_document(texts, batch_size=a.batch_size, normalize_embeddings=True, convert_to_tensor=True)
    scores = model.similarity_pairwise(q, d).tolist()
    print(json.dumps({"scores": scores}))


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, __version__ as st_version
    from sentence_transformers.util import mine_hard_negatives

    if a.threads:
        torch.set_num_threads(a.threads)
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    model = SentenceTransformer(a.model, device=a.device)
    if a.score_pairs:
        score_pairs(a, model)
        return 0

    header, rows = read_table(a.data)
    if len(header) < 2:
        raise SystemExit(f"{a.data}: needs two columns (anchor, positive); header is {header}")
    dataset = Dataset.from_dict({h: [r[i] for r in rows] for i, h in enumerate(header[:2])})
    corpus = None
    if a.corpus:
        ch, crows = read_table(a.corpus)
        col = ch.index(a.corpus_column) if a.corpus_column else 0
        corpus = [r[col] for r in crows]
    # sentence-transformers 6 calls the flag `output_scores`; 5.x called it `include_scores`.
    sig = inspect.signature(mine_hard_negatives).parameters
    scores_kw = "output_scores" if "output_scores" in sig else "include_scores"
    load_s = time.perf_counter() - T0

    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        out = mine_hard_negatives(
            dataset, model, corpus=corpus, range_min=a.range_min, range_max=a.range_max,
            max_score=a.max_score, min_score=a.min_score, absolute_margin=a.absolute_margin,
            relative_margin=a.relative_margin, num_negatives=a.num_negatives,
            sampling_strategy=a.sampling_strategy, include_positives=a.include_positives,
            output_format=a.output_format, batch_size=a.batch_size, use_faiss=False,
            verbose=not a.quiet, **{scores_kw: a.output_scores},
        )
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    mine_s = time.perf_counter() - t

    t = time.perf_counter()
    columns = list(out.column_names)
    with open(a.output, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for row in out:
            w.writerow([cell(row[c]) for c in columns])
    write_s = time.perf_counter() - t
    import transformers

    print(json.dumps({
        "rows": len(out), "columns": columns, "load_s": load_s, "mine_s": mine_s, "write_s": write_s,
        "total_s": time.perf_counter() - T0, "peak_rss_mib": peak_rss_mib(), "threads": torch.get_num_threads(),
        "device": a.device,
        "versions": {"sentence_transformers": st_version, "transformers": transformers.__version__,
                     "torch": torch.__version__, "python": platform.python_version()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
