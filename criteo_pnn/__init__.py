"""Scoring new raw Criteo rows with a trained tag or an exported bundle.

    import criteo_pnn
    predictor = criteo_pnn.load("artifacts/kaggle")            # the tag's submitted blend
    predictor = criteo_pnn.load("artifacts/kaggle", "ipnn")    # one model, calibrated by stage 06
    predictor = criteo_pnn.load("bundles/ens_logit")           # a folder made by ./run.sh export
    probabilities = predictor.predict(frame)                   # DataFrame with I1..I13, C1..C26

`load(path, name)`: `path` is a tag's artifact tree (`artifacts/<tag>`) or a bundle folder;
`name` a blend (07_ensemble/NAME), a model id (its 06_calibrate predictions when built, else
05_train's) or a source `STAGE/ID` as stage 08 takes it; default: what the tag's submission used.
The command line is `./run.sh predict` and `./run.sh export` (criteo_pnn/cli.py).
"""

from __future__ import annotations

from pathlib import Path

__version__ = "1.0.0"
__all__ = ["Predictor", "export", "load"]


def _plan(path, name):
    """The Plan of `name` in the tag folder `path`."""
    from criteo_pnn import artifacts

    path = Path(path)
    return artifacts.plan_from_tag(path, artifacts.resolve_source(path, name))


def _is_bundle(path: Path) -> bool:
    """A bundle has a manifest.json at its top; a tag folder has stage folders there."""
    from criteo_pnn import bundle

    return (path / bundle.MANIFEST).is_file()


def load(path, name: str | None = None, *, check_versions: bool = True):
    """A Predictor for `name` of the tag folder or bundle folder `path` (see the module doc);
    a bundle exported with other library versions is refused unless `check_versions` is
    False."""
    from criteo_pnn import bundle
    from criteo_pnn.predictor import Predictor
    from pipeline import errors

    path = Path(path)
    if _is_bundle(path):
        plan = bundle.load_plan(path, check=check_versions)
        source = plan.manifest["source"]
        if name is not None and name not in (source, source.split("/")[1]):
            raise errors.InputError(f"{path}: a bundle of {source}, not {name!r}; it holds one "
                                    f"source (export another for {name})")
        return Predictor(plan)
    return Predictor(_plan(path, name))


def export(path, out, name: str | None = None, *, force: bool = False) -> Path:
    """Writes the bundle of `name` (see load) of the tag folder `path` to the folder `out`."""
    from criteo_pnn import bundle
    from pipeline import errors

    if _is_bundle(Path(path)):
        raise errors.InputError(f"{path}: already a bundle; export from the tag's artifact tree")
    return bundle.export(_plan(path, name), out, force=force)


def __getattr__(name):
    if name == "Predictor":
        from criteo_pnn.predictor import Predictor
        return Predictor
    raise AttributeError(name)
