"""The model contract, parametrized over the registry, and the paper's model identities."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import models  # noqa: F401  (fills the registry)
from models import registry
from models.engine.common import compact_rows
from models.layers.embedding import sparse_embeddings

REPO_ROOT = Path(__file__).resolve().parent.parent
VOCABULARY_SIZES = [5, 7, 3, 4, 6, 5, 4, 3]
BATCH = 16
# Small widths keep the suite fast; everything else is the model's default.
TINY = {
    "afm": {"embedding_dim": 4, "attention_units": 3},
    "ccpm": {"embedding_dim": 4, "conv_layers": [[3, 4], [2, 3]], "hidden_units": [8]},
    "deepfm": {"embedding_dim": 4, "hidden_units": [8, 8], "dropout_rate": 0.1},
    "ffm": {"embedding_dim": 3},
    "fm": {"embedding_dim": 4},
    "fnn": {"embedding_dim": 4, "hidden_units": [8], "linear_input": True},
    "ipnn": {"embedding_dim": 4, "hidden_units": [8, 8]},
    "kfm": {"embedding_dim": 4, "kernel_type": "mat", "kernel_l2": 1e-4},
    "kpnn": {"embedding_dim": 4, "hidden_units": [8], "adaptive_embedding": {"c": 1.0}},
    "lr": {},
    "nifm": {"embedding_dim": 4, "subnet_units": [6, 1]},
    "pin": {"embedding_dim": 4, "subnet_units": [6, 2], "hidden_units": [8]},
}


@dataclasses.dataclass
class TinySpec:
    vocabulary_sizes: list


def tiny_model(name: str, **overrides) -> keras.Model:
    return registry.build(name, TinySpec(VOCABULARY_SIZES), **{**TINY[name], **overrides})


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Global ids (field offset + local id) and labels."""
    rng = np.random.default_rng(seed)
    offsets = np.cumsum([0] + VOCABULARY_SIZES[:-1])
    local = rng.integers(0, VOCABULARY_SIZES, size=(BATCH, len(VOCABULARY_SIZES)))
    labels = rng.integers(0, 2, size=(BATCH, 1)).astype("float32")
    return (local + offsets).astype("int32"), labels


def predict(model, field_ids) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(field_ids))


def test_every_model_file_is_registered():
    files = {path.stem for path in (REPO_ROOT / "models").glob("*.py")}
    assert set(registry.MODELS) == set(TINY)
    assert set(registry.MODELS) <= files
    assert {cls.__name__ for cls in registry.MODELS.values()} == {
        "LR", "FM", "FFM", "KFM", "NIFM", "FNN", "CCPM", "AFM", "DeepFM", "IPNN", "KPNN", "PIN"}


@pytest.mark.parametrize("name", sorted(TINY))
def test_fit_step_output_and_save_load(name, tmp_path):
    model = tiny_model(name)
    field_ids, labels = batch()
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(field_ids, labels, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))
    logits = predict(model, field_ids)
    assert logits.shape == (BATCH, 1) and np.isfinite(logits).all()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(predict(loaded, field_ids), logits)
    assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize("name", sorted(TINY))
def test_config_is_the_constructor_arguments(name):
    config = tiny_model(name).get_config()
    expected = {"vocabulary_sizes", "name", "trainable", "dtype"} | set(
        registry.hyperparameters(name))
    assert set(config) == expected
    assert config["vocabulary_sizes"] == VOCABULARY_SIZES
    json.dumps(config)  # plain values only


@pytest.mark.parametrize("name", sorted(TINY))
def test_build_rejects_unknown_hyperparameter(name):
    with pytest.raises(ValueError, match=rf"model '{name}'.*'hiden_units'"):
        registry.build(name, TinySpec(VOCABULARY_SIZES), hiden_units=[8])


@pytest.mark.parametrize("name", sorted(TINY))
def test_compact_rows_give_the_same_logits(name):
    """The sparse runner feeds positions into the batch's unique ids and the matching rows:
    every model must read ids only through its SparseEmbedding layers."""
    model = tiny_model(name)
    field_ids, _ = batch(1)
    unique_ids, compact_ids = np.unique(field_ids, return_inverse=True)
    layers = sparse_embeddings(model)
    assert layers, "no SparseEmbedding found"
    with compact_rows(layers, [keras.ops.take(layer.embeddings, unique_ids, axis=0)
                               for layer in layers]):
        compact = predict(model, compact_ids.reshape(field_ids.shape).astype("int32"))
    assert all(layer.batch_rows is None for layer in layers)  # the hook is cleared on exit
    np.testing.assert_allclose(compact, predict(model, field_ids), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["deepfm", "afm"])
def test_training_flag_reaches_dropout_also_through_stateless_call(name):
    model = tiny_model(name, dropout_rate=0.5)
    field_ids, _ = batch()
    inference = predict(model, field_ids)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(field_ids, training=False)),
                                  inference)
    variables = (model.trainable_variables, model.non_trainable_variables)
    logits, _ = model.stateless_call(*variables, field_ids, training=True)
    assert np.abs(keras.ops.convert_to_numpy(logits) - inference).max() > 1e-6


def test_registry_errors_and_paper_defaults():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("fm")(type("Other", (), {}))
    with pytest.raises(ValueError, match="unknown model 'opnn'"):
        registry.build("opnn", TinySpec(VOCABULARY_SIZES))
    with pytest.raises(ValueError, match="vocabulary_sizes"):
        registry.MODELS["fm"](vocabulary_sizes=[3, 0])
    defaults = {name: registry.hyperparameters(name) for name in registry.MODELS}
    assert defaults["ipnn"]["hidden_units"] == [700] * 5 and defaults["ipnn"]["layer_norm"]
    assert defaults["fm"]["embedding_dim"] == defaults["kpnn"]["embedding_dim"] == 20
    assert defaults["ffm"]["embedding_dim"] == 4
    assert defaults["nifm"]["subnet_units"] == [40, 1]
    assert defaults["pin"]["subnet_units"] == [40, 5]
    assert defaults["ccpm"]["conv_layers"] == [[7, 256]]
    assert defaults["ccpm"]["hidden_units"] == [256] * 3
    assert (defaults["afm"]["temperature"], defaults["afm"]["attention_units"]) == (0.01, 32)
    assert defaults["kfm"]["kernel_type"] == defaults["kpnn"]["kernel_type"] == "vec"
    assert all("sparse_l2" in hparams for hparams in defaults.values())


def randomise(model, seed=0):
    """Non-trivial values everywhere (linear weights start at zero)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))


def copy_fm_tables(source, target):
    target.linear.weights_table.embeddings.assign(source.linear.weights_table.embeddings)
    target.linear.bias.assign(source.linear.bias)
    target.embedding.embeddings.assign(source.embedding.embeddings)


def brute_force_fm(fm, field_ids):
    weights = keras.ops.convert_to_numpy(fm.linear.weights_table.embeddings)[:, 0]
    table = keras.ops.convert_to_numpy(fm.embedding.embeddings)
    bias = float(keras.ops.convert_to_numpy(fm.linear.bias))
    logits = []
    for row in field_ids:
        pairs = sum(table[a] @ table[b] for n, a in enumerate(row) for b in row[n + 1:])
        logits.append(bias + weights[row].sum() + pairs)
    return np.array(logits)[:, None]


def test_fm_equals_brute_force_pairwise_sum():
    fm = tiny_model("fm")
    randomise(fm)
    field_ids, _ = batch()
    np.testing.assert_allclose(predict(fm, field_ids), brute_force_fm(fm, field_ids), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("kernel_type", ["mat", "vec", "num"])
def test_kfm_at_init_equals_fm(kernel_type):
    fm, kfm = tiny_model("fm"), tiny_model("kfm", kernel_type=kernel_type)
    randomise(fm)
    copy_fm_tables(fm, kfm)
    field_ids, _ = batch()
    np.testing.assert_allclose(predict(kfm, field_ids), predict(fm, field_ids), rtol=1e-5,
                               atol=1e-5)


def test_kfm_input_norm_and_init_sparse_are_the_authors_kaggle_kfm():
    """input_norm: tables read as if divided by sqrt(F), sparse L2 on the scaled rows;
    init_sparse: w ~ U(0, 1), v ~ U(0, 1/sqrt(k))."""
    kaggle = tiny_model("kfm", kernel_type="vec", input_norm=True, init_sparse=True,
                        sparse_l2=2e-5)
    plain = tiny_model("kfm", kernel_type="vec")
    field_ids, _ = batch()
    predict(kaggle, field_ids)
    weights = keras.ops.convert_to_numpy(kaggle.linear.weights_table.embeddings)
    table = keras.ops.convert_to_numpy(kaggle.embedding.embeddings)
    assert 0 <= weights.min() and weights.max() < 1 and weights.std() > 0.2
    assert 0 <= table.min() and table.max() < 1 / np.sqrt(TINY["kfm"]["embedding_dim"])
    scale = 1 / np.sqrt(len(VOCABULARY_SIZES))
    plain.linear.weights_table.embeddings.assign(weights * scale)
    plain.embedding.embeddings.assign(table * scale)
    np.testing.assert_allclose(predict(kaggle, field_ids), predict(plain, field_ids), rtol=1e-5,
                               atol=1e-5)
    assert [layer.sparse_l2 for layer in sparse_embeddings(kaggle)] == \
        pytest.approx([2e-5 * scale ** 2] * 2)


@pytest.mark.parametrize("kernel_type", ["mat", "vec", "num"])
def test_kfm_sums_the_kernel_products_of_every_pair(kernel_type, tmp_path):
    """KFM's summed kernel products (`vec`: no pair tensors) equal the per-pair layer's sum."""
    kfm = tiny_model("kfm", kernel_type=kernel_type)
    field_ids, _ = batch()
    predict(kfm, field_ids)
    randomise(kfm)
    embeddings = kfm.embedding(field_ids)
    pairs = keras.ops.convert_to_numpy(kfm.kernel_product(embeddings)).sum(axis=1, keepdims=True)
    linear = keras.ops.convert_to_numpy(kfm.linear(field_ids))
    np.testing.assert_allclose(predict(kfm, field_ids), linear + pairs, rtol=1e-5, atol=1e-5)
    kfm.save(tmp_path / "kfm.keras")
    np.testing.assert_array_equal(predict(keras.saving.load_model(tmp_path / "kfm.keras"),
                                          field_ids), predict(kfm, field_ids))


def test_adaptive_kfm_pads_fields_to_their_own_size():
    """Columns beyond k_i never matter, and at init KFM-mat is FM on the zero-padded vectors."""
    adaptive = {"c": 1.0, "max_dim": 3}  # sizes [5, 7, 3, ...] -> k_i = [2, 2, 1, ...]
    kfm = tiny_model("kfm", adaptive_embedding=adaptive)
    fm = tiny_model("fm")
    randomise(fm)
    copy_fm_tables(fm, kfm)
    field_ids, _ = batch()
    before = predict(kfm, field_ids)
    table = keras.ops.convert_to_numpy(kfm.embedding.embeddings).copy()
    field_of_row = np.repeat(np.arange(len(VOCABULARY_SIZES)), VOCABULARY_SIZES)
    padded = kfm.width_mask[field_of_row] == 0  # [n, K], the unused columns
    assert padded.any() and not padded.all()
    table[padded] = 99.0
    kfm.embedding.embeddings.assign(table)
    np.testing.assert_allclose(predict(kfm, field_ids), before, rtol=1e-5, atol=1e-5)
    table[padded] = 0.0
    fm.embedding.embeddings.assign(table)
    np.testing.assert_allclose(predict(fm, field_ids), before, rtol=1e-5, atol=1e-5)


def test_adaptive_nifm_ignores_columns_beyond_each_fields_size():
    nifm = tiny_model("nifm", adaptive_embedding={"c": 1.0, "max_dim": 3})
    field_ids, _ = batch()
    predict(nifm, field_ids)  # build
    randomise(nifm)  # nonzero sub-net outputs: the embeddings matter
    before = predict(nifm, field_ids)
    table = keras.ops.convert_to_numpy(nifm.embedding.embeddings).copy()
    field_of_row = np.repeat(np.arange(len(VOCABULARY_SIZES)), VOCABULARY_SIZES)
    padded = nifm.width_mask[field_of_row] == 0
    table[padded] = 99.0
    nifm.embedding.embeddings.assign(table)
    np.testing.assert_allclose(predict(nifm, field_ids), before, rtol=1e-5, atol=1e-5)
    table[~padded] += 1.0
    nifm.embedding.embeddings.assign(table)
    assert np.abs(predict(nifm, field_ids) - before).max() > 1e-3


@pytest.mark.parametrize("kernel_type", ["mat", "vec", "num"])
def test_kpnn_at_init_equals_ipnn(kernel_type):
    ipnn = tiny_model("ipnn")
    kpnn = tiny_model("kpnn", kernel_type=kernel_type, hidden_units=[8, 8],
                      adaptive_embedding=None)
    field_ids, _ = batch()
    predict(ipnn, field_ids), predict(kpnn, field_ids)  # build the MLPs
    randomise(ipnn)
    kpnn.embedding.embeddings.assign(ipnn.embedding.embeddings)
    kpnn.mlp.set_weights(ipnn.mlp.get_weights())
    np.testing.assert_allclose(predict(kpnn, field_ids), predict(ipnn, field_ids), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("use_linear", [True, False])
def test_ffm_equals_brute_force_field_aware_sum(use_linear):
    ffm = tiny_model("ffm", use_linear=use_linear)
    randomise(ffm)
    field_ids, _ = batch()
    num_fields, dim = len(VOCABULARY_SIZES), TINY["ffm"]["embedding_dim"]
    vectors = keras.ops.convert_to_numpy(ffm.embedding.embeddings).reshape(-1, num_fields, dim)
    expected = np.zeros((BATCH, 1))
    for example, row in enumerate(field_ids):
        for i in range(num_fields):
            for j in range(i + 1, num_fields):
                expected[example] += vectors[row[i], j] @ vectors[row[j], i]
    if use_linear:
        weights = keras.ops.convert_to_numpy(ffm.linear.weights_table.embeddings)[:, 0]
        expected += float(keras.ops.convert_to_numpy(ffm.linear.bias))
        expected += weights[field_ids].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(predict(ffm, field_ids), expected, rtol=1e-4, atol=1e-4)


def test_fnn_loads_a_trained_fm():
    fm, fnn = tiny_model("fm"), tiny_model("fnn")
    randomise(fm)
    fnn.load_fm(fm)
    for own, source in [(fnn.embedding, fm.embedding),
                        (fnn.linear_weights, fm.linear.weights_table)]:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(own.embeddings),
                                      keras.ops.convert_to_numpy(source.embeddings))
    with pytest.raises(ValueError, match="load_fm"):
        fnn.load_fm(tiny_model("fm", embedding_dim=5))


@pytest.mark.parametrize("name", ["nifm", "pin", "afm", "ccpm"])
def test_pairwise_and_conv_models_depend_on_every_field(name):
    """Changing one field's id changes the logit: no field is dropped by pair gathers or convs."""
    model = tiny_model(name)
    randomise(model)
    field_ids, _ = batch()
    base = predict(model, field_ids)
    for field in (0, len(VOCABULARY_SIZES) - 1):
        changed = field_ids.copy()
        offset = sum(VOCABULARY_SIZES[:field])
        changed[:, field] = offset + (changed[:, field] - offset + 1) % VOCABULARY_SIZES[field]
        assert np.abs(predict(model, changed) - base).max() > 1e-6


JAX_SMOKE = textwrap.dedent("""
    import json, numpy as np, keras
    import models
    from models import registry
    assert keras.backend.backend() == "jax"
    sizes = [5, 7, 3, 4, 6]
    ids = (np.random.default_rng(0).integers(0, 3, (4, 5)) + np.cumsum([0] + sizes[:-1]))
    runs = {"fm": {}, "ffm": {}, "ipnn": {"hidden_units": [8]},
            "kpnn": {"kernel_type": "vec", "hidden_units": [8]},
            "pin": {"subnet_units": [4, 2], "hidden_units": [8]}}
    shapes = {}
    for name, hparams in runs.items():
        model = registry.build(name, type("Spec", (), {"vocabulary_sizes": sizes}),
                               embedding_dim=4, **hparams)
        logits = keras.ops.convert_to_numpy(model(ids.astype("int32")))
        assert np.isfinite(logits).all(), name
        shapes[name] = list(logits.shape)
    print(json.dumps(shapes))
""")


def test_models_run_under_jax():
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", JAX_SMOKE], capture_output=True, text=True,
                            env=environment, cwd=REPO_ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    shapes = json.loads(result.stdout.strip().splitlines()[-1])
    assert shapes == {name: [4, 1] for name in ["fm", "ffm", "ipnn", "kpnn", "pin"]}


PLANTED_FIELDS, PLANTED_VALUES = 20, 6


def planted_interactions(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels from two XOR-like field pairs (0, 1) and (2, 3), a main effect of field 4 and 15
    noise fields: LR sees little, a pairwise model a lot. 20 fields (190 pairs) because the
    scale of a sum over pairs at initialisation grows with the number of pairs."""
    rng = np.random.default_rng(seed)
    half = np.repeat([-1.0, 1.0], PLANTED_VALUES // 2)
    signs = np.stack([np.random.default_rng(field).permutation(half)
                      for field in range(PLANTED_FIELDS)])
    local = rng.integers(PLANTED_VALUES, size=(rows, PLANTED_FIELDS))
    sign = signs[np.arange(5), local[:, :5]]  # [rows, 5]
    logit = 1.5 * (sign[:, 0] * sign[:, 1] + sign[:, 2] * sign[:, 3]) + 0.5 * sign[:, 4] - 1.0
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("float32")
    return (local + PLANTED_VALUES * np.arange(PLANTED_FIELDS)).astype("int32"), labels


def test_nifm_starts_as_lr_and_beats_lr_and_a_constant_on_planted_pairs():
    """NIFM once started at a logit std of sqrt(pairs) (19 at 39 fields) and ended far worse
    than a constant on the demo; the identities above never trained it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import OneHotEncoder

    (train_ids, train_labels), (valid_ids, valid_labels) = (planted_interactions(4000, 1),
                                                            planted_interactions(2000, 2))
    keras.utils.set_random_seed(0)
    model = registry.build("nifm", TinySpec([PLANTED_VALUES] * PLANTED_FIELDS),
                           embedding_dim=4, subnet_units=[8, 1])
    np.testing.assert_array_equal(predict(model, valid_ids), 0.0)  # LR with zero weights
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(train_ids, train_labels, batch_size=200, epochs=3, verbose=0)
    nifm = log_loss(valid_labels, keras.ops.convert_to_numpy(
        keras.ops.sigmoid(model.predict(valid_ids, verbose=0)))[:, 0])
    encoder = OneHotEncoder().fit(train_ids)
    lr = LogisticRegression(max_iter=1000).fit(encoder.transform(train_ids), train_labels)
    lr_loss = log_loss(valid_labels, lr.predict_proba(encoder.transform(valid_ids))[:, 1])
    constant = log_loss(valid_labels, np.full(len(valid_labels), train_labels.mean()))
    assert lr_loss > constant - 0.02  # the planted pairs are nearly invisible to LR
    assert nifm < lr_loss - 0.05, (nifm, lr_loss, constant)


def test_models_package_is_cheap_and_saved_models_load_with_keras_imported_first(tmp_path):
    """`import models` loads no Keras (GBDT and libFFM runs); once Keras is imported it
    registers every class, so a saved model loads without custom objects (here under JAX)."""
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)}
    cheap = ("import sys, models, models.train_report\n"
             "print(sorted({'keras', 'tensorflow', 'jax'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", cheap], capture_output=True, text=True,
                            env=environment, cwd=REPO_ROOT, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]
    path = tmp_path / "nifm.keras"
    model = tiny_model("nifm")
    field_ids, _ = batch()
    predict(model, field_ids)  # builds the weights
    randomise(model)  # its output kernel and linear weights start at zero
    expected = predict(model, field_ids)
    assert np.abs(expected).max() > 0.1
    model.save(path)
    np.save(tmp_path / "ids.npy", field_ids)
    load = textwrap.dedent(f"""
        import keras, numpy as np
        import models
        model = keras.saving.load_model({str(path)!r})
        ids = np.load({str(tmp_path / "ids.npy")!r})
        np.save({str(tmp_path / "logits.npy")!r}, keras.ops.convert_to_numpy(model(ids)))
        print(type(model).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True,
                            env=environment, cwd=REPO_ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "NIFM"
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-6)
