"""Synthetic Criteo: raw Kaggle-format train.txt/test.txt with labels drawn from a planted model.

`generate(out_dir, train_rows, test_rows, seed)` writes into `out_dir`:
* `train.txt` (label, I1..I13, C1..C26) and `test.txt` (no label): TSV, no header, '\n' line ends,
  integers in decimal, categoricals as 8 lowercase hex digits, empty = missing;
* `train.truth.npy`, `test.truth.npy`: float32 [rows], the true click probability of every row;
* `truth.json`: the planted structure, the sizes and seed, the realised click rate and the
  Bayes-optimal logloss/AUC (the truth as the prediction) on train and on its last 1/7 (valid).

The data is shaped like the real files (laws.py holds the fitted constants):
* Categorical values follow a two-piece Zipf-Mandelbrot law per field (a head of the values that
  are frequent at full scale and a thinner long tail), fitted so that at 45,840,617 rows the
  expected raw distinct count and the count of values seen >= 10 times match the real data, and
  the most common value's share matches the real sample. Smaller files are draws from the same
  law, so their vocabularies shrink the way a prefix of the real file's would.
* Integers come from per-field distributions measured on the real sample (exact small values,
  log-quantiles above), linked across fields by a shared row-level "activity" draw.
* Missing values follow the nested groups seen in the real sample (e.g. I1 and I10 are missing
  together; a row missing I5 also misses I1, I6, I10 and I12).
* Row order is time: train rows span 7 "days", test rows an 8th. Value popularity drifts
  (ranks reshuffle within each octave of the popularity order), as do per-value weights and the
  base rate.

The label of a row is Bernoulli(sigmoid(logit)), logit = bias(day) + first-order weights of
every field + field-aware pairwise terms on a sparse set of field pairs (the structure FFM and KFM
assume) + a few 3-way products (planted.py). All randomness comes from hashing (seed, file,
stream, row index), so the output does not depend on `chunk_rows` or threads, and the same seed
and sizes give byte-identical files.

Modules: laws (the fitted constants, pure data), distributions (the laws as probabilities and
inverse CDFs), planted (the label model and the true click probability), kernels (the numba
kernels that draw and format rows), bayes (the Bayes scores), writer (the files, `generate`),
__main__ (the command line):

    python -m preprocessing.synthetic --out DIR --train-rows N --test-rows M [--seed S]
"""

from preprocessing.synthetic.bayes import describe
from preprocessing.synthetic.kernels import format_rows
from preprocessing.synthetic.writer import DEFAULT_CHUNK_ROWS, DEFAULT_SEED, generate

__all__ = ["DEFAULT_CHUNK_ROWS", "DEFAULT_SEED", "describe", "format_rows", "generate"]
