"""libFFM-algorithm FFM: `python -m models.libffm --tag TAG --model libffm|libffm_winners`.

A reimplementation of what libffm 1.13 (Juan et al. 2016; the winners' master pipeline) computes,
in numba:
- model: phi(x) = sum_{a<b} <w[j_a, f_b], w[j_b, f_a]> v_a v_b r, field-aware pairwise terms only
  (no linear term, no bias); p = sigmoid(phi); r = 1/||x||^2 (instance normalisation; 1/F for
  one-hot rows), times `normalization_scale` (the winners' competition solver: 2/F);
- init w ~ (init_scale / sqrt(k)) U[0, 1), AdaGrad accumulators G = 1;
- per instance, in a new random order each epoch: kappa = dloss/dphi = -y / (1 + exp(y phi)),
  y in {-1, 1}; for every pair and d: g1 = lambda w1 + kappa v w2, g2 = lambda w2 + kappa v w1
  (L2 inside each pair's gradient, both from the old values), G += g^2, w -= eta g / sqrt(G);
- lock-free multi-threaded updates (Hogwild, like libffm's OpenMP loop): `numba.prange` over the
  epoch's order, `nogil`, no atomics. Runs with more than one thread are not bit-reproducible
  (neither is libffm); `threads: 1` is;
- `auto_stop` (libffm --auto-stop): stop at the first epoch whose validation logloss rises and
  keep the previous epoch's weights; otherwise a fixed number of epochs (the winners: 18).

Inputs (`data.stage`, `data.format`): the field files (`03_hash`: 39 fields, `04_leaves`: 69 with
the GBDT leaf fields) read as int32 memmaps, the fast path; or libFFM text (`04_export/*.ffm`,
`04_leaves/*.ffm`), parsed once in parallel parts into binary files and streamed from them: a file
of one `f:id:1` per field in field order (stage 04's exports) becomes field rows like the field
files, any other libFFM file CSR rows.
Neither is ever loaded whole: an epoch reads `shuffle_block_rows` contiguous rows at a time (block
order and rows within a block shuffled; 0 = one uniform permutation over the memmap, libffm's
order, fast only when the file fits in the page cache). The model state, n·m·k weights and as
many AdaGrad accumulators in float32 (interleaved like libffm's), is the only large allocation;
`auto_stop` keeps the previous epoch's weights on disk (`model.npy`), not in RAM.

`train.engine: binary` runs the real `ffm-train`/`ffm-predict` (from PATH) on the same text files.

Outputs `artifacts/<TAG>/05_train/<ID>/`: what the publisher writes for every learner
(`models/learner.py`; history.csv has one row per epoch) and model.npy (weights float32 [n, m, k];
`model.txt` for the binary engine).

Modules: `config` (the YAML's dataclasses), `rows` (row sources; libFFM text -> binary),
`kernels` and `intrinsics` (numba), `trainer` (the numba engine), `binary` (the ffm-train engine),
`learner` (the stage, its fit and the tuning trial).
"""

from __future__ import annotations

from models.cli import learner_main
from models.libffm.learner import LEARNER


def main(argv=None) -> None:
    learner_main(__doc__, LEARNER, argv, prog="python -m models.libffm")
