#!/usr/bin/env python3
"""Training throughput, side by side: `embtune train` vs the reference trainer
(bench/reference/st_train.py, sentence-transformers' SentenceTransformerTrainer) on the same
model, data, batch size, max length, loss (MNRL, one hard negative) and number of steps.

Data: a seeded synthetic triplet CSV (anchor,positive,hard_negative), texts of 8-60 words
(`--texts long`, the default) or 5-25-word anchors against 2-8-word titles (`--texts short`)
drawn from a built-in word list; positives share part of the anchor's words, negatives
share fewer, so the task is not trivial. Enough rows that no run wraps an epoch.

Timing: each side reports its own training-loop time (embtune: `train_seconds`, which
excludes evaluation and saving; reference: wall time of `trainer.train()`). Both run the
same number of optimizer steps. With `--warmup-steps K` each side also runs K steps alone
and the figure becomes (N * batch) / (t[K+N] - t[K]), which removes start-up costs (first
CUDA kernels, allocator growth, trainer set-up) from both sides alike; with K = 0 (the
default) the whole loop of N steps is timed, first step included. Each measurement is
repeated `--repeats` times (default 2; the two sides alternate) and the best (shortest) time is kept.

Threads: both sides get the same OMP_NUM_THREADS / MKL_NUM_THREADS (`--threads`, default
the machine's core count), and the reference also `torch.set_num_threads(--threads)`.

GPU memory (CUDA): both sides report the caching allocator's peak over the training loop
(peaks reset after loading, read after the last step): the reference
`torch.cuda.max_memory_allocated()`, embtune the same c10 statistic (`peak_gpu_mem_gib` in
its summary, core/src/device_mem.rs). The script also polls `nvidia-smi` for each child
process's peak used memory (CUDA context + cached blocks), for both sides alike.

Offline: needs only the Python standard library here; the reference side runs with
`--python` (a venv that already has sentence-transformers), nothing is installed.

    python3 bench/train_bench.py --model models/all-MiniLM-L6-v2 --batch-size 16 --steps 20 \
        --device cpu --precision fp32 --embtune target/release/embtune \
        --python .venv-ref/bin/python --out /tmp/train_bench.json
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ST_TRAIN = ROOT / "bench" / "reference" / "st_train.py"

WORDS = """
account address advice agent airport amount answer apartment apple application appointment
area argument arm army art article artist attack attempt attention audience author average
baby back bag balance ball bank bar base basket bathroom battery beach bean bear bed bedroom
beer bell belt bench benefit bicycle bill bird birthday blanket block blood board boat body
bone book border bottle bottom box brain branch bread breakfast bridge brother budget building
bus business butter button cabinet cable cake camera camp campaign cancer candidate capital
car card career carpet case cash castle cat cell chair challenge chance change channel chapter
charge chart cheese chemistry chest chicken child choice church city class classroom client
climate clock cloud club coach coast coat code coffee collection college color combination
comment committee community company comparison competition computer concept concert condition
connection contract control conversation cookie corner cost country county couple course court
cousin cover credit crime culture cup currency customer cycle dad damage data database date
daughter deal death debt decision definition delivery demand department deposit design desk
detail development device diamond diet difference dinner direction director dirt discount
discussion disease distance doctor document dog door drawer dream dress drink driver drug
earth economy editor education effect effort egg election employee energy engine engineer
entry environment equipment error event evidence exam example exchange experience expert eye
face fact factor family farm father feature fee feedback field figure file film finance fire
fish flight floor flower focus food foot force forest form fortune frame freedom friend fruit
fuel function fund furniture game garden gas gate gift girl glass goal gold government grade
grass group growth guest guidance guitar hair hall hand health heart height highway history
hobby holiday home hope horse hospital hotel house housing idea image impact income industry
information injury insect instance instruction insurance interest internet interview invoice
island issue item job journey judgment key kitchen knowledge lab lake land language laptop law
lawyer layer leader lesson letter level library license life light limit line link list loan
location lock loss love machine magazine manager map market marriage material meal measure
meat media medicine meeting member memory menu message metal method midnight mind minute
mirror mission mixture mobile model moment money month morning mortgage mother motor mountain
mouse movie music nation nature network news newspaper night note number object ocean offer
office oil opinion option orange order organization oven owner package page pain painting
paper parent park partner party passenger passion password patient payment peace pension
people percentage period permission person phone photo physics piano picture pie piece pizza
place plan plane plant platform player poem poet policy politics pollution pool population
portfolio position potato power premium presence president pressure price priority problem
process product profession profit program project property proposal protection quality
quantity queen question radio rate ratio reading reality reason receipt recipe record refund
region relation rent report request research resource response restaurant result revenue
review river road rock role room rule safety salad salary sale sample savings scale scene
school science screen sea season secret sector security series service session setting shape
share shirt shoe shop signal silver singer sister site size skill software soil solution song
sound soup source space speaker speech sport spring staff stage standard star statement
station steak storage store story strategy street strength student studio subject success
sugar suggestion summer supermarket supply support surgery system table tale task tax tea
teacher team technology telephone television temperature tennis tension term test text
theory thing ticket time tooth topic tour town trade tradition traffic train transfer
transport travel tree trip truck trust truth union unit university user vacation value
variety vehicle version video view village violin visit voice volume wage wallet war
warning water wealth weather website week weight wheel whole wife window wine winter woman
wood word work worker world writer yard year youth zone
""".split()
FILLER = "the a of to and in for with on at by from about into over after before under is are was can will should".split()


def sentence(rng: random.Random, topic: list[str], share: float, n_words: int) -> str:
    out = []
    for _ in range(n_words):
        r = rng.random()
        if r < 0.3:
            out.append(rng.choice(FILLER))
        elif r < 0.3 + 0.7 * share:
            out.append(rng.choice(topic))
        else:
            out.append(rng.choice(WORDS))
    text = " ".join(out)
    return text[0].upper() + text[1:] + "."


# Word counts per column: (anchor, positive, hard negative). "long": every text 8-60 words;
# "short": descriptions of 5-25 words against titles of 2-8 words (table-style data, where
# fixed per-step costs dominate).
TEXT_LENGTHS = {"long": ((8, 60), (8, 60), (8, 60)), "short": ((5, 25), (2, 8), (2, 8))}


def synth_triplets(path: Path, rows: int, seed: int, texts: str = "long") -> dict:
    """Seeded anchor,positive,hard_negative CSV; word counts from TEXT_LENGTHS[texts]."""
    (a_lo, a_hi), (p_lo, p_hi), (n_lo, n_hi) = TEXT_LENGTHS[texts]
    rng = random.Random(seed)
    lengths = []
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["anchor", "positive", "hard_negative"])
        for _ in range(rows):
            topic = rng.sample(WORDS, 12)
            near = topic[:6] + rng.sample(WORDS, 6)
            row = [
                sentence(rng, topic, 0.6, rng.randint(a_lo, a_hi)),
                sentence(rng, topic, 0.5, rng.randint(p_lo, p_hi)),
                sentence(rng, near, 0.4, rng.randint(n_lo, n_hi)),
            ]
            lengths += [len(t.split()) for t in row]
            w.writerow(row)
    return {"rows": rows, "words_min": min(lengths), "words_max": max(lengths), "words_mean": round(sum(lengths) / len(lengths), 1)}


class GpuPoller:
    """Peak `nvidia-smi` used memory (MiB) of one process id, polled every 0.2 s."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, None, threading.Event()
        self.ok = shutil.which("nvidia-smi") is not None
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5,
                ).stdout
                for line in out.splitlines():
                    parts = [p.strip() for p in line.split(",")]
                    if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                        v = int(parts[1])
                        self.peak = v if self.peak is None else max(self.peak, v)
            except Exception:
                pass
            self._stop.wait(0.2)

    def __enter__(self):
        if self.ok:
            self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.ok:
            self._t.join()


def run_json(cmd: list[str], env: dict, log: Path, device: str) -> tuple[dict, float | None]:
    """Runs cmd, returns (the JSON object it printed on stdout, nvidia-smi peak MiB or None)."""
    with open(log, "w") as err:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        poller = GpuPoller(p.pid) if device == "cuda" else None
        if poller:
            poller.__enter__()
        out, _ = p.communicate()
        if poller:
            poller.__exit__()
    if p.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"command failed (rc {p.returncode}): {' '.join(cmd)}\n--- stderr tail ({log}) ---\n{tail}")
    # The JSON report is the last object on stdout; libraries may print dict-like logs first.
    for start in sorted((i for i, c in enumerate(out) if c == "{" and (i == 0 or out[i - 1] == "\n")), reverse=True):
        try:
            obj, end = json.JSONDecoder().raw_decode(out, start)
        except json.JSONDecodeError:
            continue
        if not out[end:].strip():
            return obj, (poller.peak if poller else None)
    raise SystemExit(f"no JSON report at the end of stdout of: {' '.join(cmd)}\n{out[-2000:]}")


def embtune_cmd(a, data: Path, out: Path, steps: int) -> list[str]:
    return [
        a.embtune, "train", "--model", a.model, "--data", str(data), "--loss", "mnrl", "--output", str(out),
        "--batch-size", str(a.batch_size), "--epochs", "1", "--max-steps", str(steps), "--lr", str(a.lr),
        "--warmup-ratio", "0.1", "--seed", str(a.seed), "--device", a.device, "--precision", a.precision,
        "--max-seq-length", str(a.max_seq_length), "--log-every", str(max(steps, 1)),
    ]


def reference_cmd(a, data: Path, out: Path, steps: int) -> list[str]:
    cmd = [
        a.python, str(ST_TRAIN), "--model", a.model, "--data", str(data), "--loss", "mnrl", "--output", str(out),
        "--batch-size", str(a.batch_size), "--epochs", "1", "--max-steps", str(steps), "--lr", str(a.lr),
        "--warmup-ratio", "0.1", "--seed", str(a.seed), "--device", a.device,
        "--max-seq-length", str(a.max_seq_length), "--threads", str(a.threads),
    ]
    if a.precision == "bf16":
        cmd.append("--bf16")
    return cmd


def measure(a, side: str, data: Path, work: Path, env: dict, steps: int, rep: int) -> dict:
    out = work / f"{side}-{steps}-{rep}"
    cmd = embtune_cmd(a, data, out, steps) if side == "embtune" else reference_cmd(a, data, out, steps)
    report, smi = run_json(cmd, env, work / f"{side}-{steps}-{rep}.log", a.device)
    secs = report["train_seconds"] if side == "embtune" else report["train_s"]
    examples, got_steps = report["examples"], report["steps"]
    # Both sides: the caching allocator's peak over the training loop (None on CPU).
    peak_alloc = report.get("peak_gpu_mem_gib")
    if got_steps != steps:
        raise SystemExit(f"{side}: asked for {steps} steps, ran {got_steps}")
    shutil.rmtree(out, ignore_errors=True)  # embtune writes final/ (~90 MB for MiniLM)
    return {"steps": steps, "seconds": float(secs), "examples": int(examples), "peak_alloc_gib": peak_alloc,
            "smi_peak_mib": smi, "cmd": cmd, "versions": report.get("versions"), "device": report.get("device")}


def side_runs(a, side: str, data: Path, work: Path, env: dict, rep: int, runs: list) -> None:
    """One repeat of one side: the timed run (and the warm-up-only run when asked)."""
    plan = [a.warmup_steps + a.steps] + ([a.warmup_steps] if a.warmup_steps > 0 else [])
    for steps in plan:
        r = measure(a, side, data, work, env, steps, rep)
        runs.append(r)
        print(f"  {side:9s} rep {rep + 1}: {steps:4d} steps in {r['seconds']:8.3f} s "
              f"({r['examples'] / max(r['seconds'], 1e-9):7.2f} triplets/s)", file=sys.stderr, flush=True)


def side_figures(a, runs: list) -> dict:
    best = {}
    for r in runs:
        if r["steps"] not in best or r["seconds"] < best[r["steps"]]["seconds"]:
            best[r["steps"]] = r
    long = best[a.warmup_steps + a.steps]
    if a.warmup_steps > 0:
        short = best[a.warmup_steps]
        dt = long["seconds"] - short["seconds"]
        ex = long["examples"] - short["examples"]
    else:
        dt, ex = long["seconds"], long["examples"]
    peaks_alloc = [r["peak_alloc_gib"] for r in runs if r["peak_alloc_gib"] is not None]
    peaks_smi = [r["smi_peak_mib"] for r in runs if r["smi_peak_mib"] is not None]
    return {
        "triplets_per_s": ex / dt if dt > 0 else None,
        "whole_loop_triplets_per_s": long["examples"] / long["seconds"] if long["seconds"] > 0 else None,
        "timed_seconds": dt,
        "timed_triplets": ex,
        "peak_gpu_alloc_gib": max(peaks_alloc) if peaks_alloc else None,
        "peak_gpu_smi_mib": max(peaks_smi) if peaks_smi else None,
        "command": long["cmd"],
        "versions": long["versions"],
        "reported_device": long["device"],
        "runs": [{k: r[k] for k in ("steps", "seconds", "examples", "peak_alloc_gib", "smi_peak_mib")} for r in runs],
    }


def fmt(v, spec):
    if v is None:
        width = spec.lstrip("<>").split(".")[0]
        return "owed".rjust(int(width) if width.isdigit() else 0)
    return format(v, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "all-MiniLM-L6-v2"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per side")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="K > 0: also run K steps alone and time only the last N (t[K+N] - t[K]), both sides")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for both sides")
    p.add_argument("--repeats", type=int, default=2, help="runs per side; the best is kept")
    p.add_argument("--texts", default="long", choices=sorted(TEXT_LENGTHS),
                   help="text-length mix: long (8-60 words each) or short (5-25-word anchors, 2-8-word titles)")
    p.add_argument("--rows", type=int, default=None, help="synthetic rows (default: enough for one epoch)")
    p.add_argument("--embtune", default=str(ROOT / "target" / "release" / "embtune"))
    p.add_argument("--python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    p.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    a = p.parse_args(argv)
    a.model = str(Path(a.model).resolve())
    a.embtune = str(Path(a.embtune).resolve())
    for what, path in (("--model", a.model), ("--embtune", a.embtune), ("--python", a.python)):
        if not Path(path).exists():
            raise SystemExit(f"{what} {path}: not found")

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = a.rows or a.batch_size * (a.steps + a.warmup_steps) + a.batch_size
    data = work / "triplets.csv"
    data_stats = synth_triplets(data, rows, a.seed, a.texts)

    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    venv = ROOT / ".venv"
    if (venv / "lib").is_dir():  # libtorch of the embtune build (LIBTORCH_USE_PYTORCH); rpath usually covers it
        libs = list((venv / "lib").glob("python3*/site-packages/torch/lib"))
        if libs:
            env["LD_LIBRARY_PATH"] = ":".join([str(libs[0])] + [x for x in [env.get("LD_LIBRARY_PATH")] if x])

    print(f"train_bench: {rows} synthetic triplets ({data_stats['words_min']}-{data_stats['words_max']} words), "
          f"batch {a.batch_size}, steps {a.steps} (+{a.warmup_steps} warm-up), {a.device}/{a.precision}, "
          f"threads {a.threads}, repeats {a.repeats}", file=sys.stderr, flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    # The sides alternate repeat by repeat, so a change in the machine's load hits both
    # alike; the best run of each side is kept.
    runs = {"embtune": [], "reference": []}
    for rep in range(a.repeats):
        for side in ("embtune", "reference"):
            side_runs(a, side, data, work, env, rep, runs[side])
    res = {side: side_figures(a, runs[side]) for side in runs}

    e, r = res["embtune"], res["reference"]
    ratio = e["triplets_per_s"] / r["triplets_per_s"] if e["triplets_per_s"] and r["triplets_per_s"] else None
    report = {
        "bench": "train",
        "date_utc": started.isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {"model": a.model, "batch_size": a.batch_size, "steps": a.steps, "warmup_steps": a.warmup_steps,
                   "device": a.device, "precision": a.precision, "max_seq_length": a.max_seq_length, "loss": "mnrl",
                   "negatives": 1, "texts": a.texts, "lr": a.lr, "seed": a.seed, "threads": a.threads, "repeats": a.repeats,
                   "data": data_stats},
        "embtune": e,
        "reference": r,
        "ratio_embtune_over_reference": ratio,
    }
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"training throughput: {Path(a.model).name}, batch {a.batch_size}, MNRL + 1 hard negative, max len "
          f"{a.max_seq_length}, {a.steps} timed steps{f' after {a.warmup_steps} warm-up' if a.warmup_steps else ''}, "
          f"{a.device}/{a.precision}, {a.threads} threads, best of {a.repeats}")
    head = f"{'side':<11}{'triplets/s':>12}{'seconds':>10}"
    if a.device == "cuda":
        head += f"{'peak alloc GiB':>16}{'nvidia-smi MiB':>16}"
    print(head)
    for name, s in (("embtune", e), ("reference", r)):
        line = f"{name:<11}{fmt(s['triplets_per_s'], '12.2f')}{s['timed_seconds']:10.3f}"
        if a.device == "cuda":
            line += f"{fmt(s['peak_gpu_alloc_gib'], '>16.3f')}{fmt(s['peak_gpu_smi_mib'], '>16.0f')}"
        print(line)
    print(f"ratio embtune/reference: {fmt(ratio, '.3f')}")
    if a.warmup_steps:
        we, wr = e["whole_loop_triplets_per_s"], r["whole_loop_triplets_per_s"]
        print(f"whole loop incl. warm-up ({a.warmup_steps + a.steps} steps): embtune {fmt(we, '.2f')}, "
              f"reference {fmt(wr, '.2f')}, ratio {fmt(we / wr if we and wr else None, '.3f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
