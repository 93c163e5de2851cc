"""libFFM trainer speed: rows/s of the numba kernels, and the whole trainer against the real libffm.

    python bench/libffm.py                                   # 2M rows, 39 fields
    python bench/libffm.py --rows 10000000 --fields 69       # the issue's figure
    python bench/libffm.py --threads 1 2 --json
    python bench/libffm.py --max-field-size 100    # a cache-resident model: compute-bound speed

    python bench/libffm.py --against artifacts/TAG/04_export [--rounds 3] [--epochs 3]
    python bench/libffm.py --write-text DIR --rows 1000000 --fields 69 [--max-field-size 100]

Rows have one id per field, Zipf-distributed (frequency ~ 1/rank, as categorical CTR data) over
the per-field sizes of the winners' 69-field files (research notes §1.4: 1,010,469 ids in all), so
the model (n·m·k weights plus AdaGrad state, 2.2 GB at 69 fields) and its cache behaviour are
Criteo-sized. The kernels are compiled (and cached) on a small warm-up set first; timings cover
the training epochs only.

`--against DIR` runs, on DIR's libFFM text files (train.ffm, valid.ffm, test.ffm), the real
`ffm-train` (with `-p valid.ffm`, as many epochs, no auto-stop) then `ffm-predict` on valid and
test, and this project's numba engine as a fresh process doing the same work (text conversion,
kernel compilation or cache load, epochs with a validation pass after each, predictions of valid
and test, the model file), alternating the two in every round (the order flips each round), and
prints each side's parts, whole-process seconds and the ratio ours / libffm per round (below 1:
ours is faster). ffm-train is taken from the PATH, else built with `make` from
../shared/peers/libffm into a temporary folder (never into the repository). `--cold` gives our
side an empty numba cache in every round (the first run after an install or an edit).
`--write-text DIR` writes such files (labels from a planted per-id logit, so logloss means
something) of generated rows: Criteo-sized ids, or a cache-resident model with --max-field-size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

LIBFFM_SOURCE = REPO_ROOT.parent / "shared" / "peers" / "libffm"
SPLITS = ("train", "valid", "test")

# Per-field sizes of the winners' 69 fields (I1..I13, C1..C26, 30 trees).
CRITEO_FIELD_SIZES = [63, 113, 126, 51, 224, 149, 100, 80, 104, 9, 32, 58, 82,
                      1457, 555, 176373, 129683, 305, 19, 11887, 632, 3, 41738, 5170, 175446,
                      3170, 27, 11356, 165602, 10, 4641, 2030, 4, 172761, 18, 15, 57903, 86,
                      44549] + [128] * 30


def field_ids(rows: int, num_fields: int, max_field_size: int | None = None, seed: int = 0):
    """(int32 global ids [rows, F], local id r drawn with probability ~ 1/(r + 1); total ids)."""
    rng = np.random.default_rng(seed)
    sizes = [min(CRITEO_FIELD_SIZES[field % len(CRITEO_FIELD_SIZES)], max_field_size or 1 << 30)
             for field in range(num_fields)]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ids = np.empty((rows, num_fields), np.int32)
    for field, (size, offset) in enumerate(zip(sizes, offsets)):
        ranks = np.exp(np.log(size + 1) * rng.random(rows)).astype(np.int32) - 1
        ids[:, field] = offset + np.minimum(ranks, size - 1)
    return ids, int(sum(sizes))


def generate(rows: int, num_fields: int, max_field_size: int | None = None, seed: int = 0):
    """(FieldRows of `field_ids` with random labels, total ids)."""
    from models.libffm.rows import FieldRows

    ids, vocabulary = field_ids(rows, num_fields, max_field_size, seed)
    labels = (np.random.default_rng(seed + 1).random(rows) < 0.25).astype(np.uint8)
    return FieldRows(ids, labels), vocabulary


def run(rows: int, num_fields: int, threads: int, epochs: int, block_rows: int,
        max_field_size: int | None = None) -> dict:
    import numba

    from models.libffm.config import ModelConfig, TrainConfig
    from models.libffm.trainer import initial_state, train_epoch

    data, vocabulary = generate(rows, num_fields, max_field_size)
    model = ModelConfig()
    train = TrainConfig(threads=threads, shuffle_block_rows=block_rows)
    state = initial_state(vocabulary, num_fields, model, seed=0)
    numba.set_num_threads(threads)
    train_epoch(state, data.take(0, 1000), model, train, epoch=0)  # compile / load cache
    seconds, cpu_seconds = [], []
    for epoch in range(1, epochs + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        train_epoch(state, data, model, train, epoch)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    started = time.perf_counter()
    data.predict(state, model)
    predict_seconds = time.perf_counter() - started
    epoch_seconds = float(np.median(seconds))
    return {"rows": rows, "fields": num_fields, "threads": threads,
            "model_gb": state.nbytes / 1e9, "seconds_per_epoch": epoch_seconds,
            "rows_per_second": rows / epoch_seconds,
            "rows_per_second_per_thread": rows / epoch_seconds / threads,
            # CPU time counts only the cycles this process got: on a shared machine it shows
            # the per-thread speed an uncontended run would reach.
            "rows_per_cpu_second": rows / float(np.median(cpu_seconds)),
            "predict_rows_per_second": rows / predict_seconds,
            "criteo_epoch_seconds_estimate": 45_840_617 / (rows / epoch_seconds)}


# libFFM text files

def write_text(directory: Path, rows: int, num_fields: int, max_field_size: int | None,
               seed: int = 0) -> None:
    """train/valid/test.ffm of generated rows (6:1:1), `label field:id:1` per field; labels drawn
    from sigmoid(-1.2 + sum of per-id effects N(0, 0.6^2) / sqrt(F) * 3)."""
    directory.mkdir(parents=True, exist_ok=True)
    valid = test = rows // 6
    ids, vocabulary = field_ids(rows + valid + test, num_fields, max_field_size, seed)
    effects = np.random.default_rng(seed + 1).normal(0.0, 0.6, vocabulary)
    logit = -1.2 + effects[ids].sum(axis=1) * 3 / np.sqrt(num_fields)
    labels = np.random.default_rng(seed + 2).random(len(ids)) < 1 / (1 + np.exp(-logit))
    fields = np.arange(num_fields)
    for name, start, stop in (("train", 0, rows), ("valid", rows, rows + valid),
                              ("test", rows + valid, rows + valid + test)):
        with open(directory / f"{name}.ffm", "w") as handle:
            for chunk in range(start, stop, 100_000):
                end = min(chunk + 100_000, stop)
                handle.writelines(
                    f"{int(label)} " + " ".join(f"{f}:{j}:1" for f, j in zip(fields, row)) + "\n"
                    for row, label in zip(ids[chunk:end].tolist(), labels[chunk:end]))
    print(f"{directory}: {rows:,} train, {valid:,} valid, {test:,} test rows of {num_fields} "
          f"fields, {vocabulary:,} ids, label rate {labels.mean():.3f}")


def logloss(labels: np.ndarray, predictions: np.ndarray) -> float:
    p = np.clip(np.asarray(predictions, np.float64), 1e-15, 1 - 1e-15)
    return float(-np.mean(np.where(labels > 0, np.log(p), np.log1p(-p))))


def text_labels(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        return np.array([line.split(maxsplit=1)[0] not in (b"0", b"-1") for line in handle])


# The real libffm

def libffm_programs(build: Path) -> Path:
    """The folder holding ffm-train and ffm-predict: from the PATH, else built into `build`."""
    found = shutil.which("ffm-train")
    if found and shutil.which("ffm-predict"):
        return Path(found).parent
    if not (LIBFFM_SOURCE / "Makefile").is_file():
        raise SystemExit(f"no ffm-train on the PATH and no libffm source at {LIBFFM_SOURCE}")
    for path in LIBFFM_SOURCE.iterdir():
        if path.is_file():
            shutil.copy(path, build)
    subprocess.run(["make", "-j2"], cwd=build, check=True, capture_output=True)
    return build


def run_libffm(programs: Path, directory: Path, args, work: Path) -> dict:
    """ffm-train (in an empty folder: it converts both text files afresh), then ffm-predict on
    valid and test; the parts from its log."""
    started = time.perf_counter()
    log = subprocess.run(
        [str(programs / "ffm-train"), "-k", str(args.k), "-t", str(args.epochs), "-r",
         str(args.eta), "-l", str(args.l2), "-s", str(args.threads_against), "-p",
         str(directory / "valid.ffm"), str(directory / "train.ffm"), str(work / "model.txt")],
        cwd=work, check=True, capture_output=True, text=True).stdout
    train_seconds = time.perf_counter() - started
    predict = {}
    for split in ("valid", "test"):
        begun = time.perf_counter()
        subprocess.run([str(programs / "ffm-predict"), str(directory / f"{split}.ffm"),
                        str(work / "model.txt"), str(work / f"{split}.out")], check=True,
                       capture_output=True)
        predict[split] = time.perf_counter() - begun
    convert = [float(value) for value in re.findall(r"binary file \(([0-9.]+) seconds\)", log)]
    epochs = re.findall(r"^\s*\d+\s+[0-9.]+\s+([0-9.]+)\s+([0-9.]+)$", log, re.MULTILINE)
    cumulative = [0.0] + [float(seconds) for _, seconds in epochs]
    epoch_seconds = list(np.diff(cumulative))
    parts = {"convert train+valid": sum(convert), "train epochs": cumulative[-1],
             "predict valid+test (ffm-predict)": sum(predict.values())}
    parts["rest of ffm-train (start, validation passes, model file)"] = \
        train_seconds - sum(convert) - cumulative[-1]
    valid = np.loadtxt(work / "valid.out", dtype=np.float64, ndmin=1)
    return {"whole": train_seconds + sum(predict.values()), "parts": parts,
            "epoch_seconds": epoch_seconds,
            "valid_logloss_per_epoch": [float(loss) for loss, _ in epochs], "valid": valid}


def run_ours(directory: Path, args, work: Path) -> dict:
    """This script's --child in a fresh Python process; `whole` is the process's wall time."""
    env = dict(os.environ)
    if args.cold:
        env["NUMBA_CACHE_DIR"] = str(work / "numba_cache")  # an empty cache: compile everything
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(directory),
               "--work", str(work), "--epochs", str(args.epochs), "--threads",
               str(args.threads_against), "-k", str(args.k), "--eta", str(args.eta), "--l2",
               str(args.l2), "--seed", str(args.seed)]
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    whole = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr}")
    output = process.stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["parts"]["rest (Python start, files)"] = whole - sum(result["parts"].values())
    result["whole"] = whole
    result["valid"] = np.load(work / "valid.npy").astype(np.float64)
    return result


def child(directory: Path, args) -> None:
    """What `python -m models.libffm --set data.format=text` does on `directory`, part by part
    (run_numba: rows.open_inputs, initial_state, fit, predictions), the kernels compiled or
    loaded from numba's cache first so that it is a part of its own."""
    started = time.perf_counter()
    import numba

    from models.libffm.config import LibffmConfig, ModelConfig, TrainConfig
    from models.libffm.rows import convert_text
    from models.libffm.trainer import fit, initial_state, warm_up
    parts = {"import": time.perf_counter() - started}
    work = Path(args.work)

    def timed(name, function, *arguments):
        begun = time.perf_counter()
        value = function(*arguments)
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - begun
        return value

    config = LibffmConfig(
        model=ModelConfig(k=args.k),
        train=TrainConfig(learning_rate=args.eta, l2=args.l2, epochs=args.epochs,
                          auto_stop=False, threads=args.threads, seed=args.seed))
    numba.set_num_threads(args.threads)
    rows = {split: timed("convert train+valid+test", convert_text, directory / f"{split}.ffm",
                         work / "cache") for split in SPLITS}
    timed("compile (or load cached) kernels", warm_up, rows["train"], config.model, config.train)
    rows["test"].labels = None
    n, m = int(rows["train"].ids.max()) + 1, rows["train"].num_fields
    state = timed("initial state", initial_state, n, m, config.model, config.train.seed)
    kept = {}
    result = timed("train epochs", fit, state, rows["train"], rows["valid"], config.model,
                   config.train, work / "model.npy", kept)
    fit_seconds = parts.pop("train epochs")
    parts["train epochs"] = result.train_seconds
    parts["validation passes, model file"] = fit_seconds - result.train_seconds
    predictions = {"valid": kept["valid"],  # the last validation pass's, as run_numba
                   "test": timed("predict test", rows["test"].predict, state, config.model)}
    np.save(work / "valid.npy", predictions["valid"])
    epoch_seconds = list(np.diff([0.0] + [entry["train_seconds"] for entry in result.history]))
    print(json.dumps({"parts": parts, "epoch_seconds": epoch_seconds,
                      "valid_logloss_per_epoch": [entry["valid_logloss"]
                                                  for entry in result.history]}))


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every waited-for child process so far: unlike wall time,
    not inflated by CPU time the VM's host takes away (steal) on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def against(directory: Path, args) -> dict:
    directory = directory.resolve()  # ffm-train runs in a work folder
    labels = text_labels(directory / "valid.ffm")
    rounds = []
    with tempfile.TemporaryDirectory() as build:
        programs = libffm_programs(Path(build))
        for number in range(args.rounds):
            sides = ("ours", "libffm") if number % 2 == 0 else ("libffm", "ours")
            args.seed = 2014 + number  # ours: another order and initial state each round
            figures = {}
            for side in sides:
                with tempfile.TemporaryDirectory(dir=args.tmp) as work:
                    runner = run_ours if side == "ours" else \
                        (lambda *a: run_libffm(programs, *a))
                    cpu_before = children_cpu_seconds()
                    figures[side] = runner(directory, args, Path(work))
                    figures[side]["cpu"] = children_cpu_seconds() - cpu_before
                figures[side]["valid_logloss"] = logloss(labels, figures[side].pop("valid"))
            figures["ratio_whole"] = figures["ours"]["whole"] / figures["libffm"]["whole"]
            figures["ratio_cpu"] = figures["ours"]["cpu"] / figures["libffm"]["cpu"]
            figures["ratio_epoch"] = (float(np.median(figures["ours"]["epoch_seconds"]))
                                      / float(np.median(figures["libffm"]["epoch_seconds"])))
            rounds.append(figures)
            print_round(number + 1, sides, figures)
    summary = {side: float(np.median([r[side] for r in rounds]))
               for side in ("ratio_whole", "ratio_cpu", "ratio_epoch")}
    print(f"median over {args.rounds} rounds, ours / libffm: whole process "
          f"{summary['ratio_whole']:.2f} (CPU {summary['ratio_cpu']:.2f}), per epoch "
          f"{summary['ratio_epoch']:.2f}", flush=True)
    return {"rounds": rounds, **summary}


def print_round(number: int, sides, figures: dict) -> None:
    print(f"round {number} ({' then '.join(sides)}):")
    for side in ("libffm", "ours"):
        result = figures[side]
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in result["parts"].items())
        epochs = " ".join(f"{seconds:.2f}" for seconds in result["epoch_seconds"])
        print(f"  {side:6} whole {result['whole']:.2f} s ({result['cpu']:.2f} CPU s); epochs "
              f"{epochs} s; valid logloss "
              f"{result['valid_logloss']:.5f}\n         {parts}")
    print(f"  ours / libffm: whole {figures['ratio_whole']:.3f} (CPU {figures['ratio_cpu']:.3f}), "
          f"median epoch "
          f"{figures['ratio_epoch']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--fields", type=int, default=39)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs (median reported; default 1); --against: 3")
    parser.add_argument("--block-rows", type=int, default=1 << 20, help="shuffle_block_rows")
    parser.add_argument("--max-field-size", type=int, help="cap every field's ids (a model that "
                        "fits in cache: the compute-bound speed)")
    parser.add_argument("--json", action="store_true", help="one JSON object per thread count")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="libFFM text folder: ours against the real libffm")
    parser.add_argument("--rounds", type=int, default=3, help="--against: alternating rounds")
    parser.add_argument("--cold", action="store_true", help="--against: empty numba cache")
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("--eta", type=float, default=0.2)
    parser.add_argument("--l2", type=float, default=2e-5)
    parser.add_argument("--tmp", type=Path, help="--against: folder for the work files")
    parser.add_argument("--write-text", type=Path, metavar="DIR",
                        help="write generated train/valid/test.ffm into DIR")
    parser.add_argument("--seed", type=int, default=2014, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads_against = args.threads[0]
    if args.child:
        args.threads = args.threads_against
        return child(args.child, args)
    if args.write_text:
        return write_text(args.write_text, args.rows, args.fields, args.max_field_size)
    if args.against:
        args.epochs = args.epochs or 3
        result = against(args.against, args)
        if args.json:
            print(json.dumps(result))
        return
    for threads in args.threads:
        result = run(args.rows, args.fields, threads, args.epochs or 1, args.block_rows,
                     args.max_field_size)
        if args.json:
            print(json.dumps(result))
            continue
        print(f"{result['rows']:,} rows x {result['fields']} fields, {threads} thread(s), "
              f"model {result['model_gb']:.2f} GB: {result['seconds_per_epoch']:.1f} s/epoch, "
              f"{result['rows_per_second']:,.0f} rows/s "
              f"({result['rows_per_second_per_thread']:,.0f} per thread, "
              f"{result['rows_per_cpu_second']:,.0f} per CPU second); predict "
              f"{result['predict_rows_per_second']:,.0f} rows/s; a 45.8M-row Criteo epoch "
              f"~{result['criteo_epoch_seconds_estimate']:,.0f} s")


if __name__ == "__main__":
    main()
