#!/usr/bin/env python3
"""A faithful re-implementation of the ORIGINAL data-generation scripts, written by the
embtune project from the behavioural description in SEED.md section 1 (the original
scripts are not available). It is our own code; it exists to (1) time the original
approach side by side with `embtune gen` (bench/src/bin/gen-bench.rs) and (2) cross-check
the non-random columns of embtune's golden fixtures (tests/fixtures/gen/).

It keeps the original's approach and quirks on purpose:
  * pandas.read_csv with default type inference (`007` becomes `7`), NaN -> "";
  * a per-row Python loop;
  * hard-negative groups hold the RAW (untrimmed) anchor cells of every row, including
    empty anchors, keyed by the RAW category cell, looked up with the trimmed one;
  * for every positive, the candidate list is rebuilt by scanning the whole group
    (quadratic in group size);
  * random.choice (basic/domainwise) and random.choices with replacement (fusion);
  * unseeded unless --seed is given (the original had no seed).

Usage (one of the three scripts, chosen by --script):
  original_gen.py --script basic --data_path F [--encoding cp949] [--desc_col ...]
      [--category_col ...] [--positive_cols A B] [--output_unsupervised F --output_supervised F]
  original_gen.py --script domainwise --data_path F --domain_col D [--output_dir DIR]
  original_gen.py --script fusion --data_path F [--domain_col D] [--num_negatives 5] [--output_dir DIR]
"""
import argparse
import os
import random
import sys

import pandas as pd

DEFAULTS = {
    "basic": ("설명", "분류", ["대분류", "중분류"]),
    "domainwise": ("설명", "분류", ["표제어", "영문"]),
    "fusion": ("설명", "대분류", ["대분류", "중분류", "표제어", "영문"]),
}


def clean(v):
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    return str(v).strip()


def unsupervised(df, desc_col, positive_cols):
    cols = sorted([desc_col] + positive_cols)
    out = []
    for _, row in df.iterrows():
        if clean(row[desc_col]) == "":
            continue
        out.append(" ".join(f"[{c}] {clean(row[c])}" for c in cols))
    return out


def category_groups(df, desc_col, category_col):
    # Quirk kept: raw cells, empty anchors included, raw category as the key.
    groups = {}
    for _, row in df.iterrows():
        key = row[category_col]
        key = "" if (isinstance(key, float) and pd.isna(key)) else str(key)
        raw = row[desc_col]
        raw = "" if (isinstance(raw, float) and pd.isna(raw)) else str(raw)
        groups.setdefault(key, []).append(raw)
    return groups


def supervised_basic(df, desc_col, category_col, positive_cols):
    groups = category_groups(df, desc_col, category_col)
    rows = []
    for _, row in df.iterrows():
        anchor = clean(row[desc_col])
        if anchor == "":
            continue
        cat = clean(row[category_col])
        for col in [category_col] + positive_cols:
            positive = clean(row[col])
            if positive == "" or positive == anchor:
                continue
            # The original scans the whole group for every positive.
            candidates = [a for a in groups.get(cat, []) if a != anchor]
            if candidates:
                rows.append((anchor, positive, random.choice(candidates)))
    return pd.DataFrame(rows, columns=["anchor", "positive", "hard_negative"])


def supervised_fusion(df, desc_col, category_col, positive_cols, k):
    groups = category_groups(df, desc_col, category_col)
    rows = []
    for _, row in df.iterrows():
        anchor = clean(row[desc_col])
        if anchor == "":
            continue
        parts = [f"{c}: {clean(row[c])}" for c in positive_cols if clean(row[c]) != ""]
        if not parts:
            continue
        cat = clean(row[category_col])
        candidates = [a for a in groups.get(cat, []) if a != anchor]
        if candidates:
            rows.append([anchor, ", ".join(parts)] + random.choices(candidates, k=k))
    return pd.DataFrame(rows, columns=["anchor", "positive"] + [f"negative_{i + 1}" for i in range(k)])


def write_pair(unsup, sup, path_u, path_s):
    pd.DataFrame({"text": unsup}).to_csv(path_u, index=False, encoding="utf-8-sig")
    sup.to_csv(path_s, index=False, encoding="utf-8-sig")


def show(unsup, sup):
    print("unsupervised samples:")
    for t in unsup[:3]:
        print(" ", t)
    print("supervised samples:")
    print(sup.head(3).to_string())


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", choices=["basic", "domainwise", "fusion"], required=True)
    ap.add_argument("--data_path", required=True)
    ap.add_argument("--encoding", default="utf-8")
    ap.add_argument("--desc_col")
    ap.add_argument("--category_col")
    ap.add_argument("--positive_cols", nargs="+")
    ap.add_argument("--domain_col")
    ap.add_argument("--output_unsupervised")
    ap.add_argument("--output_supervised")
    ap.add_argument("--output_dir")
    ap.add_argument("--num_negatives", type=int, default=5)
    ap.add_argument("--seed", type=int, help="not in the original; for fixture cross-checks")
    a = ap.parse_args(argv)
    if a.seed is not None:
        random.seed(a.seed)
    d_desc, d_cat, d_pos = DEFAULTS[a.script]
    desc, cat, pos = a.desc_col or d_desc, a.category_col or d_cat, a.positive_cols or d_pos
    df = pd.read_csv(a.data_path, encoding=a.encoding)
    need = [desc, cat] + pos + ([a.domain_col] if a.domain_col else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        sys.exit(f"missing columns: {missing}")

    if a.script == "basic":
        unsup = unsupervised(df, desc, pos)
        sup = supervised_basic(df, desc, cat, pos)
        if a.output_unsupervised and a.output_supervised:
            write_pair(unsup, sup, a.output_unsupervised, a.output_supervised)
        else:
            show(unsup, sup)
        return

    if a.script == "domainwise" and not a.domain_col:
        sys.exit("--domain_col is required")
    if a.domain_col:
        parts = [(str(v).replace("/", "_"), df[df[a.domain_col] == v]) for v in df[a.domain_col].unique()]
    else:
        parts = [("all", df)]
    for name, part in parts:
        unsup = unsupervised(part, desc, pos)
        if a.script == "domainwise":
            sup = supervised_basic(part, desc, cat, pos)
        else:
            sup = supervised_fusion(part, desc, cat, pos, a.num_negatives)
        if a.output_dir:
            os.makedirs(a.output_dir, exist_ok=True)
            write_pair(unsup, sup, os.path.join(a.output_dir, f"{name}_unsupervised.csv"),
                       os.path.join(a.output_dir, f"{name}_supervised.csv"))
        else:
            show(unsup, sup)


if __name__ == "__main__":
    main()
