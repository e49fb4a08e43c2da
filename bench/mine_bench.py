#!/usr/bin/env python3
"""Hard-negative mining, side by side: `embtune mine` vs the reference
(bench/reference/st_mine.py, sentence-transformers' `mine_hard_negatives`) on the same model,
pairs, corpus and parameters.

Data: a seeded synthetic set built from data/demo/products.csv (43 fictional bank, insurance,
card and securities products, five descriptions each) and templates: `--pairs` question ->
product-copy pairs in Korean and English (about one anchor in ten has a second positive)
and a `--corpus-size` document corpus of product copy, rate/fee/term sheets, FAQ lines and
notices with varied numbers, which holds about half of the positives and some exact repeats.

Timing: whole process vs whole process. Each run is one child process timed from spawn to
exit (imports, model load, encoding, search, writing the output); its peak RSS is the
child's own `ru_maxrss` (os.wait4), the same measure for both sides. Each side also reports
its own phases when it prints a JSON summary (the reference: load_s, mine_s, write_s). The
sides alternate run by run (`--repeats`, default 3) so a change in the machine's load hits
both alike; the best (shortest) wall time is kept, and the largest peak RSS.

Agreement: for sampling "top" (triplet or n-tuple output), each (anchor, positive) must get
the same negatives from both sides. Where the sets differ the reference scores the differing
negatives (st_mine.py --score-pairs) and the difference counts as a tie when every negative
that only one side chose scores within `--tie-tol` of a boundary: the reference's weakest
chosen negative, max_score or min_score (a candidate sitting on a margin's threshold is
reported as a disagreement; inspect it in the report). For "random" and the labeled formats
only the row counts are compared. A disagreement makes the exit status 1.

Offline: needs only the Python standard library here; the reference side runs with
`--python` (a venv that already has sentence-transformers), nothing is installed.

    python3 bench/mine_bench.py --embtune target/release/embtune \
        --python /work/main/.venv-ref/bin/python --pairs 2000 --corpus-size 20000 --out /tmp/mine.json
    python3 bench/mine_bench.py --reference-only --pairs 100 --corpus-size 1000 --repeats 1
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ST_MINE = ROOT / "bench" / "reference" / "st_mine.py"
PRODUCTS = ROOT / "data" / "demo" / "products.csv"

# --- synthetic data -----------------------------------------------------------------------

PERSONA_KO = ["30대 직장인", "사회초년생", "자영업자", "대학생", "은퇴를 앞둔 50대", "신혼부부", "프리랜서",
              "두 아이를 키우는 부모", "해외 유학 준비생", "중소기업 대표"]
PERSONA_EN = ["an office worker in my thirties", "a new graduate", "a small business owner", "a student",
              "about to retire", "newly married", "a freelancer", "a parent of two", "moving abroad to study"]
ASK_KO = ["{persona}입니다. {q}", "{q} {persona}라서 {amount} 정도 생각하고 있어요.", "{channel} 가입하려는데, {q}",
          "{persona}예요. {period} 기준으로 알려 주세요. {q}"]
ASK_EN = ["I'm {persona}. {q}", "{q} I have about {amount_en} in mind.", "Quick question from {persona}: {q}",
          "{q} I would open it {channel_en}."]
DOC_KO = [
    "{name} {period} 가입 시 연 {rate}% 금리가 적용됩니다.",
    "{name} 중도해지 수수료는 {fee}원이며 {period} 이후에는 면제됩니다.",
    "{name}은 {channel} 가입할 수 있고 최소 가입 금액은 {amount}입니다.",
    "자주 묻는 질문: {name} 가입 후 {period} 안에 해지하면 어떻게 되나요?",
    "[공지] {name} 금리가 {month}월부터 연 {rate}%로 변경됩니다.",
    "{minor} 상품 비교: {name}은 {amount}부터 가입할 수 있습니다.",
    "{name} 안내 ({month}월 {day}일 개정): {detail}",
    "{what}. {name} 상품설명서 제{version}판.",
]
DOC_EN = [
    "{en} pays {rate}% a year over {period_en}.",
    "The {en} early-exit fee is {fee} won; it is waived after {period_en}.",
    "FAQ: can I open {en} {channel_en} with {amount_en}?",
    "Notice: the {en} rate changes to {rate}% from month {month}.",
    "{en} (terms of {year}-{month:02d}-{day:02d}): {detail_en}",
]
CHANNELS = ["앱에서", "영업점에서", "인터넷뱅킹으로", "전화로"]
CHANNELS_EN = ["in the app", "at a branch", "online", "by phone"]


def load_products() -> list[dict]:
    """The products of data/demo/products.csv, each with its five descriptions (Korean copy,
    Korean question, Korean "when to use" line, English copy, English question)."""
    with open(PRODUCTS, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i in range(0, len(rows) // 5 * 5, 5):
        g = rows[i : i + 5]
        ko_copy, ko_q, ko_line, en_copy, en_q = (r["설명"] for r in g)
        what, detail = ko_copy.split("입니다. ", 1)
        out.append({"name": g[0]["표제어"], "en": g[0]["영문"], "minor": g[0]["중분류"], "ko_copy": ko_copy,
                    "ko_q": ko_q, "ko_line": ko_line, "en_copy": en_copy, "en_q": en_q, "what": what,
                    "detail": detail, "detail_en": en_copy.split(". ", 1)[-1]})
    return out


def fill(rng: random.Random, tpl: str, p: dict, **kw) -> str:
    months = rng.choice([3, 6, 12, 24, 36, 60])
    amount = rng.choice([10, 30, 50, 100, 300, 500, 1000])
    return tpl.format(
        **p, persona=kw.get("persona", ""), q=kw.get("q", ""), channel=rng.choice(CHANNELS), channel_en=rng.choice(CHANNELS_EN),
        amount=f"{amount}만 원", amount_en=f"{amount * 10_000:,} won", period=f"{months}개월",
        period_en=f"{months} months", rate=f"{rng.randint(150, 450) / 100:.2f}", fee=f"{rng.randint(1, 50) * 1000:,}",
        month=rng.randint(1, 12), day=rng.randint(1, 28), year=rng.randint(2015, 2026),
        version=rng.randint(1, 99),
    )


def synth(pairs_path: Path, corpus_path: Path, n_pairs: int, n_corpus: int, seed: int) -> dict:
    """Writes pairs (`anchor,positive`) and corpus (`text`) CSVs; returns their sizes."""
    rng = random.Random(seed)
    prods = load_products()
    pairs = []
    while len(pairs) < n_pairs:
        p = rng.choice(prods)
        if rng.random() < 0.6:
            anchor = fill(rng, rng.choice(ASK_KO), p, persona=rng.choice(PERSONA_KO), q=p["ko_q"])
            pos = [p["ko_copy"], p["ko_line"], fill(rng, rng.choice(DOC_KO), p)]
        else:
            anchor = fill(rng, rng.choice(ASK_EN), p, persona=rng.choice(PERSONA_EN), q=p["en_q"])
            pos = [p["en_copy"], fill(rng, rng.choice(DOC_EN), p)]
        k = 2 if rng.random() < 0.1 else 1
        for positive in rng.sample(pos, k):
            pairs.append((anchor, positive))
    pairs = pairs[:n_pairs]
    positives = list(dict.fromkeys(p for _, p in pairs))
    corpus = rng.sample(positives, len(positives) // 2)
    while len(corpus) < n_corpus:
        p = rng.choice(prods)
        tpl = rng.choice(DOC_KO) if rng.random() < 0.65 else rng.choice(DOC_EN)
        corpus.append(fill(rng, tpl, p))
    rng.shuffle(corpus)
    corpus = corpus[:n_corpus]
    for path, header, rows in ((pairs_path, ["anchor", "positive"], pairs), (corpus_path, ["text"], [[t] for t in corpus])):
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
    return {"pairs": len(pairs), "unique_anchors": len({a for a, _ in pairs}), "corpus": len(corpus),
            "corpus_unique": len(set(corpus)), "positives_in_corpus": len(set(positives) & set(corpus))}


# --- running ------------------------------------------------------------------------------


def last_json(out: str) -> dict | None:
    """The last JSON object printed on its own line(s) at the end of stdout, or None."""
    for start in sorted((i for i, c in enumerate(out) if c == "{" and (i == 0 or out[i - 1] == "\n")), reverse=True):
        try:
            obj, end = json.JSONDecoder().raw_decode(out, start)
        except json.JSONDecodeError:
            continue
        if not out[end:].strip():
            return obj
    return None


def run_timed(cmd: list[str], env: dict, log: Path) -> dict:
    """Runs cmd as one child; wall seconds from spawn to exit, the child's peak RSS, its JSON."""
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if p.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"command failed (rc {p.returncode}): {' '.join(cmd)}\n--- stderr tail ({log}) ---\n{tail}")
    return {"seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024.0, "report": last_json(stdout)}


def mine_flags(a) -> list[str]:
    """The flags both sides share (embtune's names; st_mine.py takes the same)."""
    f = ["--range-min", str(a.range_min), "--num-negatives", str(a.num_negatives),
         "--sampling-strategy", a.sampling_strategy, "--output-format", a.output_format,
         "--batch-size", str(a.batch_size), "--device", a.device, "--seed", str(a.seed)]
    for flag in ("range_max", "max_score", "min_score", "absolute_margin", "relative_margin"):
        v = getattr(a, flag)
        if v is not None:
            f += ["--" + flag.replace("_", "-"), str(v)]
    if a.include_positives:
        f.append("--include-positives")
    if a.output_scores:
        f.append("--output-scores")
    return f


def side_cmd(a, side: str, pairs: Path, corpus: Path, out: Path) -> list[str]:
    common = ["--model", a.model, "--data", str(pairs), "--output", str(out), "--corpus", str(corpus),
              "--corpus-column", "text"] + mine_flags(a)
    if side == "embtune":
        return [a.embtune, "mine"] + common + ["--quiet"]
    return [a.python, str(ST_MINE)] + common + ["--threads", str(a.threads), "--quiet"]


# --- agreement ----------------------------------------------------------------------------


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def negatives_by_pair(path: Path) -> dict[tuple[str, str], list[str]]:
    """(anchor, positive) -> negatives, for triplet and n-tuple outputs."""
    header, rows = read_rows(path)
    neg_cols = [i for i, c in enumerate(header) if c == "negative" or c.startswith("negative_")]
    got: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        got.setdefault((r[0], r[1]), []).extend(r[i] for i in neg_cols)
    return got


def agreement(a, env: dict, work: Path, e_out: Path, r_out: Path) -> dict:
    if a.sampling_strategy != "top" or a.output_format not in ("triplet", "n-tuple") or a.include_positives:
        e_rows, r_rows = len(read_rows(e_out)[1]), len(read_rows(r_out)[1])
        return {"checked": "row counts only", "rows_embtune": e_rows, "rows_reference": r_rows, "ok": e_rows == r_rows}
    e, r = negatives_by_pair(e_out), negatives_by_pair(r_out)
    keys = set(e) | set(r)
    differ = [k for k in keys if set(e.get(k, [])) != set(r.get(k, []))]
    res = {"checked": "negatives per (anchor, positive)", "pairs": len(keys), "identical": len(keys) - len(differ),
           "rows_embtune": sum(len(v) for v in e.values()), "rows_reference": sum(len(v) for v in r.values())}
    if not differ:
        return {**res, "ties": 0, "disagreements": 0, "ok": True}
    # Score every negative of the differing pairs with the reference model.
    need = sorted({(k[0], n) for k in differ for n in set(e.get(k, [])) | set(r.get(k, []))})
    path = work / "score_pairs.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["anchor", "text"])
        w.writerows(need)
    cmd = [a.python, str(ST_MINE), "--model", a.model, "--score-pairs", str(path), "--device", a.device,
           "--batch-size", str(a.batch_size), "--threads", str(a.threads)]
    scores = dict(zip(need, run_timed(cmd, env, work / "score_pairs.log")["report"]["scores"]))
    # A tie: each negative that only one side chose scores within tie_tol of a boundary, i.e.
    # the reference's weakest chosen negative (the k-th), or max_score / min_score.
    bounds = [b for b in (a.max_score, a.min_score) if b is not None]
    ties, bad = 0, []
    for k in differ:
        es, rs = set(e.get(k, [])), set(r.get(k, []))
        if len(es) != len(rs):
            bad.append({"anchor": k[0], "positive": k[1], "negatives_embtune": len(es), "negatives_reference": len(rs)})
            continue
        floor_r = min(scores[(k[0], n)] for n in rs)
        only = {n: scores[(k[0], n)] for n in es ^ rs}
        if all(any(abs(v - b) <= a.tie_tol for b in [floor_r] + bounds) for v in only.values()):
            ties += 1
        else:
            bad.append({"anchor": k[0], "positive": k[1], "reference_kth_score": floor_r,
                        "only_embtune": {n: only[n] for n in es - rs}, "only_reference": {n: only[n] for n in rs - es}})
    return {**res, "ties": ties, "disagreements": len(bad), "examples": bad[:5],
            "ok": not bad}


# --- main ---------------------------------------------------------------------------------


def fmt(v, spec):
    if v is None:
        width = spec.lstrip("<>").split(".")[0]
        return "-".rjust(int(width) if width.isdigit() else 0)
    return format(v, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embtune", default=str(ROOT / "target" / "release" / "embtune"))
    p.add_argument("--python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    p.add_argument("--model", default=str(ROOT / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--reference-only", action="store_true", help="run the reference side alone")
    p.add_argument("--pairs", type=int, default=2000, help="synthetic (anchor, positive) rows")
    p.add_argument("--corpus-size", type=int, default=20000, help="synthetic corpus documents")
    p.add_argument("--seed", type=int, default=12, help="data seed; also passed to both sides")
    p.add_argument("--repeats", type=int, default=3, help="runs per side; the best is kept")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for both sides")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=32)
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
    p.add_argument("--tie-tol", type=float, default=1e-4, help="score difference that still counts as a tie")
    p.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    a = p.parse_args(argv)
    a.model = str(Path(a.model).resolve())
    sides = ["reference"] if a.reference_only else ["embtune", "reference"]
    checks = [("--model", a.model), ("--python", a.python)]
    if not a.reference_only:
        a.embtune = str(Path(a.embtune).resolve())
        checks.append(("--embtune", a.embtune))
    for what, path in checks:
        if not Path(path).exists():
            raise SystemExit(f"{what} {path}: not found" + (" (or pass --reference-only)" if what == "--embtune" else ""))

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="mine-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    pairs, corpus = work / "pairs.csv", work / "corpus.csv"
    data = synth(pairs, corpus, a.pairs, a.corpus_size, a.seed)

    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    venv = ROOT / ".venv"
    if (venv / "lib").is_dir():  # libtorch of the embtune build (LIBTORCH_USE_PYTORCH); rpath usually covers it
        libs = list((venv / "lib").glob("python3*/site-packages/torch/lib"))
        if libs:
            env["LD_LIBRARY_PATH"] = ":".join([str(libs[0])] + [x for x in [env.get("LD_LIBRARY_PATH")] if x])

    print(f"mine_bench: {data['pairs']} pairs ({data['unique_anchors']} anchors), corpus {data['corpus']} "
          f"({data['corpus_unique']} unique), {a.num_negatives} negatives, {a.sampling_strategy}, {a.output_format}, "
          f"{a.device}, threads {a.threads}, repeats {a.repeats}", file=sys.stderr, flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = {s: [] for s in sides}
    for rep in range(a.repeats):
        for side in sides:
            out = work / f"{side}-{rep}.csv"
            r = run_timed(side_cmd(a, side, pairs, corpus, out), env, work / f"{side}-{rep}.log")
            r["output"] = out
            runs[side].append(r)
            print(f"  {side:9s} rep {rep + 1}: {r['seconds']:8.2f} s, peak RSS {r['peak_rss_mib']:7.0f} MiB",
                  file=sys.stderr, flush=True)

    res = {}
    for side, rs in runs.items():
        best = min(rs, key=lambda r: r["seconds"])
        res[side] = {"seconds": best["seconds"], "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                     "rows": len(read_rows(best["output"])[1]), "report": best["report"],
                     "command": side_cmd(a, side, pairs, corpus, Path("OUT.csv")),
                     "runs": [{"seconds": r["seconds"], "peak_rss_mib": r["peak_rss_mib"]} for r in rs]}
    agree = None
    if not a.reference_only:
        agree = agreement(a, env, work, runs["embtune"][0]["output"], runs["reference"][0]["output"])
    e, r = res.get("embtune"), res["reference"]
    ratio = e["seconds"] / r["seconds"] if e else None
    rss_ratio = e["peak_rss_mib"] / r["peak_rss_mib"] if e else None
    report = {
        "bench": "mine",
        "date_utc": started.isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {"model": a.model, "device": a.device, "threads": a.threads, "repeats": a.repeats, "seed": a.seed,
                   "flags": mine_flags(a), "data": data},
        **res,
        "agreement": agree,
        "ratio_seconds_embtune_over_reference": ratio,
        "ratio_rss_embtune_over_reference": rss_ratio,
    }
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"hard-negative mining: {Path(a.model).name}, {data['pairs']} pairs, corpus {data['corpus']}, "
          f"{a.num_negatives} negatives ({a.sampling_strategy}, {a.output_format}), {a.device}, {a.threads} threads, "
          f"whole process, best of {a.repeats}")
    print(f"{'side':<11}{'seconds':>10}{'peak RSS MiB':>14}{'rows':>8}")
    for name in ("embtune", "reference"):
        s = res.get(name)
        if s is None:
            print(f"{name:<11}{'-':>10}{'-':>14}{'-':>8}")
        else:
            print(f"{name:<11}{s['seconds']:10.2f}{s['peak_rss_mib']:14.0f}{s['rows']:8d}")
    print(f"ratio embtune/reference: time {fmt(ratio, '.3f')}, peak RSS {fmt(rss_ratio, '.3f')}")
    if agree is not None:
        summary = {k: v for k, v in agree.items() if k != "examples"}
        print(f"agreement: {json.dumps(summary, ensure_ascii=False)}")
        for ex in agree.get("examples", [])[:2]:
            print(f"  differs: {json.dumps(ex, ensure_ascii=False)[:400]}")
        if not agree["ok"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
