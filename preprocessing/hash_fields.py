"""Stage 03: the hashed field files, the input of every model.

Reads: the files of `00_raw/` named by the parts of each split (`01_split/split.json`),
`02_count/` (training counts, and the `max_bins` they were binned with).
Writes `03_hash/`: `field_spec.json`; per split `{split}.fields.npy` (int32 [rows, 39], global ids),
`{split}.ids.npy` (int64 Kaggle Ids), `{split}.ints.npy` (float32 [rows, 13] raw integers, NaN =
missing); `{train,valid}.labels.npy` (uint8); `vocabulary.npz` (per field, the values that got
their own id: value codes, local ids, training counts) and `vocabulary.json` (per-field sizes, rare and collision counts).
Ids: 10000000 + row of the labelled files read in order (train.txt, or the day files as if
concatenated), 60000000 + test.txt row; a row is a line of the file, bad ones included. With
raw.on_bad_row=skip a bad train/valid row is dropped (its Id is simply absent, the split
boundary of stage 01 stays where it was) and a bad test row is kept with every field missing
(every test line keeps its Id: Kaggle scores them all); more bad rows than
raw.max_skipped_fraction of a file or split, or a train or valid split left with no row, is an
error. An empty split (the 1TB logs' test) gets 0-row files.

Per field, the training values (all integer keys; categorical values seen >= hash.min_count times)
are keyed and hashed as the winners did (preprocessing/keys.py), and the distinct hashes, sorted,
become local ids 2, 3, ...; rarer training values get the rare id 1 and values never seen in
training the OOV id 0. Global id = field offset + local id. With stage 02's `max_bins`, the
categorical codes of every row are binned (preprocessing/bins.py) before lookup, as they were
before counting.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from preprocessing import bins, count, field_spec, keys, parse, schema
from preprocessing.hashtable import FieldTables
from preprocessing.npy import NpyWriter
from preprocessing.split import describe as describe_parts
from preprocessing.split import file_plan, load_split
from pipeline import config as config_lib
from pipeline import errors
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.paths import stage_dir



def field_vocabulary(field: int, codes, counts, min_count: int, mode: str, md5_bins: int,
                     texts: dict) -> tuple[dict, np.ndarray]:
    """One field's kept values {"codes", "ids", "counts", ...} and its rare codes (sorted)."""
    threshold = min_count if field >= schema.NUM_INT_FIELDS else 1
    frequent = counts >= threshold
    hashes = keys.hash_codes(field, codes[frequent], mode, md5_bins, texts)
    distinct = np.unique(hashes)
    kept = {"codes": codes[frequent],
            "ids": (field_spec.FIRST_VALUE_ID + np.searchsorted(distinct, hashes)).astype(np.int32),
            "counts": counts[frequent], "size": field_spec.FIRST_VALUE_ID + len(distinct),
            "values": int(frequent.sum()), "rare_values": int((~frequent).sum()),
            "collisions": int(frequent.sum() - len(distinct))}
    return kept, codes[~frequent]


def build_vocabularies(tag: str, hash_config) -> tuple[FieldTables, list[dict]]:
    """The lookup tables over every training value of every field, and the kept values."""
    field_counts = ((codes, counts) for _, codes, counts in count.iter_counts(tag))
    return vocabularies_of(field_counts, hash_config, count.load_fallback_text(tag))


def vocabularies_of(field_counts, hash_config, texts: dict) -> tuple[FieldTables, list[dict]]:
    """build_vocabularies from per-field (codes sorted, counts), in field order."""
    vocabularies, rare = [], []
    for field, (codes, counts) in enumerate(field_counts):
        kept, rare_codes = field_vocabulary(field, codes, counts, hash_config.min_count,
                                            hash_config.mode, hash_config.md5_bins, texts)
        vocabularies.append(kept)
        rare.append(rare_codes)
    return FieldTables([(kept["codes"], kept["ids"]) for kept in vocabularies], rare), vocabularies


def field_offsets(vocabularies: list[dict]) -> np.ndarray:
    """Each field's first global id: the sum of the vocabulary sizes of the fields before it."""
    sizes = [vocabulary["size"] for vocabulary in vocabularies]
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


class SplitWriter:
    """The .npy files of one split, appended to chunk by chunk (preprocessing/npy.py) by a
    background thread, so that the next chunk is parsed and looked up while this one is written
    (writing took 2.4 s of stage 03 at 10M rows with the other core idle)."""

    def __init__(self, out: Path, split: str, labelled: bool):
        paths = field_spec.split_paths(out, split)
        self.files = {"fields": NpyWriter(paths["fields"], np.int32, (schema.NUM_FIELDS,)),
                      "ids": NpyWriter(paths["ids"], np.int64),
                      "ints": NpyWriter(paths["ints"], np.float32, (schema.NUM_INT_FIELDS,))}
        if labelled:
            self.files["labels"] = NpyWriter(paths["labels"], np.uint8)
        self.writer, self.pending = ThreadPoolExecutor(1), None

    def write(self, fields, ids, ints, labels) -> None:
        """Queues the rows (copies of `ints` and `labels`: the parser reuses their memory) after
        waiting for the previous chunk, so at most one chunk is in flight."""
        arrays = {"fields": fields, "ids": ids, "ints": np.array(ints),
                  "labels": None if labels is None else np.array(labels)}
        self._wait()
        self.pending = self.writer.submit(self._append, arrays)

    def _append(self, arrays: dict) -> None:
        for name, writer in self.files.items():
            writer.append(arrays[name])

    def _wait(self) -> None:
        if self.pending is not None:
            self.pending.result()  # raises what the write raised
            self.pending = None

    def close(self) -> int:
        """Closes the files; returns the number of rows."""
        self._wait()
        self.writer.shutdown()
        rows = [writer.close() for writer in self.files.values()]
        return rows[0]


def map_chunk(tables: FieldTables, offsets: np.ndarray, codes: np.ndarray,
              training_rows: int) -> np.ndarray:
    """Value codes [rows, 39] -> global ids int32 [rows, 39]; the first `training_rows` rows are
    rows of the training split (none of their values is out of vocabulary)."""
    return tables.lookup_rows(codes, offsets, training_rows, field_spec.RARE_ID,
                              field_spec.OOV_ID)


def hash_file(path: Path, splits: dict, writers: dict, tables, offsets, labelled: bool,
              on_bad_row: str, id_start: int, report: parse.ParseReport,
              max_bins: int | None = None,
              max_bad_fraction: float | None = None) -> tuple[dict, int, dict]:
    """Streams one raw file into the writers of the splits it holds (`splits`: split -> Part of
    this file); returns (positives per split, rows of the file read, bad-row counts per split:
    {"lines", "skipped", "padded", "missing"}). Row numbers, and so Ids and split boundaries,
    count every line of the file, bad ones included."""
    positives = {split: 0 for split in splits}
    counts = {split: {"lines": 0, "skipped": 0, "padded": 0, "missing": 0} for split in splits}
    ends = [part.stop for part in splits.values()]
    total = None if None in ends else max(ends)
    progress = tqdm(total=total, unit="row", unit_scale=True, desc=f"hash {path.name}",
                    mininterval=2, disable=None)
    training_end = 0 if "train" not in splits else (
        np.iinfo(np.int64).max if splits["train"].stop is None else splits["train"].stop)
    file_report = parse.ParseReport()
    for chunk in parse.iter_chunks(path, labelled, on_bad_row, report=file_report,
                                   stop_row=total, reuse_arrays=True,
                                   max_bad_fraction=max_bad_fraction):
        if max_bins is not None:
            bins.bin_codes(chunk.codes, max_bins)
        rows = chunk.row_numbers()
        seen_rows = int(np.searchsorted(rows, training_end))
        fields = map_chunk(tables, offsets, chunk.codes, seen_rows)
        for split, part in splits.items():
            stop = np.iinfo(np.int64).max if part.stop is None else part.stop
            mask = slice(*np.searchsorted(rows, [part.start, stop]))
            labels = chunk.labels[mask] if labelled else None
            writers[split].write(fields[mask], id_start + rows[mask], chunk.ints[mask], labels)
            if labelled:
                positives[split] += int(labels.sum())
            for kind in ("skipped", "padded", "missing"):
                numbers = getattr(chunk, kind)
                if len(numbers):
                    counts[split][kind] += int(np.count_nonzero((numbers >= part.start)
                                                                & (numbers < stop)))
        progress.update(chunk.rows)
    progress.close()
    lines = file_report.lines
    for split, part in splits.items():
        stop = lines if part.stop is None else min(lines, part.stop)
        counts[split]["lines"] = stop - part.start
        parse.check_bad_share(f"{path}, {split} split (rows {part.start:,}..{stop:,})",
                              counts[split]["skipped"] + counts[split]["missing"],
                              counts[split]["lines"], max_bad_fraction, not labelled,
                              file_report.first_bad)
    _merge_report(report, file_report)
    return positives, lines, counts


def _merge_report(total: parse.ParseReport, part: parse.ParseReport) -> None:
    for name in ("rows", "lines", "padded_rows", "skipped_rows", "kept_with_missing_values"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    for problem in part.first_problems:
        total.add_problem(problem)
    total.first_bad = total.first_bad or part.first_bad


def build(tag: str, config: settings.PipelineConfig, out: Path) -> field_spec.FieldSpec:
    tables, vocabularies = build_vocabularies(tag, config.hash)
    sizes = [vocabulary["size"] for vocabulary in vocabularies]
    offsets = field_offsets(vocabularies)
    splits = load_split(tag)
    raw_dir = stage_dir(tag, "00_raw")
    writers = {split: SplitWriter(out, split, split != "test") for split in splits}
    report = parse.ParseReport()
    max_bins = count.load_summary(tag)["max_bins"]
    positives = {split: 0 for split in splits if split != "test"}
    problems = {split: {"lines": 0, "skipped": 0, "padded": 0, "missing": 0} for split in splits}
    next_train_id = schema.TRAIN_ID_START
    for file, parts in file_plan(splits):
        labelled = "test" not in parts
        if not labelled and len(parts) > 1:
            raise errors.InputError(f"split.json: {file} holds the test split and another one")
        id_start = next_train_id if labelled else schema.TEST_ID_START
        file_positives, lines, file_problems = hash_file(
            raw_dir / file, parts, writers, tables, offsets, labelled, config.raw.on_bad_row,
            id_start, report, max_bins, count.skip_bound(config))
        for split, values in file_problems.items():
            for kind, value in values.items():
                problems[split][kind] += value
        if labelled:
            next_train_id += lines
            for split, value in file_positives.items():
                positives[split] += value
    rows = {split: writer.close() for split, writer in writers.items()}
    for split in ("train", "valid"):
        if splits[split] and not rows[split]:
            raise parse.empty_split_error(split, describe_parts(splits[split]),
                                          problems[split]["lines"], report.first_bad)
    write_vocabulary(out, vocabularies)
    source = json.loads((raw_dir / "raw.json").read_text())["source"]
    split_rule = ({"valid_days": [part.file for part in splits["valid"]]}
                  if source == schema.CRITEO_1TB else {"valid_fraction": config.split.valid_fraction})
    spec = field_spec.FieldSpec(
        fields=tuple(field_spec.Field(name, "int" if index < schema.NUM_INT_FIELDS else "cat",
                                      sizes[index], int(offsets[index]))
                     for index, name in enumerate(schema.FIELD_NAMES)),
        rows=rows, hashing={"mode": config.hash.mode, "md5_bins": config.hash.md5_bins,
                            "max_bins": max_bins},
        min_count={"int": 1, "cat": config.hash.min_count},
        label_rate={split: positives[split] / max(rows[split], 1) for split in positives},
        test_id_start=schema.TEST_ID_START,
        extra={"source": source, **split_rule,
               "padded_rows": report.padded_rows, "skipped_rows": report.skipped_rows,
               "test_rows_with_missing_values": report.kept_with_missing_values,
               "bad_rows": {split: {kind: values[kind] for kind in ("skipped", "padded", "missing")}
                            for split, values in problems.items()}})
    spec.write(out)
    return spec


def write_vocabulary(out: Path, vocabularies: list[dict]) -> None:
    arrays = {}
    for name, vocabulary in zip(schema.FIELD_NAMES, vocabularies):
        for key in ("codes", "ids", "counts"):
            arrays[f"{key}_{name}"] = vocabulary[key]
    np.savez(out / "vocabulary.npz", **arrays)
    summary = {name: {key: vocabulary[key] for key in ("size", "values", "rare_values",
                                                       "collisions")}
               for name, vocabulary in zip(schema.FIELD_NAMES, vocabularies)}
    (out / "vocabulary.json").write_text(json.dumps(summary, indent=1) + "\n")


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    inputs = [stage_dir(tag, name) for name in ("00_raw", "01_split", "02_count")]
    stage_config = {"hash": config_lib.to_dict(config.hash), "on_bad_row": config.raw.on_bad_row,
                    "max_skipped_fraction": config.raw.max_skipped_fraction}
    return Stage(tag, "03_hash", stage_config, inputs)


def main(argv=None) -> None:
    started = settings.start_stage(__doc__, make_stage, argv)
    if not started:
        return
    args, config, stage = started
    with stage.build() as out:
        spec = build(args.tag, config, out)
        bad_rows = spec.extra["bad_rows"]
        stage.record(rows=spec.rows, total_vocabulary_size=spec.total_vocabulary_size,
                     skipped_rows={split: values["skipped"] for split, values in bad_rows.items()},
                     padded_rows={split: values["padded"] for split, values in bad_rows.items()},
                     test_rows_with_missing_values=spec.extra["test_rows_with_missing_values"])
    print(f"  {spec.num_fields} fields, {spec.total_vocabulary_size:,} ids, rows "
          + ", ".join(f"{split} {rows:,}" for split, rows in spec.rows.items())
          + "; skipped " + ", ".join(f"{split} {bad_rows[split]['skipped']:,}"
                                     for split in ("train", "valid"))
          + _padded_and_missing(bad_rows))


def _padded_and_missing(bad_rows: dict) -> str:
    padded = sum(values["padded"] for values in bad_rows.values())
    missing = bad_rows["test"]["missing"]
    text = f"; padded {padded:,}" if padded else ""
    if missing:
        text += f"; {missing:,} test row{'s' * (missing != 1)} kept with missing values"
    return text


if __name__ == "__main__":
    main()
