"""Reference side of encode-bench: sentence-transformers' `encode` on the same texts.

    .venv-ref/bin/python bench/reference/st_encode.py --model DIR --texts FILE \
        [--batch-size 64] [--device cpu|cuda] [--precision fp32|bf16] [--repeats 3]

FILE has one text per line. Prints one JSON line: texts, seconds and cpu_seconds (best of the repeats,
after one warm-up pass over the first batches), texts_per_s, threads, device, precision.
"""

import argparse
import json
import time

import torch
from sentence_transformers import SentenceTransformer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with open(a.texts, encoding="utf8") as f:
        texts = f.read().split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    kwargs = {"dtype": torch.bfloat16} if a.precision == "bf16" else {}
    model = SentenceTransformer(a.model, device=a.device, model_kwargs=kwargs)
    model.encode(texts[: a.batch_size * 2], batch_size=a.batch_size)
    best = float("inf")
    best_cpu = float("inf")
    for _ in range(a.repeats):
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        emb = model.encode(texts, batch_size=a.batch_size, convert_to_numpy=True)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    print(
        json.dumps(
            {
                "texts": len(texts),
                "seconds": best,
                "cpu_seconds": best_cpu,
                "texts_per_s": len(texts) / best,
                "threads": torch.get_num_threads(),
                "device": a.device,
                "precision": a.precision,
                "dim": int(emb.shape[1]),
            }
        )
    )


if __name__ == "__main__":
    main()
