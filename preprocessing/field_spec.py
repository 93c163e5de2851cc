"""`field_spec.json`: the machine-checked contract of the hashed field files (stage 03).

Every reader of the field files goes through `open_field_files`, which verifies the spec and the
arrays against each other (shape, dtype, row counts, id range) before handing out memmaps.
The prose version of this contract, with worked examples, is `preprocessing/README.md`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from pipeline import errors

FORMAT_VERSION = 1
SPEC_FILE = "field_spec.json"
FIELD_KINDS = ("int", "cat", "leaf")
SPLITS = ("train", "valid", "test")
# Local ids reserved in every field (global id = field offset + local id).
OOV_ID = 0  # value never seen in the training split
RARE_ID = 1  # value seen in training fewer than min_count times (the winners' "less" token)
FIRST_VALUE_ID = 2


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    kind: str
    vocabulary_size: int  # number of local ids, the two reserved ones included
    offset: int  # global id of local id 0


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    fields: tuple[Field, ...]
    rows: dict  # split -> row count
    hashing: dict  # {"mode": "md5" | "xxh64", "md5_bins": int, "max_bins": int | None}
    min_count: dict  # kind -> threshold below which a training value becomes the rare token
    label_rate: dict  # split -> mean label (labelled splits only)
    test_id_start: int
    extra: dict = dataclasses.field(default_factory=dict)  # provenance (source, split rule...)

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def field_names(self) -> list[str]:
        return [field.name for field in self.fields]

    @property
    def vocabulary_sizes(self) -> list[int]:
        return [field.vocabulary_size for field in self.fields]

    @property
    def offsets(self) -> list[int]:
        return [field.offset for field in self.fields]

    @property
    def total_vocabulary_size(self) -> int:
        last = self.fields[-1]
        return last.offset + last.vocabulary_size

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["format_version"] = FORMAT_VERSION
        data["num_fields"] = self.num_fields
        data["total_vocabulary_size"] = self.total_vocabulary_size
        return data

    def write(self, directory: Path) -> None:
        text = json.dumps(self.to_json(), indent=1, sort_keys=True)
        (Path(directory) / SPEC_FILE).write_text(text + "\n")

    @classmethod
    def from_json(cls, data: dict, source: str = SPEC_FILE) -> FieldSpec:
        if data.get("format_version") != FORMAT_VERSION:
            raise errors.InputError(f"{source}: format_version {data.get('format_version')!r}, "
                             f"this code reads {FORMAT_VERSION}")
        fields = tuple(Field(**field) for field in data["fields"])
        spec = cls(fields=fields, rows=data["rows"], hashing=data["hashing"],
                   min_count=data["min_count"], label_rate=data["label_rate"],
                   test_id_start=data["test_id_start"], extra=data.get("extra", {}))
        spec.check(source)
        if data.get("num_fields") != spec.num_fields or \
                data.get("total_vocabulary_size") != spec.total_vocabulary_size:
            raise errors.InputError(f"{source}: num_fields/total_vocabulary_size disagree with fields")
        return spec

    @classmethod
    def load(cls, directory: Path) -> FieldSpec:
        path = Path(directory) / SPEC_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run stage 03 (./run.sh --only 03)")
        return cls.from_json(json.loads(path.read_text()), str(path))

    def check(self, source: str = SPEC_FILE) -> None:
        """Raises ValueError unless offsets are contiguous and every field is well formed."""
        expected_offset = 0
        for field in self.fields:
            if field.kind not in FIELD_KINDS:
                raise errors.InputError(f"{source}: field {field.name}: unknown kind {field.kind!r}")
            if field.vocabulary_size < FIRST_VALUE_ID:
                raise errors.InputError(f"{source}: field {field.name}: vocabulary_size "
                                 f"{field.vocabulary_size} < {FIRST_VALUE_ID} reserved ids")
            if field.offset != expected_offset:
                raise errors.InputError(f"{source}: field {field.name}: offset {field.offset}, "
                                 f"expected {expected_offset}")
            expected_offset += field.vocabulary_size
        if len(set(self.field_names)) != self.num_fields:
            raise errors.InputError(f"{source}: duplicate field names")

    def with_fields(self, new_fields: list[tuple[str, str, int]], **extra) -> FieldSpec:
        """A spec with fields (name, kind, vocabulary_size) appended after the existing ones."""
        fields = list(self.fields)
        offset = self.total_vocabulary_size
        for name, kind, size in new_fields:
            fields.append(Field(name, kind, size, offset))
            offset += size
        spec = dataclasses.replace(self, fields=tuple(fields), extra={**self.extra, **extra})
        spec.check()
        return spec


def split_paths(directory: Path, split: str) -> dict[str, Path]:
    directory = Path(directory)
    return {name: directory / f"{split}.{name}.npy" for name in ("fields", "labels", "ids", "ints")}


@dataclasses.dataclass
class SplitArrays:
    """Memory-mapped arrays of one split; `labels` is None for the test split."""
    fields: np.ndarray  # int32 [rows, num_fields], global ids
    labels: np.ndarray | None  # uint8 [rows]
    ids: np.ndarray  # int64 [rows], Kaggle Ids (train/valid: 10000000 + raw row; test: 60000000 + row)
    ints: np.ndarray | None  # float32 [rows, 13], raw integer values, NaN = missing


def open_split(directory: Path, spec: FieldSpec, split: str, check_ids: bool = False) -> SplitArrays:
    """Opens and verifies one split's arrays against `spec`; `check_ids` also scans the id range."""
    paths = split_paths(directory, split)
    rows = spec.rows[split]
    fields = _open(paths["fields"], np.int32, (rows, spec.num_fields))
    labels = _open(paths["labels"], np.uint8, (rows,)) if split != "test" else None
    ids = _open(paths["ids"], np.int64, (rows,))
    ints = _open(paths["ints"], np.float32, None) if paths["ints"].exists() else None
    if ints is not None and ints.shape[0] != rows:
        raise errors.InputError(f"{paths['ints']}: {ints.shape[0]} rows, {SPEC_FILE} says {rows}")
    if check_ids:
        verify_ids(fields, spec, paths["fields"])
    return SplitArrays(fields, labels, ids, ints)


def verify_ids(fields: np.ndarray, spec: FieldSpec, source, chunk_rows: int = 1 << 20) -> None:
    """Raises ValueError if any global id lies outside its field's [offset, offset + size)."""
    low = np.asarray(spec.offsets, dtype=np.int64)
    high = low + np.asarray(spec.vocabulary_sizes, dtype=np.int64)
    for start in range(0, len(fields), chunk_rows):
        block = np.asarray(fields[start:start + chunk_rows])
        bad = (block < low) | (block >= high)
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise errors.InputError(f"{source}: row {start + row}, field {spec.field_names[column]}: "
                             f"id {block[row, column]} outside [{low[column]}, {high[column]})")


def open_field_files(directory: Path, splits=SPLITS, check_ids: bool = False):
    """Loads `field_spec.json` from `directory` and opens the requested splits, verified."""
    spec = FieldSpec.load(directory)
    return spec, {split: open_split(directory, spec, split, check_ids) for split in splits}


def open_gbdt_inputs(export_dir: Path) -> dict[str, np.ndarray]:
    """{split: the winners' GBDT inputs `04_export/{split}.gbdt.npy`, memory-mapped}: what
    stage 04_leaves and the `winners` GBDTs of stage 05 read."""
    matrices = {}
    for split in SPLITS:
        path = export_dir / f"{split}.gbdt.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run stage 04 with export.gbdt: true")
        matrices[split] = np.load(path, mmap_mode="r")
    return matrices


def _open(path: Path, dtype, shape) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; rerun stage 03 (./run.sh --only 03 --force)")
    array = np.load(path, mmap_mode="r")
    if array.dtype != dtype:
        raise errors.InputError(f"{path}: dtype {array.dtype}, {SPEC_FILE} requires {np.dtype(dtype)}")
    if shape is not None and array.shape != shape:
        raise errors.InputError(f"{path}: shape {array.shape}, {SPEC_FILE} requires {shape}")
    return array
