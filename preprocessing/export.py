"""Stage 04: the libFFM text files and the winners' GBDT inputs, streamed from the field files.

Reads: `03_hash/` (field files, `vocabulary.npz`). Writes `04_export/`:
- `{split}.ffm`: libFFM text, one line per row, `label field:index:1 ...` with field = field
  position (0-based) and index = global id; test rows get the dummy label 0, as the winners did.
- `{split}.gbdt.npy`: float32 [rows, 13 + K]: the 13 raw integers (missing = -10, as the winners)
  and K 0/1 indicators of the categorical values present in more than
  `export.gbdt_frequent_fraction` of training rows (the winners: > 4M of 45.8M rows).
- `gbdt_columns.json`: the names of those columns, e.g. "I1", ..., "C9=a73ee510".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from preprocessing import field_spec, keys, schema
from preprocessing.npy import NpyWriter
from pipeline import config as config_lib
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.paths import stage_dir

CHUNK_ROWS = 1 << 18
GBDT_MISSING = -10.0


def libffm_lines(fields: np.ndarray, labels: np.ndarray | None) -> pa.Table:
    """Rows of global ids [rows, F] -> a one-column-per-token table that writes as libFFM text."""
    label_text = pa.array(np.zeros(len(fields), np.uint8) if labels is None else labels)
    columns = {"label": pc.cast(label_text, pa.string())}
    for field in range(fields.shape[1]):
        ids = pc.cast(pa.array(fields[:, field]), pa.string())
        columns[str(field)] = pc.binary_join_element_wise(str(field), ids, "1", ":")
    return pa.table(columns)


def write_libffm(path: Path, split: field_spec.SplitArrays) -> None:
    options = pa_csv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    with open(path, "wb") as sink:
        for start in range(0, len(split.fields), CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            labels = split.labels[start:stop] if split.labels is not None else None
            pa_csv.write_csv(libffm_lines(np.asarray(split.fields[start:stop]), labels), sink,
                             options)


class _CodeNames(dict):
    """Names a non-hex categorical value by its code (its text lives in 02_count, not an input
    of this stage): a frequent one only needs a column name."""

    def __missing__(self, code: int) -> str:
        return f"#{code:016x}"


def frequent_values(directory: Path, spec: field_spec.FieldSpec, fraction: float) -> list:
    """[(column name, global id)] of categorical values in more than `fraction` of train rows."""
    threshold = fraction * (spec.rows["train"])
    columns = []
    with np.load(directory / "vocabulary.npz") as vocabulary:
        for index, field in enumerate(spec.fields):
            if field.kind != "cat":
                continue
            codes, ids, counts = (vocabulary[f"{key}_{field.name}"]
                                  for key in ("codes", "ids", "counts"))
            for position in np.flatnonzero(counts > threshold):
                name = keys.key(index, int(codes[position]), _CodeNames()).replace("-", "=", 1)
                columns.append((name, field.offset + int(ids[position]), index))
    return columns


def gbdt_matrix(split: field_spec.SplitArrays, indicators: list) -> np.ndarray:
    """float32 [rows, 13 + K]: raw integers (missing = -10) and frequent-value indicators."""
    ints = np.nan_to_num(np.asarray(split.ints), nan=GBDT_MISSING)
    flags = [np.asarray(split.fields[:, field]) == global_id for _, global_id, field in indicators]
    return np.column_stack([ints] + flags).astype(np.float32)


def write_gbdt(path: Path, split: field_spec.SplitArrays, indicators: list) -> None:
    with NpyWriter(path, np.float32, (schema.NUM_INT_FIELDS + len(indicators),)) as out:
        for start in range(0, len(split.fields), CHUNK_ROWS):
            part = field_spec.SplitArrays(split.fields[start:start + CHUNK_ROWS], None, None,
                                          split.ints[start:start + CHUNK_ROWS])
            out.append(gbdt_matrix(part, indicators))


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    return Stage(tag, "04_export", config_lib.to_dict(config.export),
                 [stage_dir(tag, "03_hash")])


def main(argv=None) -> None:
    started = settings.start_stage(__doc__, make_stage, argv)
    if not started:
        return
    args, config, stage = started
    hash_dir = stage_dir(args.tag, "03_hash")
    spec, splits = field_spec.open_field_files(hash_dir)
    indicators = frequent_values(hash_dir, spec, config.export.gbdt_frequent_fraction)
    with stage.build() as out:
        for name, split in splits.items():
            if config.export.libffm:
                write_libffm(out / f"{name}.ffm", split)
            if config.export.gbdt:
                write_gbdt(out / f"{name}.gbdt.npy", split, indicators)
        columns = list(schema.INT_NAMES) + [name for name, _, _ in indicators]
        (out / "gbdt_columns.json").write_text(json.dumps(columns, indent=1) + "\n")
        stage.record(gbdt_columns=len(columns), rows=spec.rows)
    print(f"  libFFM text: {config.export.libffm}; GBDT inputs: {len(columns)} columns "
          f"({len(indicators)} frequent-value indicators)")


if __name__ == "__main__":
    main()
