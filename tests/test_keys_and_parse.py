"""Golden values of the winners' keys, hashing, and the raw parser's handling of bad input."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from preprocessing import keys, parse, parse_kernels, schema
from preprocessing.split import Part, split_ranges
from tests.conftest import REPO_ROOT, raw_line

INTS = [1, -1, 3, None, 0, 2, 1000000, 7, 20, 55, 5, 0, 1]
CATS = [f"{value:08x}" for value in range(100, 126)]


@pytest.mark.parametrize("field, value, expected", [
    (0, 3, "I1-1"), (1, -1, "I2-SP-1"), (0, None, "I1-"), (0, 2, "I1-SP2"), (0, 0, "I1-SP0"),
    (4, 1_000_000, "I5-190"), (0, 10, "I1-5"), (0, 4, "I1-1"), (0, 16, "I1-7"),
])
def test_integer_keys_match_the_winners(field, value, expected):
    assert keys.key(field, keys.int_code(value)) == expected


def test_categorical_keys_and_rare_token():
    assert keys.key(13, 0x68fd1e64) == "C1-68fd1e64"
    assert keys.key(38, parse.CAT_MISSING) == "C26-"
    assert keys.rare_key(13) == "C1less"


def test_md5_hash_is_the_winners_scheme_and_in_range():
    text = "C9-a73ee510"
    expected = int(hashlib.md5(text.encode()).hexdigest(), 16) % 999_999 + 1
    assert keys.hash_key(text, "md5") == expected
    values = [keys.hash_key(f"C1-{i:08x}", "md5") for i in range(2000)]
    assert 1 <= min(values) and max(values) <= 999_999


def test_xxh64_hash_is_stable_across_processes():
    code = "from preprocessing import keys; print(keys.hash_key('I2-SP-1', 'xxh64'))"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=REPO_ROOT, env={"PYTHONHASHSEED": seed, "PATH": ""},
                              check=True).stdout for seed in ("1", "2")}
    assert outputs == {f"{keys.hash_key('I2-SP-1', 'xxh64')}\n"}


def parse_text(tmp_path, text: str, labelled=True, **options):
    path = tmp_path / "rows.txt"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    report = parse.ParseReport()
    chunks = list(parse.iter_chunks(path, labelled, report=report, **options))
    codes = np.concatenate([chunk.codes for chunk in chunks]) if chunks else np.empty((0, 39))
    return chunks, codes, report


def test_eight_char_values_are_hex_codes_or_fallbacks_at_every_alignment(tmp_path):
    """8-char values are decoded eight bytes at a time: only lowercase hex gives a hex code;
    characters next to the hex ranges, uppercase and non-ASCII take the fallback code."""
    rng = np.random.default_rng(11)
    alphabet = list("0123456789abcdef") + list("/:`gAF\xe9 ")
    rows = []
    for row in range(400):  # varying integer widths shift the categorical columns' alignment
        values = ["".join(rng.choice(alphabet, 8, p=None if rng.random() < 0.3 else
                                     [1 / 16] * 16 + [0] * 8)) for _ in range(26)]
        rows.append((values, [int(v) for v in rng.integers(0, 10 ** int(rng.integers(1, 6)), 13)]))
    text = "".join(raw_line(row % 2, ints, values) for row, (values, ints) in enumerate(rows))
    chunks, codes, _ = parse_text(tmp_path, text, block_bytes=4096)
    texts = {code: value for chunk in chunks for code, value in chunk.fallback_text.items()}
    for row, (values, _) in enumerate(rows):
        for field, value in enumerate(values):
            code = int(codes[row, 13 + field])
            if all(char in "0123456789abcdef" for char in value):
                assert code == int(value, 16)
            else:
                assert code & parse.FALLBACK_BIT and texts[code] == value


def test_parser_codes_match_the_key_rules(tmp_path):
    chunks, codes, _ = parse_text(tmp_path, raw_line(1, INTS, CATS))
    assert [keys.key(field, codes[0, field]) for field in range(3)] == ["I1-SP1", "I2-SP-1", "I3-1"]
    assert keys.key(3, codes[0, 3]) == "I4-"
    assert keys.key(6, codes[0, 6]) == "I7-190"
    assert codes[0, 13] == 100 and codes[0, 38] == 125
    assert chunks[0].labels.tolist() == [1]
    np.testing.assert_array_equal(chunks[0].ints[0, :3], [1, -1, 3])
    assert np.isnan(chunks[0].ints[0, 3])


def test_kernels_parse_a_byte_buffer_alone():
    """The kernels need no file: codes, a status and a column per line of a byte buffer."""
    trimmed = raw_line(0, INTS, CATS[:20] + [None] * 6).rstrip("\n").rstrip("\t") + "\n"
    text = raw_line(1, INTS, CATS) + raw_line(2, INTS, CATS) + trimmed
    data = np.frombuffer(text.encode(), dtype=np.uint8)
    ends = parse_kernels.line_ends(data)
    rows = len(ends)
    codes, ints = np.empty((rows, 39), np.int64), np.empty((rows, 13), np.float32)
    labels, status = np.zeros(rows, np.uint8), np.empty(rows, np.int32)
    columns, fallback = np.empty(rows, np.int32), np.empty(rows, np.bool_)
    parse_kernels.parse_block(data, ends, True, codes, ints, labels, status, columns, fallback)
    assert status.tolist() == [parse_kernels.OK, parse_kernels.BAD_LABEL, parse_kernels.PADDED]
    assert columns[1] == 0 and columns[2] == 1 + 13 + 20
    assert labels[0] == 1 and codes[0, 13] == 100 and codes[0, 38] == 125
    assert codes[2, 38] == parse_kernels.CAT_MISSING and not fallback.any()


def test_crlf_and_missing_final_newline_parse_like_lf(tmp_path):
    lines = [raw_line(0, INTS, CATS), raw_line(1, INTS[::-1], CATS[::-1])]
    _, expected, _ = parse_text(tmp_path, "".join(lines))
    _, crlf, _ = parse_text(tmp_path, "".join(line.replace("\n", "\r\n") for line in lines))
    _, no_final, _ = parse_text(tmp_path, "".join(lines).rstrip("\n"))
    np.testing.assert_array_equal(crlf, expected)
    np.testing.assert_array_equal(no_final, expected)


def test_trimmed_trailing_fields_are_padded_and_counted(tmp_path):
    full = raw_line(1, INTS, CATS[:20] + [None] * 6)
    trimmed = full.rstrip("\n").rstrip("\t") + "\n"
    _, codes, report = parse_text(tmp_path, full + trimmed)
    np.testing.assert_array_equal(codes[0], codes[1])
    assert report.padded_rows == 1 and "rows.txt:2" in report.first_problems[0]


@pytest.mark.parametrize("line, message", [
    (raw_line(1, INTS, CATS).replace("\n", "\textra\n"), "rows.txt:2: more than 40"),
    (raw_line(1, ["x1"] + INTS[1:], CATS), "rows.txt:2: field I1: not an integer"),
    (raw_line(1, INTS[:4] + ["1.5"] + INTS[5:], CATS), "rows.txt:2: field I5: not an integer"),
    (raw_line(2, INTS, CATS), "rows.txt:2: field Label: label is not 0 or 1"),
    ("\n", "rows.txt:2: empty line"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, line, message):
    text = raw_line(0, INTS, CATS) + line + raw_line(0, INTS, CATS)
    with pytest.raises(parse.BadRowError, match=message):
        parse_text(tmp_path, text)
    _, codes, report = parse_text(tmp_path, text, on_bad_row="skip")
    assert len(codes) == 2 and report.skipped_rows == 1 and message in report.first_problems[0]


def test_non_hex_categoricals_keep_their_text(tmp_path):
    chunks, codes, _ = parse_text(tmp_path, raw_line(0, INTS, ["hello"] + CATS[1:]))
    assert codes[0, 13] & parse.FALLBACK_BIT
    assert keys.key(13, codes[0, 13], chunks[0].fallback_text) == "C1-hello"


def test_blocks_and_row_windows_do_not_change_results(tmp_path):
    rng = np.random.default_rng(0)
    lines = "".join(raw_line(int(rng.integers(2)), [int(v) for v in rng.integers(-2, 99, 13)],
                             CATS) for _ in range(300))
    _, whole, _ = parse_text(tmp_path, lines)
    chunks, small_blocks, _ = parse_text(tmp_path, lines, block_bytes=1000)
    assert len(chunks) > 10
    np.testing.assert_array_equal(small_blocks, whole)
    window, windowed, _ = parse_text(tmp_path, lines, block_bytes=1000, start_row=17, stop_row=230)
    np.testing.assert_array_equal(windowed, whole[17:230])
    assert window[0].first_row == 17


def test_count_lines(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("a\nb\nc")
    assert parse.count_lines(path) == 3
    path.write_text("a\nb\n")
    assert parse.count_lines(path) == 2


def test_split_is_time_ordered_with_the_last_seventh_for_validation():
    ranges = split_ranges(700, 100, 1 / 7)
    assert ranges["train"] == [Part("train.txt", 0, 600)]
    assert ranges["valid"] == [Part("train.txt", 600, 700)]
    assert ranges["test"] == [Part("test.txt", 0, 100)]
    (valid,) = split_ranges(schema.FULL_TRAIN_ROWS, schema.FULL_TEST_ROWS, 1 / 7)["valid"]
    assert valid.stop - valid.start == 6_548_660
    with pytest.raises(ValueError, match="valid_fraction"):
        split_ranges(700, 100, 1.5)
    with pytest.raises(ValueError, match="at least one"):
        split_ranges(3, 1, 0.01)


def test_integer_codes_match_the_formula_below_and_above_the_lookup_table(tmp_path):
    values = list(range(-3, 300)) + list(range(16_000, 16_800, 7)) + [10**9, 2**40]
    lines = "".join(raw_line(0, [value] + INTS[1:], CATS) for value in values)
    _, codes, _ = parse_text(tmp_path, lines)
    assert codes[:, 0].tolist() == [keys.int_code(value) for value in values]


def test_categorical_fast_path_and_fallbacks_give_distinct_codes(tmp_path):
    texts = ["0000000a", "0000000A", "abc", "0000000a0", "zzzzzzzz", "ffffffff"]
    lines = "".join(raw_line(0, INTS, [text] + CATS[1:]) for text in texts)
    chunks, codes, _ = parse_text(tmp_path, lines)
    column = codes[:, 13].tolist()
    assert column[0] == 10 and column[5] == 0xFFFFFFFF
    assert all(code & parse.FALLBACK_BIT for code in column[1:5])
    assert len(set(column)) == len(texts)
    assert {chunks[0].fallback_text[code] for code in column[1:5]} == set(texts[1:5])


def test_reused_arrays_give_the_rows_fresh_arrays_give(tmp_path):
    """With reuse_arrays every block overwrites the previous one's arrays: missing and padded
    integers must still read NaN where an earlier block had numbers."""
    full = raw_line(1, INTS, CATS)
    missing = raw_line(0, [None] * 13, [None] * 26)
    padded = "1\t5\t6\n"  # trailing empty fields trimmed
    path = tmp_path / "rows.txt"
    path.write_text(full * 5 + missing + full * 3 + padded + full)
    fresh = [(c.codes.copy(), c.ints.copy(), c.labels.copy())
             for c in parse.iter_chunks(path, True, block_bytes=600)]
    reused = [(c.codes.copy(), c.ints.copy(), c.labels.copy())
              for c in parse.iter_chunks(path, True, block_bytes=600, reuse_arrays=True)]
    assert len(fresh) > 3
    for expected, got in zip(fresh, reused, strict=True):
        for expected_array, got_array in zip(expected, got):
            np.testing.assert_array_equal(got_array, expected_array)
    ints = np.concatenate([ints for _, ints, _ in reused])
    assert np.isnan(ints[5]).all() and np.isnan(ints[9, 2:]).all() and ints[9, 1] == 6


@pytest.mark.parametrize("mode", ["xxh64", "md5"])
def test_vectorised_hashes_equal_the_hash_of_each_key(mode):
    rng = np.random.default_rng(3)
    fallback = parse.FALLBACK_BIT | 12345
    codes = np.concatenate([rng.integers(0, 1 << 32, 500), [0, (1 << 32) - 1],
                            [parse.CAT_MISSING, fallback]])
    texts = {fallback: "not-hex"}
    expected = [keys.hash_key(keys.key(20, int(code), texts), mode) for code in codes]
    assert keys.hash_codes(20, codes, mode, 1_000_000, texts).tolist() == expected
    int_codes = np.array([keys.int_code(value) for value in (None, -1, 2, 3, 10 ** 6)])
    assert keys.hash_codes(1, int_codes, mode, 1_000_000, {}).tolist() == \
        [keys.hash_key(keys.key(1, int(code)), mode) for code in int_codes]


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    import gzip

    path = tmp_path / "day_0.gz"
    text = "".join(raw_line(1, INTS, CATS) for _ in range(2000)).encode()
    path.write_bytes(gzip.compress(text)[:-2000])  # a download cut short
    with pytest.raises(parse.BadRowError, match=r"day_0\.gz: corrupt or truncated gzip"):
        sum(chunk.rows for chunk in parse.iter_chunks(path, True, block_bytes=1 << 12))
    path.write_bytes(b"not gzip at all")
    with pytest.raises(parse.BadRowError, match="corrupt or truncated gzip"):
        list(parse.iter_chunks(path, True))

