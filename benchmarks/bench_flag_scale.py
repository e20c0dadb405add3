"""What do recording and flagging N samples over E epochs cost, in time and memory, beside cleanlab?

Flagging at scale: record N samples for E epochs into a signals folder, flag them, beside cleanlab.

A synthetic run stands in for training: every sample has a true class, a given label (another class for
a `--noise` share of them) and a difficulty. Epoch by epoch its logits move the way a network's do on
noisy labels: the true class rises early (late for hard samples), and from about half of the run on
the given label of a noisy sample rises too (memorisation). `Recorder.update` records these logits batch
by batch, as in any loop; the recorder streams each epoch to the folder.

Per size it reports, each stage in its own process so that the peak resident memory (`ru_maxrss`) is
that stage's own:

- record: the recorder's seconds per epoch (its `update` and `end_epoch` calls, not the generator's),
  the process's peak resident memory and its resident memory before the recorder was made;
- flag: `curriculoss flag` on the folder (scores, window, count, ranking, suspects.csv, plots): wall
  seconds, peak resident memory, AUROC against the synthetic truth;
- cleanlab: `cleanlab.filter.find_label_issues(labels, pred_probs)` on probabilities of the same N and
  classes (the synthetic run's own at the end of its learning phase), seconds and peak memory, for the
  sizes up to `--cleanlab-max`;
- with `--compare`, the flag result computed from the tables loaded into memory against the one read
  in blocks (scores, ranking, count, AUROC), and with `--float16` the AUROC of float16 storage.

With `--mnist-dir`, a real run instead: `curriculoss train` on the 60,000 MNIST training images (MLP,
40 % symmetric noise) in one process and under `torchrun` with two, each rank's resident memory after
every epoch, and the two runs' signals compared value by value, beside a control: the one-process run
again with its matrix products summed by two threads instead of one.

    python benchmarks/bench_flag_scale.py --sizes 100000 1000000 10000000 --classes 100 100 10 --json FILE
    python benchmarks/bench_flag_scale.py --mnist-dir MNIST_DIR --epochs 20 --json FILE

Peak memory is `ru_maxrss` of a stage's process, started from this small one (a child's peak begins at
its parent's size). Needs cleanlab for its column (`pip install "curriculoss[bench]"`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _results import Started, parser

BATCH = 250_000


def rss_mb() -> float:
    """This process's resident memory now, in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    """This process's peak resident memory, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def truth(n: int, classes: int, noise: float, seed: int):
    """True classes, given labels (wrong for a `noise` share, uniformly another class), noise mask, difficulty,
    and an ambiguity: how much each sample's image resembles its given label beyond the learnt class."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, classes, n)
    mask = rng.random(n) < noise
    y = np.where(mask, (y_true + rng.integers(1, classes, n)) % classes, y_true)
    hard = (rng.random(n) ** 3).astype(np.float32)  # most samples easy, a tail of hard ones
    return y_true, y, mask, hard, rng.normal(0, 1, n).astype(np.float32)


def batch_logits(torch, y_true, y, mask, hard, ambiguity, idx, epoch: int, epochs: int, classes: int):
    """The synthetic logits of samples `idx` at `epoch`: noise, the true class learnt when the run's progress
    passes (0.3 times) the sample's difficulty, a noisy label memorised from half the run on (later when hard)."""
    g = torch.Generator().manual_seed(epoch * 1_000_003 + int(idx[0]))
    z = torch.randn(len(idx), classes, generator=g)
    progress = (epoch + 1) / epochs
    h = torch.from_numpy(hard[idx])
    top = 1.5 * (1 + np.sqrt(2 * np.log(classes)))  # a learnt class stands above the largest of the others
    learnt = top * torch.sigmoid(20 * (progress - 0.3 * h))
    memorised = 1.4 * top * torch.sigmoid(10 * (progress - 0.5 - 0.3 * h)) * torch.from_numpy(mask[idx]).float()
    rows = torch.arange(len(idx))
    z[rows, torch.from_numpy(y_true[idx])] += learnt
    z[rows, torch.from_numpy(y[idx])] += memorised + 0.5 * top * torch.from_numpy(ambiguity[idx])
    return z


def stage_record(args) -> dict:
    import torch

    from curriculoss.recorder import Recorder

    torch.set_num_threads(args.threads)
    y_true, y, mask, hard, ambiguity = truth(args.n, args.classes, args.noise, args.seed)
    before = rss_mb()
    recorder = Recorder(args.n, path=args.folder, dtype=args.dtype)
    labels = torch.from_numpy(y)
    seconds = []
    for epoch in range(args.epochs):
        spent = 0.0
        for start in range(0, args.n, BATCH):
            idx = np.arange(start, min(start + BATCH, args.n))
            z = batch_logits(torch, y_true, y, mask, hard, ambiguity, idx, epoch, args.epochs, args.classes)
            t0 = time.perf_counter()
            recorder.update(torch.from_numpy(idx), z, labels[idx])
            spent += time.perf_counter() - t0
        t0 = time.perf_counter()
        recorder.end_epoch()
        seconds.append(spent + time.perf_counter() - t0)
    recorder.save(noise_mask=mask, true_labels=y_true)
    return {"record_seconds_per_epoch": float(np.median(seconds)), "record_peak_mb": peak_mb(),
            "record_rss_before_mb": before}


def stage_flag(args) -> dict:
    from curriculoss.harness.cli import main

    t0 = time.perf_counter()
    assert main(["flag", args.folder, "--top", "3"]) == 0
    seconds = time.perf_counter() - t0
    figures = json.loads((Path(args.folder).parent / "flag.json").read_text())
    return {"flag_seconds": seconds, "flag_peak_mb": peak_mb(), "auroc": figures["auroc"],
            "estimated_num_issues": figures["estimated_num_issues"], "num_noisy": figures["num_noisy"]}


def stage_cleanlab(args) -> dict:
    """cleanlab's `find_label_issues` on the synthetic run's probabilities after its learning phase."""
    import torch
    from cleanlab.filter import find_label_issues
    from sklearn.metrics import roc_auc_score

    y_true, y, mask, hard, ambiguity = truth(args.n, args.classes, args.noise, args.seed)
    probs = np.empty((args.n, args.classes), np.float32)
    for start in range(0, args.n, BATCH):
        idx = np.arange(start, min(start + BATCH, args.n))
        z = batch_logits(torch, y_true, y, mask, hard, ambiguity, idx, int(0.5 * args.epochs), args.epochs, args.classes)
        probs[idx] = z.softmax(1).numpy()
    before = rss_mb()
    t0 = time.perf_counter()
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    seconds = time.perf_counter() - t0
    flagged = np.zeros(args.n, bool)
    flagged[ranked] = True
    return {"cleanlab_seconds": seconds, "cleanlab_peak_mb": peak_mb(), "cleanlab_rss_before_mb": before,
            "cleanlab_auroc_of_self_confidence": float(roc_auc_score(mask, -probs[np.arange(args.n), y])),
            "cleanlab_num_issues": int(flagged.sum())}


def stage_compare(args) -> dict:
    """The flag result from the tables in memory against the one read in blocks from the folder."""
    from curriculoss import flag
    from curriculoss.signals import open_signals

    folder = open_signals(args.folder)
    memory = {key: np.asarray(value) for key, value in folder.items()}
    out = {}
    for name, signals in (("blocks", folder), ("memory", memory)):
        score, s = flag.run_scores(signals)
        out[name] = {"scores": s, "order": np.argsort(s, kind="stable"),
                     "count": flag.estimate_num_issues(s, score=score),
                     "auroc": flag.evaluate(s, memory["noise_mask"], score=score)["auroc"]}
    a, b = out["blocks"], out["memory"]
    return {"scores_equal": bool(np.array_equal(a["scores"], b["scores"], equal_nan=True)),
            "ranking_equal": bool(np.array_equal(a["order"], b["order"])), "count_equal": a["count"] == b["count"],
            "auroc_blocks": a["auroc"], "auroc_memory": b["auroc"]}


def stage_train(args) -> dict:
    """`curriculoss train` on MNIST (also as one rank of `torchrun`), its resident memory after every epoch."""
    from curriculoss.harness.cli import main
    from curriculoss.recorder import Recorder

    after_epoch, end_epoch = [], Recorder.end_epoch

    def end_and_measure(self):
        end_epoch(self)
        after_epoch.append(rss_mb())

    Recorder.end_epoch = end_and_measure
    main(["train", "--dataset", "idx", "--data-dir", args.mnist_dir, "--model", "mlp", "--noise-rate", "0.4", "--epochs",
          str(args.epochs), "--out", args.folder, "--quiet"])
    rank = int(os.environ.get("RANK", "0"))
    report = {"rank": rank, "rss_after_epoch_mb": after_epoch, "peak_mb": peak_mb()}
    Path(args.folder, f"memory-rank{rank}.json").write_text(json.dumps(report))
    return report


def compare_runs(one, two) -> dict:
    """Two runs' signals: which arrays are equal; for the tables, how far apart at the first epoch (before
    the two trainings' rounding has compounded) and over the run; the predictions' agreement; each run's
    flag AUROC."""
    from curriculoss import flag

    out = {"samples": len(one["labels"]), "table_mb_per_epoch": 3 * 4 * len(one["labels"]) / 2**20,
           "equal": [key for key in one if np.array_equal(np.asarray(one[key]), np.asarray(two[key]), equal_nan=True)]}
    for key in ("loss", "margin"):
        diff = np.abs(np.asarray(one[key], np.float64) - np.asarray(two[key], np.float64))
        out[key] = {"first_epoch_largest": float(np.nanmax(diff[0])), "median": float(np.nanmedian(diff)),
                    "largest": float(np.nanmax(diff))}
    out["predicted_agreement"] = float(np.mean(np.asarray(one["predicted"]) == np.asarray(two["predicted"])))
    out["auroc"] = [flag.evaluate(flag.run_scores(s)[1], s["noise_mask"])["auroc"] for s in (one, two)]
    return out


def real_run(args, root: Path) -> dict:
    """One process against two under torchrun: the signals, and each rank's memory over the epochs."""
    from curriculoss.signals import open_signals

    common = [__file__, "--stage", "train", "--mnist-dir", args.mnist_dir, "--epochs", str(args.epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"one": root / "one", "two": root / "two", "control": root / "one-2-threads"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *common, "--folder", str(runs["one"])], check=True, env=env, capture_output=True)
    seconds_one = time.perf_counter() - t0
    # The control: one process again, its matrix products summed by 2 threads instead of 1.
    subprocess.run([sys.executable, *common, "--folder", str(runs["control"])], check=True, capture_output=True,
                   env={**env, "OMP_NUM_THREADS": "2"})
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *common, "--folder",
                    str(runs["two"])], check=True, env=env, capture_output=True)
    seconds_two = time.perf_counter() - t0
    one = open_signals(runs["one"])
    out = {"epochs": args.epochs, **compare_runs(one, open_signals(runs["two"])),
           "control": compare_runs(one, open_signals(runs["control"])),
           "seconds_one_process": seconds_one, "seconds_two_processes": seconds_two}
    ranks = [json.loads((runs["two"] / f"memory-rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        rss = r["rss_after_epoch_mb"]
        out[f"rank{r['rank']}"] = {"rss_epoch2_mb": rss[1], "rss_last_mb": rss[-1], "growth_mb": rss[-1] - rss[1],
                                   "peak_mb": r["peak_mb"]}
    print(json.dumps(out), flush=True)
    return out


STAGES = {"record": stage_record, "flag": stage_flag, "cleanlab": stage_cleanlab, "compare": stage_compare,
          "train": stage_train}


def run_stage(stage: str, args, n: int, folder: Path, dtype: str = "float32", classes: int = 100) -> dict:
    """One stage in a fresh process (its own peak memory); returns what it printed as JSON."""
    argv = [sys.executable, __file__, "--stage", stage, "--n", str(n), "--folder", str(folder), "--dtype", dtype,
            "--epochs", str(args.epochs), "--classes", str(classes), "--noise", str(args.noise),
            "--seed", str(args.seed), "--threads", str(args.threads)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"stage {stage} at N={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args, n: int, classes: int, root: Path) -> dict:
    folder = root / f"n{n}" / "signals"
    row = {"n": n, "epochs": args.epochs, "classes": classes, **run_stage("record", args, n, folder, classes=classes)}
    row["signals_bytes"] = sum(p.stat().st_size for p in folder.iterdir())
    row.update(run_stage("flag", args, n, folder, classes=classes))
    if args.compare and n <= args.compare_max:
        row["compare"] = run_stage("compare", args, n, folder, classes=classes)
    if args.float16 and n <= args.compare_max:
        half = root / f"n{n}-float16" / "signals"
        run_stage("record", args, n, half, "float16", classes)
        row["float16_auroc"] = run_stage("flag", args, n, half, classes=classes)["auroc"]
    if n <= args.cleanlab_max:
        row.update(run_stage("cleanlab", args, n, folder, classes=classes))
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = parser(__doc__, json_help="write the figures here", seed=0, threads=(2, "torch threads of each stage"))
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--classes", type=int, nargs="+", default=[100],
                   help="classes of the synthetic run: one number, or one per size")
    p.add_argument("--noise", type=float, default=0.2)
    p.add_argument("--cleanlab-max", type=int, default=1_000_000, help="largest N given to cleanlab")
    p.add_argument("--compare", action="store_true", help="flag in memory against flag in blocks")
    p.add_argument("--float16", action="store_true", help="also record in float16 and flag that")
    p.add_argument("--compare-max", type=int, default=1_000_000)
    p.add_argument("--mnist-dir", help="MNIST IDX files: measure a real run (one process and torchrun with two)")
    p.add_argument("--keep", help="folder for the signals (default: a temporary one)")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        args.classes = args.classes[0]
        print(json.dumps(STAGES[args.stage](args)))
        return
    started = Started()  # the stages set their own threads, in their own processes
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        if args.mnist_dir:
            data = {"real_run": real_run(args, root)}
        else:
            classes = args.classes * len(args.sizes) if len(args.classes) == 1 else args.classes
            if len(classes) != len(args.sizes):
                raise SystemExit("--classes: give one number, or one per size")
            data = {"rows": [measure(args, n, c, root) for n, c in zip(args.sizes, classes)], "noise": args.noise,
                    "batch": BATCH}
    started.write(args.json, "flag-scale", data, roles={"--mnist-dir": "MNIST_DIR"})

if __name__ == "__main__":
    main()
