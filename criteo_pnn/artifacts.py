"""What scoring needs from a tag's artifact tree, read from the published stage folders.

A source is what stage 08 can submit (`submit.source`): `07_ensemble/NAME` (a blend of its
members as stage 06 calibrated them, or as stage 05 trained them), `06_calibrate/ID` or
`05_train/ID`. `plan_from_tag` gathers everything that turns raw rows into its predictions into a
`Plan`: a JSON manifest (field spec, members, calibrators, blend weights), arrays (the
vocabulary with its rare training values, the raw GBDT category codes) and model files. A bundle
(`criteo_pnn/bundle.py`) is a Plan written to a folder. Every folder read must be published and
built on the folders it reads now (their manifests' fingerprints), so ids, vocabulary and models
agree.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from preprocessing import field_spec, schema
from pipeline import errors

BLEND_STAGE, CALIBRATE_STAGE, TRAIN_STAGE = "07_ensemble", "06_calibrate", "05_train"
SOURCE_STAGES = (BLEND_STAGE, CALIBRATE_STAGE, TRAIN_STAGE)
FIELDS_39, FIELDS_69 = "03_hash", "04_leaves"
WINNERS, RAW = "winners", "raw"  # the GBDT learners' two inputs (models/gbdt.py)


@dataclasses.dataclass
class Plan:
    """Everything a predictor reads: `manifest` (JSON), arrays by bundle-relative name without
    suffix (an ndarray, or a dict of them for "vocabulary"; loaded when first asked for), model
    files by bundle-relative name."""
    manifest: dict
    array_loaders: dict  # name -> callable returning an ndarray
    files: dict  # bundle-relative name -> Path
    origin: str  # the tag folder or bundle folder, for messages
    _arrays: dict = dataclasses.field(default_factory=dict)

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = self.array_loaders[name]()
        return self._arrays[name]

    def file(self, name: str) -> Path:
        return self.files[name]

    @property
    def members(self) -> list[dict]:
        return self.manifest["members"]

    def inputs(self) -> set[str]:
        return {member["input"] for member in self.members}


def read_json(path: Path) -> dict:
    if not path.exists():
        raise errors.InputNotFound(f"{path}: missing; build that stage first")
    return json.loads(path.read_text())


def published(folder: Path, tag_dir: Path) -> dict:
    """The manifest of a published stage folder, or an error saying how to build it."""
    manifest = folder / "manifest.json"
    if not manifest.exists():
        stage = folder.relative_to(tag_dir)
        raise errors.InputNotFound(f"{folder}: not built (no manifest.json); run the pipeline on "
                                   f"tag {tag_dir.name} first (./run.sh --tag {tag_dir.name}; "
                                   f"{stage} is its output)")
    return json.loads(manifest.read_text())


def check_consistent(tag_dir: Path, folders: list[Path]) -> None:
    """Each folder was built on the current build of every input it names that is in the tag
    (its manifest's input fingerprints), so ids and models agree."""
    for folder in folders:
        manifest = published(folder, tag_dir)
        for name, fingerprint in manifest.get("inputs", {}).items():
            upstream = tag_dir / name
            current = upstream / "manifest.json"
            if not current.exists():
                continue
            if json.loads(current.read_text()).get("fingerprint") != fingerprint:
                raise errors.InputError(
                    f"{folder}: built on an older {name} (rebuilt since); its predictions would "
                    f"not match: rebuild it first (./run.sh --tag {tag_dir.name})")


def require_tag(tag_dir: Path) -> None:
    if not Path(tag_dir).is_dir():
        raise errors.InputNotFound(f"{tag_dir}: no such artifact tree; run ./run.sh --tag "
                                   f"{Path(tag_dir).name} first, or check --artifacts")


def resolve_source(tag_dir: Path, name: str | None = None) -> str:
    """`STAGE/ID` of what to score: `name` as a source, a blend name or a model id (its
    calibrated predictions when stage 06 built them); None: the source of the tag's submission
    (stage 08), else its only blend."""
    tag_dir = Path(tag_dir)
    require_tag(tag_dir)
    if name is None:
        for record in (tag_dir / "08_submit" / "submission.json",
                       tag_dir / "08_submit" / "config.resolved.json"):
            if record.exists():
                return json.loads(record.read_text())["source"]
        blends = sorted(path.parent.name for path in tag_dir.glob(f"{BLEND_STAGE}/*/manifest.json"))
        if len(blends) == 1:
            return f"{BLEND_STAGE}/{blends[0]}"
        raise errors.InputError(f"{tag_dir}: no submission (stage 08) to take the source from "
                                f"and {len(blends)} blends; name one (--blend NAME) or a model "
                                f"(--model ID)")
    if "/" in name:
        stage = name.split("/")[0]
        if stage not in SOURCE_STAGES or name.count("/") != 1:
            raise errors.InputError(f"{name!r}: expected STAGE/ID with STAGE one of "
                                    f"{', '.join(SOURCE_STAGES)}, e.g. 07_ensemble/ens_logit")
        return name
    for stage in SOURCE_STAGES:
        if (tag_dir / stage / name / "manifest.json").exists():
            return f"{stage}/{name}"
    raise errors.InputNotFound(f"{tag_dir}: no blend or model named {name!r} (looked in "
                               f"{', '.join(SOURCE_STAGES)})")


def _member(tag_dir: Path, model_id: str, calibrated: bool, folders: list[Path]) -> tuple:
    """(member dict, {bundle name: file}, {array name: loader}) of one trained model."""
    train_dir = tag_dir / TRAIN_STAGE / model_id
    folders.append(train_dir)
    published(train_dir, tag_dir)
    config = read_json(train_dir / "config.resolved.json")
    metrics = read_json(train_dir / "metrics.json")
    member = {"id": model_id, "calibrator": None}
    prefix = f"members/{model_id}/"
    files, arrays = {}, {}
    if (train_dir / "model.keras").exists():
        member.update(kind="keras", input=config["train"]["input_stage"],
                      eval_batch_size=config["train"]["eval_batch_size"],
                      jit_compile=config["train"].get("jit_compile", False))
        files[prefix + "model.keras"] = train_dir / "model.keras"
    elif (train_dir / "model.npy").exists():
        member.update(kind="libffm", input=config["data"]["stage"],
                      format=config["data"]["format"], model=config["model"])
        files[prefix + "model.npy"] = train_dir / "model.npy"
    elif config.get("model", {}).get("library") in ("xgboost", "lightgbm"):
        library = config["model"]["library"]
        inputs = config["data"]["inputs"]
        member.update(kind=library, input=inputs, best_round=int(metrics["best_epoch"]))
        name = "model.json" if library == "xgboost" else "model.txt"
        files[prefix + name] = train_dir / name
        if inputs == WINNERS:
            folders.append(tag_dir / "04_export")
            names = read_json(tag_dir / "04_export" / "gbdt_columns.json")
            member.update(names=names, types=["q"] * len(names))
        else:
            member.update(names=list(schema.FIELD_NAMES),
                          types=["q"] * schema.NUM_INT_FIELDS + ["c"] * schema.NUM_CAT_FIELDS)
            if not (train_dir / "code_of_id.npy").exists():
                raise errors.InputNotFound(
                    f"{train_dir}: no code_of_id.npy (published before GBDTs wrote it); retrain: "
                    f"./run.sh --tag {tag_dir.name} --only 05 --model {model_id} --force")
            arrays[prefix + "code_of_id"] = lambda: np.load(train_dir / "code_of_id.npy")
    else:
        raise errors.InputError(
            f"{train_dir}: no model file predict can read (model.keras, model.npy, or a GBDT's "
            f"model.json/model.txt); a libFFM model of the binary engine (train.engine: binary) "
            f"is not supported: train it with the numba engine")
    if calibrated:
        calibrate_dir = tag_dir / CALIBRATE_STAGE / model_id
        folders.append(calibrate_dir)
        published(calibrate_dir, tag_dir)
        member["calibrator"] = read_json(calibrate_dir / "calibrator.json")
    return member, files, arrays


def _vocabulary_loader(tag_dir: Path):
    """Per field the value codes that own an id, their ids, and the other training codes (rare:
    every code counted in stage 02 that stage 03 gave no id of its own)."""
    def load() -> dict:
        arrays = {}
        with np.load(tag_dir / FIELDS_39 / "vocabulary.npz") as kept, \
                np.load(tag_dir / "02_count" / "counts.npz") as counted:
            for name in schema.FIELD_NAMES:
                codes = kept[f"codes_{name}"]
                arrays[f"codes_{name}"] = codes
                arrays[f"ids_{name}"] = kept[f"ids_{name}"]
                arrays[f"rare_{name}"] = np.setdiff1d(counted[f"codes_{name}"], codes,
                                                      assume_unique=True)
        return arrays
    return load


def plan_from_tag(tag_dir: Path, source: str) -> Plan:
    """The Plan of `source` (`STAGE/ID`) in the artifact tree `tag_dir`."""
    tag_dir = Path(tag_dir)
    require_tag(tag_dir)
    stage, unit = source.split("/")
    folders = [tag_dir / FIELDS_39, tag_dir / "02_count"]
    blend = None
    if stage == BLEND_STAGE:
        blend_dir = tag_dir / stage / unit
        folders.append(blend_dir)
        published(blend_dir, tag_dir)
        weights = read_json(blend_dir / "weights.json")
        if weights.get("space") != "logit":
            raise errors.InputError(f"{blend_dir}/weights.json: space {weights.get('space')!r}; "
                                    "predict applies logit-space blends")
        # A member of weight 0 adds exactly 0 to every blended logit: it is not scored.
        used = {member: weight for member, weight in weights["weights"].items() if weight != 0}
        blend = {"name": unit, "weights": used, "bias": weights["bias"],
                 "method": weights["method"],
                 "unused_members": [member for member in weights["weights"] if member not in used]}
        model_ids, calibrated = list(used), weights["source"] == CALIBRATE_STAGE
    else:
        model_ids, calibrated = [unit], stage == CALIBRATE_STAGE
    members, files = [], {}
    arrays = {"vocabulary": _vocabulary_loader(tag_dir)}
    for model_id in model_ids:
        member, member_files, member_arrays = _member(tag_dir, model_id, calibrated, folders)
        members.append(member)
        files.update(member_files)
        arrays.update(member_arrays)
    spec = field_spec.FieldSpec.load(tag_dir / FIELDS_39)
    hash_config = read_json(tag_dir / FIELDS_39 / "config.resolved.json")
    inputs = {member["input"] for member in members}
    leaf_spec = indicators = None
    if FIELDS_69 in inputs:
        leaves_dir = tag_dir / FIELDS_69
        folders.append(leaves_dir)
        leaf_spec = field_spec.FieldSpec.load(leaves_dir)
        if leaf_spec.extra["leaves"]["mode"] != "in_sample":
            raise errors.InputError(
                f"{leaves_dir}: leaves.mode {leaf_spec.extra['leaves']['mode']}: a new row has no "
                "fold whose trees give its leaves; predict supports leaves.mode=in_sample (the "
                "winners') only")
        files["leaves/gbdt.json"] = leaves_dir / "gbdt.json"
        files["leaves/leaves.json"] = leaves_dir / "leaves.json"
    if FIELDS_69 in inputs or WINNERS in inputs:
        folders.append(tag_dir / "04_export")
        export_config = read_json(tag_dir / "04_export" / "config.resolved.json")
        indicators = _indicators(tag_dir, spec, export_config["gbdt_frequent_fraction"])
    check_consistent(tag_dir, list(dict.fromkeys(folders)))
    manifest = {
        "tag": tag_dir.name, "source": source,
        "field_spec": spec.to_json(),
        "leaf_spec": None if leaf_spec is None else leaf_spec.to_json(),
        "gbdt_indicators": indicators,
        "raw": {"on_bad_row": hash_config.get("on_bad_row", "error"),
                "max_skipped_fraction": hash_config.get("max_skipped_fraction")},
        "base_rate": spec.label_rate["train"],
        "members": members, "blend": blend,
    }
    return Plan(manifest, arrays, files, str(tag_dir))


def _indicators(tag_dir: Path, spec: field_spec.FieldSpec, fraction: float) -> list:
    """Stage 04's GBDT indicator columns [[name, global id, field]] (the winners' GBDT inputs),
    checked against the column names it wrote."""
    from preprocessing import export

    columns = export.frequent_values(tag_dir / FIELDS_39, spec, fraction)
    written = read_json(tag_dir / "04_export" / "gbdt_columns.json")
    if [name for name, _, _ in columns] != written[schema.NUM_INT_FIELDS:]:
        raise errors.InputError(f"{tag_dir / '04_export'}: gbdt_columns.json does not match "
                                f"03_hash's frequent values; rebuild it (./run.sh --tag "
                                f"{tag_dir.name} --from 04)")
    return [[name, int(global_id), int(field)] for name, global_id, field in columns]
