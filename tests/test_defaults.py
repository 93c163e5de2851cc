"""Model defaults are stated once, in the constructors: the README table and the model YAMLs
are checked against them (a drifted copy fails here, as NIFM's layer norm once did)."""

import re

import pytest
import yaml

from models import MODEL_MODULES, registry
from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs" / "models").glob("*.yaml"))


def readme_rows() -> dict[str, str]:
    text = (REPO_ROOT / "models" / "README.md").read_text()
    return {match[1]: match[2] for match in
            re.finditer(r"^\| `(\w+)` \| `\w+` \|.*\| ([^|]+) \|$", text, flags=re.M)}


def test_the_readme_model_table_shows_the_constructor_defaults():
    rows = readme_rows()
    assert sorted(rows) == sorted(MODEL_MODULES)
    for key, shown in rows.items():
        assert shown == registry.defaults_text(key), \
            f"models/README.md, row {key}: write {registry.defaults_text(key)!r}"


def keras_configs():
    for path in CONFIGS:
        data = yaml.safe_load(path.read_text())
        if "arch" in (data.get("model") or {}):
            yield pytest.param(path, data, id=path.stem)


@pytest.mark.parametrize("path, data", list(keras_configs()))
def test_a_model_yaml_states_the_paper_defaults_of_its_model(path, data):
    model = dict(data["model"])
    arch = model.pop("arch")
    defaults = registry.hyperparameters(arch)
    assert set(model) <= set(defaults), f"{path.name}: unknown keys {set(model) - set(defaults)}"
    if path.stem == arch:  # the model's own config: its top level is the paper setting
        changed = {key: (value, defaults[key]) for key, value in model.items()
                   if value != defaults[key]}
        assert not changed, f"{path.name}: (yaml, constructor) differ: {changed}"


@pytest.mark.parametrize("path, data", list(keras_configs()))
def test_a_model_yaml_cites_the_paper_section_its_model_cites(path, data):
    arch = data["model"]["arch"]
    docstring = (REPO_ROOT / "models" / f"{arch}.py").read_text().splitlines()[0]
    header = path.read_text().splitlines()[0]
    assert re.findall(r"§[\d.]+", header) in ([], re.findall(r"§[\d.]+", docstring)), \
        f"{path.name} cites {header!r}, models/{arch}.py {docstring!r}"
