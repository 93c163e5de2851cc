"""The numba hash tables of stages 02-03, the block reader of the parser and the .npy writer."""

import numpy as np
import pytest

from preprocessing import parse, parse_kernels
from preprocessing.hashtable import CodeTable, FieldTables

RARE_ID, UNSEEN_ID = 1, 0


def test_code_table_counts_like_numpy_unique_across_growth():
    codes = np.random.default_rng(0).zipf(1.3, 300_000).astype(np.int64) - 5
    table = CodeTable()
    for part in np.array_split(codes, 7):
        table.count(part)
    keys, counts = table.items()
    expected_keys, expected_counts = np.unique(codes, return_counts=True)
    np.testing.assert_array_equal(keys, expected_keys)
    np.testing.assert_array_equal(counts, expected_counts)


@pytest.fixture
def tables():
    # field 0: frequent 10 -> 2, 20 -> 3, rare 30; field 1: frequent 10 -> 5, rare 40 and 50
    return FieldTables([(np.array([10, 20]), np.array([2, 3])), (np.array([10]), np.array([5]))],
                       [np.array([30]), np.array([40, 50])])


def test_field_tables_map_frequent_rare_and_unseen_codes(tables):
    codes = np.array([[10, 10], [30, 40], [99, 99], [20, 50]], dtype=np.int64)
    ids = tables.lookup_rows(codes, offsets=[0, 100], seen_rows=0, rare_id=RARE_ID,
                             unseen_id=UNSEEN_ID)
    np.testing.assert_array_equal(ids, [[2, 105], [1, 101], [0, 100], [3, 101]])
    assert ids.dtype == np.int32


def test_training_rows_never_get_the_unseen_id(tables):
    """Every value of a training row was counted, so a code missing from a table is rare."""
    codes = np.array([[99, 99], [99, 99], [99, 10]], dtype=np.int64)
    ids = tables.lookup_rows(codes, offsets=[0, 100], seen_rows=2, rare_id=RARE_ID,
                             unseen_id=UNSEEN_ID)
    np.testing.assert_array_equal(ids, [[1, 101], [1, 101], [0, 105]])


def test_large_tables_map_like_a_dictionary():
    """Tables from _LARGE_TABLE slots up take the prefetching path of the lookup."""
    rng = np.random.default_rng(1)
    codes = rng.choice(1 << 40, 30_000, replace=False)
    frequent, rare = codes[:20_000], codes[20_000:25_000]
    ids = rng.permutation(20_000) + 2
    tables = FieldTables([(frequent, ids), (np.array([7]), np.array([2]))],
                         [rare, np.array([], dtype=np.int64)])
    assert tables.large_fields.tolist() == [0]
    rows = np.stack([rng.choice(codes, 5000), rng.choice([7, 8], 5000)], axis=1)
    got = tables.lookup_rows(rows, offsets=[0, 10**6], seen_rows=1000, rare_id=RARE_ID,
                             unseen_id=UNSEEN_ID)
    maps = [(dict(zip(frequent.tolist(), ids.tolist())), set(rare.tolist()), 0), ({7: 2}, set(), 10**6)]

    def expected_id(row: int, field: int) -> int:
        id_of, rare_set, offset = maps[field]
        code = int(rows[row, field])
        unseen = row >= 1000 and code not in rare_set
        return offset + id_of.get(code, UNSEEN_ID if unseen else RARE_ID)

    expected = [[expected_id(row, field) for field in (0, 1)] for row in range(len(rows))]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["rows.txt", "rows.txt.gz"])
@pytest.mark.parametrize("seed", range(5))
def test_blocks_hold_whole_lines_for_any_block_size(tmp_path, seed, name):
    """Blocks come from two alternating buffers, the next one read in the background; lines may
    be longer than a buffer; a .gz file's reads return less than asked."""
    import gzip

    rng = np.random.default_rng(seed)
    for _ in range(40):
        lines = ["x" * rng.integers(0, 30) for _ in range(rng.integers(0, 20))]
        text = "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")
        path = tmp_path / name
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
        blocks = [bytes(block) for block in parse._iter_blocks(path, int(rng.integers(1, 40)))]
        assert all(block.endswith(b"\n") for block in blocks)
        expected = text if not text or text.endswith("\n") else text + "\n"
        assert b"".join(blocks) == expected.encode()


def test_line_ends_match_numpy():
    data = np.frombuffer(b"a\nbb\n\nccc\n", dtype=np.uint8)
    np.testing.assert_array_equal(parse_kernels.line_ends(data), np.flatnonzero(data == 10))
    assert len(parse_kernels.line_ends(data[:0])) == 0


@pytest.mark.parametrize("length", [1, 7, 8, 9, 63, 64, 65, 1000, 10_007])
def test_line_ends_match_numpy_for_any_length_and_density(length):
    """Eight bytes at a time and per segment: every length modulo 8, newlines at segment edges."""
    rng = np.random.default_rng(length)
    for density in (0.0, 0.02, 0.5, 1.0):
        data = np.where(rng.random(length) < density, 10,
                        rng.integers(0, 256, length)).astype(np.uint8)
        np.testing.assert_array_equal(parse_kernels.line_ends(data), np.flatnonzero(data == 10))


def test_npy_writer_appends_rows_and_syncs_in_the_background(tmp_path, monkeypatch):
    from preprocessing import npy

    monkeypatch.setattr(npy, "SYNC_BYTES", 1000)  # a background sync every few appends
    path = tmp_path / "rows.npy"
    writer = npy.NpyWriter(path, np.int32, (3,))
    for value in range(50):
        writer.append(np.full((100, 3), value, dtype=np.int64))  # cast to int32
    assert writer.syncer is not None
    assert writer.close() == 5000
    rows = np.load(path, mmap_mode="r")
    assert rows.shape == (5000, 3) and rows.dtype == np.int32
    np.testing.assert_array_equal(rows[::100, 0], np.arange(50))
    with pytest.raises(ValueError, match="rows of shape"):
        npy.NpyWriter(tmp_path / "other.npy", np.int32, (3,)).append(np.zeros((2, 4)))
