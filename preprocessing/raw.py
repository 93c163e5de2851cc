"""Stage 00: find, unpack and check the raw input, or generate the synthetic dataset.

Reads: `raw.data_dir` (else `data/raw/`) holding train.txt and test.txt as Criteo ships them, their
.gz, dac.tar.gz, or Kaggle's train.csv/test.csv; or the Criteo 1TB logs' day files day_0, day_1,
... (plain, .gz, .txt or .txt.gz; contiguous from day_0, at least two); with none of these,
nothing (synthetic data).
Writes: `artifacts/<tag>/00_raw/` with train.txt and test.txt in raw TSV form (links to plain
input files, unpacked or converted copies otherwise), or links to the day files under their own
names (never copies: the logs are 1 TB); `raw.json` (source, rows, md5 check; for the day files
the days in order and no row counts, which would cost a whole pass) and, for synthetic data, the
generator's truth files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from preprocessing import parse, schema
from pipeline import config as config_lib
from pipeline import settings
from pipeline.errors import InputError, InputNotFound, writing
from pipeline.manifest import Stage, file_md5
from pipeline.paths import REPO_ROOT

DEFAULT_DATA_DIR = REPO_ROOT / "data" / "raw"
NAMES = {"train": ("train.txt", "train.txt.gz", "train.csv", "train.csv.gz"),
         "test": ("test.txt", "test.txt.gz", "test.csv", "test.csv.gz")}
ARCHIVE = "dac.tar.gz"
DAY_FILE = re.compile(r"day_(0|[1-9][0-9]*)(\.txt)?(\.gz)?")
CRITEO_1TB = schema.CRITEO_1TB
COPY_BYTES = 1 << 24
DECOMPRESS_BYTES = 1 << 20  # the parser's gzip message says after how many bytes: to 1 MB
CSV_BLOCK_BYTES = 1 << 24


def find_inputs(directory: Path) -> dict[str, Path] | None:
    """{"train": path, "test": path} found in `directory`, or None if it holds no Criteo input."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = {}
    for split, names in NAMES.items():
        for name in names:
            if (directory / name).exists():
                found[split] = directory / name
                break
        else:
            if (directory / ARCHIVE).exists():
                found[split] = directory / ARCHIVE
    if not found:
        return None
    missing = sorted(set(NAMES) - set(found))
    if missing:
        raise InputNotFound(f"{directory}: found {found[next(iter(found))].name} but no "
                            f"{missing[0]} file (expected one of {', '.join(NAMES[missing[0]])}"
                            f" or {ARCHIVE})")
    return found


def find_days(directory: Path) -> dict[str, Path] | None:
    """{"day_0": path, "day_1": path, ...} in day order, or None if `directory` holds no day file.

    ValueError for two files of one day, a gap in the day numbers or a single day.
    """
    days = {}
    for path in sorted(Path(directory).iterdir()):
        match = DAY_FILE.fullmatch(path.name)
        if match is None:
            continue
        day = int(match.group(1))
        if day in days:
            raise InputError(f"{directory}: {days[day].name} and {path.name} are the same day; "
                             f"keep one file per day")
        days[day] = path
    if not days:
        return None
    missing = sorted(set(range(max(days) + 1)) - set(days))
    if missing:
        found = ", ".join(days[day].name for day in sorted(days))
        raise InputError(f"{directory}: day files must be contiguous from day_0, but day_"
                         f"{missing[0]} is missing (found {found})")
    if len(days) < 2:
        raise InputError(f"{directory}: only {days[0].name}; the Criteo 1TB input needs at least "
                         f"two days (training days, then the last day for validation)")
    return {f"day_{day}": days[day] for day in range(len(days))}


@dataclasses.dataclass(frozen=True)
class RawInput:
    """What stage 00 found: the Kaggle files ("real") or the 1TB logs' days (CRITEO_1TB)."""
    source: str
    files: dict[str, Path]  # {"train": path, "test": path}, or {"day_0": path, ...}


def find_raw_input(directory: Path) -> RawInput | None:
    """The Kaggle files or the day files in `directory`; ValueError if it holds both."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    days = find_days(directory)
    if days is None:
        inputs = find_inputs(directory)
        return RawInput("real", inputs) if inputs else None
    kaggle = [name for name in (*NAMES["train"], *NAMES["test"], ARCHIVE)
              if (directory / name).exists()]
    if kaggle:
        raise InputError(f"{directory}: holds both Kaggle files ({', '.join(kaggle)}) and Criteo "
                         f"1TB day files ({', '.join(path.name for path in days.values())}); "
                         f"keep one dataset per folder")
    return RawInput(CRITEO_1TB, days)


def source_identity(inputs: dict[str, Path]) -> dict:
    """What makes stage 00 stale: the input files' paths, sizes and modification times."""
    return {split: {"path": str(path.resolve()), "bytes": path.stat().st_size,
                    "mtime_ns": path.stat().st_mtime_ns} for split, path in inputs.items()}


def unpack(split: str, source: Path, out: Path) -> None:
    """Puts `split`.txt (raw TSV) at `out`, linking plain text and converting everything else.

    A damaged input is an InputError (or the parser's BadRowError) naming `source`; a full disk
    a PipelineError naming `out` as it will be published."""
    name = source.name
    if name.endswith(".txt"):
        os.symlink(source.resolve(), out)
    elif name == ARCHIVE:
        _extract_from_tar(source, f"{split}.txt", out)
    elif name.endswith(".txt.gz"):
        _decompress(source, out)
    else:
        convert_kaggle_csv(source, split, out)


def _decompress(source: Path, out: Path) -> None:
    """Decompresses `source` into `out`; reads through the parser's reader, so a truncated .gz
    gets the parser's message (file, bytes read, `gzip -t`)."""
    buffer = memoryview(bytearray(DECOMPRESS_BYTES))
    position = 0
    with parse.open_raw(source) as reader, writing(out), open(out, "wb") as writer:
        while read := parse.read_into(reader, buffer, source, position):
            writer.write(buffer[:read])
            position += read


def shown_name(source: Path, split: str) -> str:
    """How messages about the raw TSV of `split` name it: the user's file (and for the archive
    the member), never the stage's temporary copy."""
    return f"{source} ({split}.txt)" if source.name == ARCHIVE else str(source)


def _extract_from_tar(archive: Path, member_name: str, out: Path) -> None:
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                if Path(member.name).name == member_name and member.isfile():
                    with tar.extractfile(member) as reader, writing(out), \
                            open(out, "wb") as writer:
                        shutil.copyfileobj(reader, writer, COPY_BYTES)
                    return
    except (tarfile.TarError, *parse.GZIP_ERRORS) as error:
        raise InputError(f"{archive}: corrupt or truncated archive, reading {member_name} "
                         f"({error}); check it with `gzip -t {archive}` and download it "
                         f"again") from error
    raise InputNotFound(f"{archive}: no member named {member_name}; is it Criteo's "
                        f"dac.tar.gz?")


def convert_kaggle_csv(source: Path, split: str, out: Path) -> None:
    """Kaggle CSV (Id,[Label,]I1..C26, header) -> raw TSV, checking header, column counts and
    contiguous Ids; errors name `source` and its line."""
    expected = schema.CSV_TRAIN_HEADER if split == "train" else schema.CSV_TEST_HEADER
    first_id = schema.TRAIN_ID_START if split == "train" else schema.TEST_ID_START
    try:
        with parse.open_raw(source, "rt") as handle:
            header = tuple(handle.readline().strip().split(","))
    except (*parse.GZIP_ERRORS, UnicodeDecodeError) as error:
        raise InputError(f"{source}: not readable as CSV text ({error}); check it (`gzip -t` "
                         f"for a .gz)") from error
    if header != expected:
        raise InputError(f"{source}:1: header {','.join(header)[:120]!r} does not match the "
                         f"Kaggle {split} header {','.join(expected)[:120]!r}...")
    read_options = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    convert = pa_csv.ConvertOptions(column_types={name: pa.string() for name in expected},
                                    strings_can_be_null=False)
    write_options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    row = 0
    try:
        reader = pa_csv.open_csv(source, read_options=read_options, convert_options=convert)
        with writing(out), open(out, "wb") as sink:
            for batch in reader:
                ids = batch.column("Id").to_pylist()
                for offset, value in enumerate(ids):
                    if value != str(first_id + row + offset):
                        raise InputError(f"{source}:{row + offset + 2}: Id {value}, expected "
                                         f"{first_id + row + offset} (rows must be complete and "
                                         f"in order)")
                row += len(ids)
                table = pa.Table.from_batches([batch]).drop_columns(["Id"])
                pa_csv.write_csv(table, sink, write_options)
    except pa.ArrowInvalid as error:
        raise _csv_error(source, len(expected), error) from error
    except OSError as error:  # Arrow's reading errors (errno None): a damaged .csv.gz
        if error.errno is not None:
            raise
        raise InputError(f"{source}: corrupt or truncated ({error}); check it"
                         f"{' with `gzip -t`' if source.name.endswith('.gz') else ''} and "
                         f"download it again") from error


def _csv_error(source: Path, expected: int, error: Exception) -> InputError:
    """The first line of `source` without `expected` columns (Arrow's message names neither file
    nor line), or what Arrow said with the file named."""
    try:
        with parse.open_raw(source, "rt") as handle:
            for fields in (reader := csv.reader(handle)):
                if len(fields) != expected:
                    return InputError(
                        f"{source}:{reader.line_num}: {len(fields)} comma-separated columns, "
                        f"expected {expected} (Id, {'Label, ' if expected == 41 else ''}I1..I13, "
                        f"C1..C26); fix or remove that row")
    except (*parse.GZIP_ERRORS, UnicodeDecodeError, csv.Error) as reread:
        return InputError(f"{source}: not readable as CSV ({reread})")
    return InputError(f"{source}: not readable as CSV ({str(error).splitlines()[0][:200]})")


def is_csv(path: str | Path) -> bool:
    """A Kaggle CSV (train.csv, test.csv, gzipped or not) rather than raw TSV."""
    return str(path).endswith((".csv", ".csv.gz"))


def first_line(path: Path, shown: str | Path | None = None) -> bytes:
    """The first line of a raw file, plain or gzip, without its line end; a damaged gzip file is
    an InputError naming `shown` (default `path`)."""
    try:
        with parse.open_raw(path) as handle:
            return handle.readline().rstrip(b"\r\n")
    except parse.GZIP_ERRORS as error:
        raise InputError(f"{path if shown is None else shown}: not readable as gzip ({error}); "
                         "check it with `gzip -t`") from error


def check_columns(path: Path, split: str, shown: str | Path | None = None) -> None:
    """The first line must have 40 columns in train (label first) and 39 in test. Messages name
    `shown` (the user's file; default `path`)."""
    shown = path if shown is None else shown
    first = first_line(path, shown)
    if not first:
        rows = "no rows after the header" if is_csv(shown) else "no rows"
        raise InputError(f"{shown}: empty file ({rows}); check the path, or download it again")
    columns = first.count(b"\t") + 1
    expected = 40 if split == "train" else 39
    if split == "test" and columns == 40:
        raise InputError(f"{shown}:1: 40 columns; a test file has 39 (no label). Is it a train "
                         f"file?")
    if split == "train" and columns == 39 and first.split(b"\t")[0] not in (b"0", b"1"):
        raise InputError(f"{shown}:1: 39 columns and no 0/1 label; a train file has 40 "
                         f"(label first). Is it a test file?")
    if columns > expected:
        raise InputError(f"{shown}:1: {columns} tab-separated columns, expected {expected}")


def check_full_size(paths: dict[str, Path], rows: dict[str, int], verify_md5: bool,
                    inputs: dict[str, Path]) -> dict:
    """md5 prefix check for files that have exactly the full Kaggle row counts (`paths`: the
    raw TSV files; `inputs`: what the user gave, named in warnings)."""
    results = {}
    full = {"train": (schema.FULL_TRAIN_ROWS, schema.FULL_TRAIN_MD5_PREFIX),
            "test": (schema.FULL_TEST_ROWS, schema.FULL_TEST_MD5_PREFIX)}
    for split, (full_rows, prefix) in full.items():
        if rows[split] != full_rows or not verify_md5:
            continue
        md5 = file_md5(paths[split])
        results[split] = {"md5": md5, "matches_official": md5.startswith(prefix)}
        if not md5.startswith(prefix):
            print(f"warning: {inputs[split]} has the full row count but md5 {md5} does not start "
                  f"with the official {prefix}", file=sys.stderr)
    return results


def build_real(inputs: dict[str, Path], config: settings.PipelineConfig, out: Path) -> dict:
    paths, rows = {}, {}
    for split, source in inputs.items():
        paths[split] = out / f"{split}.txt"
        unpack(split, source, paths[split])
        check_columns(paths[split], split, shown_name(source, split))
        rows[split] = parse.count_lines(paths[split])
        print(f"  {split}: {source} -> {rows[split]:,} rows")
    md5 = check_full_size(paths, rows, config.raw.verify_md5, inputs)
    return {"source": "real", "inputs": {k: str(v) for k, v in inputs.items()}, "rows": rows,
            "md5": md5, "full_size": rows == {"train": schema.FULL_TRAIN_ROWS,
                                             "test": schema.FULL_TEST_ROWS}}


def build_days(days: dict[str, Path], out: Path) -> dict:
    """Links the day files into `out` under their own names and checks their first lines."""
    for source in days.values():
        link = out / source.name
        os.symlink(source.resolve(), link)
        check_columns(link, "train", source)
    print(f"  {len(days)} days: {days['day_0'].parent}/day_0 .. day_{len(days) - 1}, linked")
    return {"source": CRITEO_1TB, "inputs": {day: str(path) for day, path in days.items()},
            "days": [path.name for path in days.values()], "rows": None,
            "rows_note": "not counted in stage 00 (a whole pass over the text); stage 02 counts "
                         "the training rows, 03_hash/field_spec.json holds every split's rows"}


def build_synthetic(config: settings.PipelineConfig, out: Path) -> dict:
    from preprocessing import synthetic
    synthetic_config = config.synthetic
    truth = synthetic.generate(out, synthetic_config.train_rows, synthetic_config.test_rows,
                               seed=synthetic_config.seed)
    rows = {split: parse.count_lines(out / f"{split}.txt") for split in ("train", "test")}
    return {"source": "synthetic", "rows": rows, "truth": truth}


def locate(config: settings.PipelineConfig) -> RawInput | None:
    """The raw input files, or None for synthetic data."""
    data_dir = Path(config.raw.data_dir) if config.raw.data_dir else DEFAULT_DATA_DIR
    found = find_raw_input(data_dir)
    if found is None and config.raw.data_dir:
        raise InputNotFound(f"{data_dir}: no train.txt/test.txt (.gz), {ARCHIVE}, Kaggle "
                            f"train.csv/test.csv or Criteo 1TB day files (day_0, day_1, ...)")
    return found


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    inputs = locate(config)
    stage_config = {"raw": config_lib.to_dict(config.raw)}
    if inputs is None:
        stage_config["synthetic"] = config_lib.to_dict(config.synthetic)
    else:
        stage_config["source"] = source_identity(inputs.files)
    return Stage(tag, "00_raw", stage_config, inputs=[])


def main(argv=None) -> None:
    started = settings.start_stage(__doc__, make_stage, argv)
    if not started:
        return
    _, config, stage = started
    inputs = locate(config)
    with stage.build() as out:
        if inputs is None:
            info = build_synthetic(config, out)
        elif inputs.source == CRITEO_1TB:
            info = build_days(inputs.files, out)
        else:
            info = build_real(inputs.files, config, out)
        (out / "raw.json").write_text(json.dumps(info, indent=1) + "\n")
        stage.record(rows=info["rows"], source=info["source"])


if __name__ == "__main__":
    main()
