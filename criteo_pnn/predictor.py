"""Scoring raw rows with a Plan (a tag's published stages or a bundle): stages 03-07 applied to
new rows by the stages' own functions.

Per chunk of parsed rows (value codes and raw integers, `preprocessing.parse`):
- 03: categorical codes binned like stage 03 when the tag counted bins (`bins.bin_codes`), then
  looked up in the training vocabulary (`hash_fields.map_chunk`): a value with an id of its own
  gets it, a rare training value the field's rare id, a value never seen in training the OOV id;
- 04: the winners' GBDT inputs (`export.gbdt_matrix`) and, for 69-field models, the leaves of the
  30 trees (`leaves.predict_leaves`) as leaf-field ids (`leaves.leaf_ids`);
- 05: each member's model on the inputs it was trained on: Keras (`model.keras`, the training
  runner's sigmoid of the float32 logits), the libFFM kernels (`model.npy`), xgboost or lightgbm
  at their best round (the raw-column GBDT's matrix by `models.gbdt.RawColumns`);
- 06: each member's calibrator (`ensembles.calibrate.Calibrator`), when the source is calibrated;
- 07: the blend's logit-space weights and bias (`ensembles.blend.Blend.apply`).
Between steps predictions are rounded to float32 where the stages store them (their .pred.npy
files), so a tag's own test rows get its stage-08 numbers. Rows the parser marked bad
(`raw.on_bad_row=skip`) are given the training click rate.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from criteo_pnn import rows as rows_lib
from criteo_pnn.artifacts import FIELDS_39, FIELDS_69, RAW, WINNERS, Plan
from preprocessing import field_spec, parse, schema
from pipeline import errors

KERAS_BACKEND = "tensorflow"


class Transform:
    """Parsed rows -> the inputs the members read: {"03_hash": ids [N, 39], "04_leaves": ids
    [N, 69], "winners": the GBDT matrix [N, 13 + K]} (only those asked for)."""

    def __init__(self, plan: Plan):
        from preprocessing.hashtable import FieldTables

        manifest = plan.manifest
        self.spec = field_spec.FieldSpec.from_json(manifest["field_spec"], plan.origin)
        vocabulary = plan.array("vocabulary")
        names = schema.FIELD_NAMES
        self.tables = FieldTables([(vocabulary[f"codes_{name}"], vocabulary[f"ids_{name}"])
                                   for name in names],
                                  [vocabulary[f"rare_{name}"] for name in names])
        self.offsets = np.asarray(self.spec.offsets, np.int64)
        self.max_bins = self.spec.hashing.get("max_bins")
        self.indicators = [tuple(column) for column in manifest["gbdt_indicators"] or []]
        self.trees = None
        if manifest.get("leaf_spec"):
            import json

            import xgboost as xgb

            from preprocessing import leaves

            leaf_spec = field_spec.FieldSpec.from_json(manifest["leaf_spec"], plan.origin)
            self.trees = xgb.Booster(model_file=str(plan.file("leaves/gbdt.json")))
            vocabulary = json.loads(plan.file("leaves/leaves.json").read_text())
            self.leaf_tables = leaves.leaf_tables(vocabulary)
            self.leaf_offsets = leaf_spec.offsets[self.spec.num_fields:]

    def __call__(self, codes: np.ndarray, ints: np.ndarray, needed: set) -> dict:
        from preprocessing import bins, export, hash_fields, leaves

        if self.max_bins is not None:
            bins.bin_codes(codes, self.max_bins)
        fields = hash_fields.map_chunk(self.tables, self.offsets, codes, 0)
        inputs = {FIELDS_39: fields, "ints": ints}
        if needed & {WINNERS, FIELDS_69}:
            split = field_spec.SplitArrays(fields, None, None, ints)
            inputs[WINNERS] = export.gbdt_matrix(split, self.indicators)
        if FIELDS_69 in needed:
            heap = np.zeros((len(fields), len(self.leaf_tables)), np.uint16)
            if len(fields):
                leaves.predict_leaves(self.trees, inputs[WINNERS], heap)
            inputs[FIELDS_69] = np.concatenate(
                [fields, leaves.leaf_ids(self.leaf_tables, heap, self.leaf_offsets)], axis=1)
        return inputs


class KerasMember:
    def __init__(self, member: dict, plan: Plan):
        os.environ.setdefault("KERAS_BACKEND", KERAS_BACKEND)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import models  # noqa: F401  (registers the model classes for deserialisation)
        from models.engine import common

        path = plan.file(f"members/{member['id']}/model.keras")
        model = keras.saving.load_model(path, compile=False)
        self.batch_size = int(member["eval_batch_size"])
        # As the training runner's predictions: XLA-compiled when it trained so, and then on
        # batches padded to one shape.
        self.padded = bool(member.get("jit_compile")) and keras.backend.backend() == "tensorflow"
        self.call = functools.partial(common.probabilities, model)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            self.call = tf.function(self.call, jit_compile=self.padded, reduce_retracing=True)
        self.predict_in_batches = common.predict_in_batches

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.predict_in_batches(self.call, ids, self.batch_size, self.padded)


class LibffmMember:
    def __init__(self, member: dict, plan: Plan):
        from models.libffm.config import ModelConfig
        from models.libffm.trainer import initial_state, load_weights

        path = plan.file(f"members/{member['id']}/model.npy")
        n, m, k = np.load(path, mmap_mode="r").shape
        self.model = ModelConfig(**member["model"])
        self.state = initial_state(n, m, ModelConfig(**{**member["model"], "init_scale": 0.0}),
                                   seed=0)
        load_weights(self.state, k, path)
        self.text = member["format"] == "text"

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        from models.libffm.rows import FieldRows, SparseRows

        ids = np.ascontiguousarray(ids, np.int32)
        if not self.text:
            return FieldRows(ids, None).predict(self.state, self.model)
        rows, fields = ids.shape
        # libFFM text rows: `field:id:1` for every field, read as ffm-train reads them.
        sparse = SparseRows(np.arange(rows + 1, dtype=np.int64) * fields, ids.ravel(),
                            np.tile(np.arange(fields, dtype=np.int32), rows),
                            np.ones(rows * fields, np.float32), None)
        return sparse.predict(self.state, self.model)


class GbdtMember:
    def __init__(self, member: dict, plan: Plan):
        self.library, self.best_round = member["kind"], member["best_round"]
        self.names, self.types = member["names"], member["types"]
        self.categorical = "c" in self.types
        self.code_of_id = (plan.array(f"members/{member['id']}/code_of_id")
                           if member["input"] == RAW else None)
        folder = f"members/{member['id']}/"
        if self.library == "xgboost":
            import xgboost as xgb

            self.booster = xgb.Booster(model_file=str(plan.file(folder + "model.json")))
        else:
            import lightgbm as lgb

            self.booster = lgb.Booster(model_file=str(plan.file(folder + "model.txt")))

    def matrix(self, inputs: dict) -> np.ndarray:
        if self.code_of_id is None:
            return inputs[WINNERS]
        from models.gbdt import RawColumns

        fields = inputs[FIELDS_39]
        split = field_spec.SplitArrays(fields, None, None, inputs["ints"])
        return RawColumns(split, self.code_of_id, len(fields))[0:len(fields)]

    def __call__(self, inputs: dict) -> np.ndarray:
        matrix = np.asarray(self.matrix(inputs), np.float32)
        if not len(matrix):
            return np.zeros(0, np.float32)
        if self.library == "xgboost":
            import xgboost as xgb

            data = xgb.DMatrix(matrix, feature_names=self.names, feature_types=self.types,
                               enable_categorical=self.categorical)
            return self.booster.predict(data, iteration_range=(0, self.best_round)) \
                .astype(np.float32)
        return self.booster.predict(matrix, num_iteration=self.best_round).astype(np.float32)


MEMBER_KINDS = {"keras": KerasMember, "libffm": LibffmMember, "xgboost": GbdtMember,
                "lightgbm": GbdtMember}


class Predictor:
    """Click probabilities of raw Criteo rows for one source of a tag or bundle.

    `predict(frame)` scores a pandas DataFrame (columns I1..I13, C1..C26); `predict_file` streams
    a raw file into an `Id,Predicted` CSV. Both parse rows with the pipeline's parser, so bad
    rows follow `on_bad_row` as in stage 00 ("error": one message naming the row; "skip": the
    row gets the training click rate, `base_rate`)."""

    def __init__(self, plan: Plan):
        from ensembles.blend import Blend
        from ensembles.calibrate import Calibrator

        self.plan = plan
        manifest = plan.manifest
        self.source, self.tag = manifest["source"], manifest["tag"]
        self.base_rate = float(manifest["base_rate"])
        self.raw_settings = manifest["raw"]
        self.transform = Transform(plan)
        self.members = []
        for member in plan.members:
            model = MEMBER_KINDS[member["kind"]](member, plan)
            calibrator = None if member["calibrator"] is None else \
                Calibrator.from_json(member["calibrator"])
            self.members.append((member, model, calibrator))
        self.needed = plan.inputs()
        blend = manifest["blend"]
        self.blend = None
        if blend is not None:
            weights = np.array([blend["weights"][member["id"]] for member in plan.members])
            self.blend = Blend(blend["method"], weights, float(blend["bias"]), None, {})

    def __repr__(self) -> str:
        return (f"Predictor({self.source} of tag {self.tag}, "
                f"{len(self.members)} member{'s' * (len(self.members) != 1)}: "
                f"{', '.join(member['id'] for member, _, _ in self.members)})")

    def score_codes(self, codes: np.ndarray, ints: np.ndarray) -> np.ndarray:
        """float32 [N] probabilities of parsed rows (value codes int64 [N, 39], raw integers
        float32 [N, 13]), as the source's test.pred.npy holds them."""
        from ensembles import metrics

        inputs = self.transform(codes, ints, self.needed)
        outputs = []
        for member, model, calibrator in self.members:
            if member["kind"] in ("xgboost", "lightgbm"):
                probabilities = model(inputs)
            else:
                probabilities = model(inputs[member["input"]])
            if calibrator is not None:
                probabilities = calibrator.apply(probabilities).astype(np.float32)
            outputs.append(probabilities)
        if self.blend is None:
            return outputs[0]
        logits = np.column_stack([metrics.logit(output) for output in outputs])
        return metrics.sigmoid(self.blend.apply(logits)).astype(np.float32)

    def score_block(self, block: rows_lib.Block) -> np.ndarray:
        """float32 [block.lines]: every line of the block; bad ones get the click rate."""
        out = np.full(block.lines, self.base_rate, np.float32)
        if len(block.kept):
            out[block.kept] = self.score_codes(block.codes, block.ints)
        out[block.bad] = self.base_rate
        return out

    def _settings(self, on_bad_row, max_bad_fraction):
        on_bad_row = on_bad_row or self.raw_settings.get("on_bad_row", "error")
        if on_bad_row not in ("error", "skip"):
            raise errors.InputError(f"raw.on_bad_row={on_bad_row!r}: use error or skip")
        if max_bad_fraction is None:
            max_bad_fraction = self.raw_settings.get("max_skipped_fraction")
        parse.check_fraction(max_bad_fraction)
        return on_bad_row, max_bad_fraction

    def predict(self, frame, on_bad_row: str | None = None,
                max_bad_fraction: float | None = None) -> np.ndarray:
        """float64 [len(frame)] click probabilities of a DataFrame's rows, in order."""
        on_bad_row, max_bad_fraction = self._settings(on_bad_row, max_bad_fraction)
        scores = []
        with rows_lib.open_frame(frame) as source:
            for block in rows_lib.iter_blocks(source, on_bad_row, max_bad_fraction):
                scores.append(self.score_block(block))
        result = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        if len(result) != len(frame):
            raise AssertionError(f"{len(result)} predictions for {len(frame)} rows")
        return result.astype(np.float64)

    def predict_file(self, path: Path, output: Path | None = None,
                     on_bad_row: str | None = None, max_bad_fraction: float | None = None,
                     progress: bool | None = None, log=sys.stderr) -> dict:
        """Streams raw rows from `path` into `output` (`Id,Predicted` CSV, gzip for .gz,
        written under a temporary name and renamed when complete; None: stdout). Returns
        {"rows", "bad_rows", "seconds", "rows_per_second", "output", ...}."""
        from tqdm import tqdm

        from submissions import write

        on_bad_row, max_bad_fraction = self._settings(on_bad_row, max_bad_fraction)
        started = time.perf_counter()
        report = parse.ParseReport()
        rows = bad = 0
        with rows_lib.open_file(path) as source, _Output(output) as sink:
            bar = tqdm(unit="row", unit_scale=True, desc=f"predict {Path(path).name}",
                       mininterval=1, disable=None if progress is None else not progress, file=log)
            try:
                for block in rows_lib.iter_blocks(source, on_bad_row, max_bad_fraction, report):
                    probabilities = np.clip(self.score_block(block).astype(np.float64),
                                            write.CLIP, 1 - write.CLIP)
                    sink.rows(block.ids(source), probabilities)
                    rows += block.lines
                    bad += len(block.bad)
                    bar.update(block.lines)
            finally:
                bar.close()
            sink.commit()
        seconds = time.perf_counter() - started
        summary = {"input": str(path), "output": str(output) if output else "-",
                   "source": self.source, "tag": self.tag, "rows": rows, "bad_rows": bad,
                   "padded_rows": report.padded_rows, "seconds": seconds,
                   "rows_per_second": rows / max(seconds, 1e-9),
                   "first_bad": report.first_bad, "base_rate": self.base_rate}
        return summary


class _Output:
    """`Id,Predicted` rows to a file (gzip when it ends in .gz, as stage 08 writes it: no name or
    time in the header) under a temporary name, renamed by `commit`; or to stdout."""

    def __init__(self, path: Path | None):
        self.path = None if path is None or str(path) == "-" else Path(path)
        self.handle = self.compressor = self.temporary = None
        self.header = True

    def __enter__(self):
        if self.path is None:
            self.handle = sys.stdout.buffer
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-",
                                            dir=self.path.parent)
            self.temporary = Path(name)
            self.handle = os.fdopen(handle, "wb")
            if self.path.name.endswith(".gz"):
                from submissions import write

                self.compressor = zlib.compressobj(write.GZIP_LEVEL, zlib.DEFLATED, 31)
        return self

    def rows(self, ids: np.ndarray, probabilities: np.ndarray) -> None:
        """Appends rows as stage 08's writer formats them (the header before the first)."""
        import pandas as pd

        from submissions import write

        frame = pd.DataFrame({"Id": ids, "Predicted": probabilities})
        self.write(write.csv_text(frame, self.header))
        self.header = False

    def write(self, data: bytes) -> None:
        with errors.writing(self.temporary or "stdout"):
            self.handle.write(self.compressor.compress(data) if self.compressor else data)

    def commit(self) -> None:
        if self.header:  # no rows: the header alone
            self.rows(np.zeros(0, np.int64), np.zeros(0))
        with errors.writing(self.temporary or "stdout"):
            if self.compressor:
                self.handle.write(self.compressor.flush())
            self.handle.flush()
            if self.path is not None:
                os.fsync(self.handle.fileno())
                self.handle.close()
                os.replace(self.temporary, self.path)
                self.temporary = None

    def __exit__(self, *exc_info) -> None:
        if self.path is not None:
            if not self.handle.closed:
                self.handle.close()
            if self.temporary is not None:
                self.temporary.unlink(missing_ok=True)
