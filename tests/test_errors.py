"""Known failures end in one `error: ...` line naming the user's file (line, field) and what to do,
exit status 2; unexpected errors keep their traceback (pipeline/errors.py, pipeline/main.py)."""

import contextlib
import errno
import gzip
import os
import pathlib
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from preprocessing import npy, raw, schema
from pipeline import errors, registry
from pipeline import main as stages_main
from pipeline.paths import stage_dir
from tests.conftest import REPO_ROOT, error_message, run_stages, write_raw


def run_script(artifacts, script, *options, **environment):
    """Runs `stages/<script>.sh` as ./run.sh does (tag t)."""
    env = {**os.environ, "CRITEO_PNN_ARTIFACTS": str(artifacts), "PYTHON": sys.executable,
           "PYTHONPATH": str(REPO_ROOT), "TQDM_DISABLE": "1", **environment}
    if "CRITEO_PNN_DEBUG" not in environment:
        env.pop("CRITEO_PNN_DEBUG", None)
    return subprocess.run(["bash", str(REPO_ROOT / "stages" / f"{script}.sh"), "--tag", "t",
                           *options], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def data_option(directory):
    return ("--set", f"raw.data_dir={directory}")


def data_folder(tmp_path, train_rows=200, name="data"):
    folder = tmp_path / name
    folder.mkdir()
    write_raw(folder / "train.txt", train_rows, labelled=True, seed=1)
    write_raw(folder / "test.txt", 30, labelled=False, seed=2)
    return folder


def test_truncated_train_txt_gz_is_named(artifacts, tmp_path):
    data = data_folder(tmp_path, train_rows=2000)
    packed = gzip.compress((data / "train.txt").read_bytes())
    (data / "train.txt").unlink()
    (data / "train.txt.gz").write_bytes(packed[:len(packed) // 2])
    message = error_message(run_script(artifacts, "00_raw", *data_option(data)))
    assert f"{data / 'train.txt.gz'}: corrupt or truncated gzip" in message
    assert "gzip -t" in message
    assert not stage_dir("t", "00_raw").exists()


def test_truncated_dac_tar_gz_is_named(artifacts, tmp_path):
    data = data_folder(tmp_path, train_rows=2000)
    with tarfile.open(tmp_path / "full.tar.gz", "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(data / f"{split}.txt", arcname=f"{split}.txt")
    for split in ("train", "test"):
        (data / f"{split}.txt").unlink()
    packed = (tmp_path / "full.tar.gz").read_bytes()
    (data / "dac.tar.gz").write_bytes(packed[:len(packed) // 2])
    message = error_message(run_script(artifacts, "00_raw", *data_option(data)))
    assert f"{data / 'dac.tar.gz'}: corrupt or truncated" in message


def write_kaggle_csv(source, target, header, first_id, extra_at=None, repeat=1):
    lines = source.read_text().splitlines() * repeat
    rows = [f"{first_id + index}," + line.replace("\t", ",") for index, line in enumerate(lines)]
    if extra_at is not None:
        rows[extra_at] += ",0"
    target.write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")


def test_kaggle_csv_row_with_42_columns_names_file_and_line(artifacts, tmp_path):
    data = data_folder(tmp_path)
    write_kaggle_csv(data / "train.txt", data / "train.csv", schema.CSV_TRAIN_HEADER,
                     schema.TRAIN_ID_START, extra_at=20)  # line 22 (after the header)
    write_kaggle_csv(data / "test.txt", data / "test.csv", schema.CSV_TEST_HEADER,
                     schema.TEST_ID_START)
    for split in ("train", "test"):
        (data / f"{split}.txt").unlink()
    message = error_message(run_script(artifacts, "00_raw", *data_option(data)))
    assert f"{data / 'train.csv'}:22: 42 comma-separated columns, expected 41" in message


def test_kaggle_csv_bad_row_beyond_the_first_block_names_its_line(tmp_path):
    """Arrow reads blocks of 16 MB: a bad row later in the file fails while iterating."""
    write_raw(tmp_path / "rows.txt", 100, labelled=True)
    source = tmp_path / "train.csv"
    write_kaggle_csv(tmp_path / "rows.txt", source, schema.CSV_TRAIN_HEADER,
                     schema.TRAIN_ID_START, extra_at=79_000, repeat=800)  # ~19 MB
    assert source.stat().st_size > 16 << 20
    with pytest.raises(errors.InputError,
                       match=re.escape(f"{source}:79002: 42 comma-separated columns, expected 41")):
        raw.convert_kaggle_csv(source, "train", tmp_path / "out.txt")


def test_kaggle_csv_row_with_too_few_columns(tmp_path):
    write_raw(tmp_path / "rows.txt", 10, labelled=False)
    source = tmp_path / "test.csv"
    write_kaggle_csv(tmp_path / "rows.txt", source, schema.CSV_TEST_HEADER, schema.TEST_ID_START)
    lines = source.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0]
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(errors.InputError,
                       match=re.escape(f"{source}:5: 39 comma-separated columns, expected 40")):
        raw.convert_kaggle_csv(source, "test", tmp_path / "out.txt")


def test_truncated_kaggle_csv_gz_names_the_file(tmp_path):
    write_raw(tmp_path / "rows.txt", 400, labelled=True)
    write_kaggle_csv(tmp_path / "rows.txt", tmp_path / "train.csv", schema.CSV_TRAIN_HEADER,
                     schema.TRAIN_ID_START)
    packed = gzip.compress((tmp_path / "train.csv").read_bytes())
    source = tmp_path / "train.csv.gz"
    source.write_bytes(packed[:len(packed) // 2])
    with pytest.raises(errors.InputError, match=re.escape(f"{source}: corrupt or truncated")):
        raw.convert_kaggle_csv(source, "train", tmp_path / "out.txt")

    def arrow_directly():  # Arrow's own OSError outside stage 00's checks: unexpected, traceback
        import pyarrow.csv
        pyarrow.csv.read_csv(source)

    with pytest.raises(OSError):
        errors.run(arrow_directly)


def test_empty_train_txt_names_the_users_file(artifacts, tmp_path):
    data = data_folder(tmp_path)
    (data / "train.txt").write_text("")
    message = error_message(run_script(artifacts, "00_raw", *data_option(data)))
    assert f"error: {data / 'train.txt'}: empty file" in message


def test_swapped_file_in_an_archive_names_the_archive_member(tmp_path):
    write_raw(tmp_path / "train.txt", 5, labelled=False)
    write_raw(tmp_path / "test.txt", 5, labelled=False)
    with tarfile.open(tmp_path / "dac.tar.gz", "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tmp_path / f"{split}.txt", arcname=f"{split}.txt")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(errors.InputError, match=re.escape(
            f"{tmp_path / 'dac.tar.gz'} (train.txt):1: 39 columns and no 0/1 label")):
        raw.build_real({"train": tmp_path / "dac.tar.gz", "test": tmp_path / "dac.tar.gz"},
                       raw.settings.PipelineConfig(), out)


def test_config_errors_are_one_line(artifacts, tmp_path):
    message = error_message(run_script(artifacts, "00_raw", "--set", "hash.nope=1"))
    assert "config.hash: unknown key(s) ['nope']" in message
    message = error_message(run_script(artifacts, "00_raw", "--set", "count.max_bins=1"))
    assert "config.count.max_bins: 1; null or 2 .. 2^32" in message
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("hash:\n  mode: md5\n - oops\n")
    message = error_message(run_script(artifacts, "00_raw", "--config", str(overlay)))
    assert message.startswith(f"error: {overlay}:3:2: ") and "fix the YAML syntax" in message
    message = error_message(run_script(artifacts, "00_raw", "--config", str(tmp_path / "no.yaml")))
    assert f"error: {tmp_path / 'no.yaml'}: no such file or folder" in message


def test_stage_without_its_input_says_so(artifacts):
    message = error_message(run_script(artifacts, "01_split"))
    assert "cannot run: input stage(s) not built: 00_raw" in message


def test_unexpected_errors_keep_their_traceback_and_debug_shows_known_ones(capsys, monkeypatch):
    def broken(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        errors.run(broken, [])

    def bad_input(argv):
        raise errors.InputError("x.txt:3: field I2: not an integer")

    monkeypatch.delenv("CRITEO_PNN_DEBUG", raising=False)
    assert errors.run(bad_input, []) == 2
    assert capsys.readouterr().err == "error: x.txt:3: field I2: not an integer\n"
    monkeypatch.setenv("CRITEO_PNN_DEBUG", "1")
    assert errors.run(bad_input, []) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: x.txt:3: field I2: not an integer\n")
    assert errors.run(lambda: 3) == 3 and errors.run(lambda: None) == 0

    def stage_file_gone(path):
        open(path)  # a stage's own file missing under the artifacts tree: a bug, traceback

    with pytest.raises(FileNotFoundError):
        errors.run(stage_file_gone, errors.artifacts_root() / "t" / "03_hash" / "x.npy")

    def missing_with_a_message():
        raise FileNotFoundError("03_hash/train.fields.npy: missing; run stage 03")

    capsys.readouterr()
    assert errors.run(missing_with_a_message) == 2
    assert capsys.readouterr().err.endswith("error: 03_hash/train.fields.npy: missing; run "
                                            "stage 03\n")


def test_every_stage_script_runs_its_registry_module_under_the_handler():
    for entry in registry.STAGES:
        text = entry.script.read_text()
        assert f'exec "${{PYTHON:-python}}" -m pipeline.main {entry.module} "$@"' in text, \
            entry.folder
        assert "# Reads:" in text and "# Writes:" in text, entry.folder
    assert stages_main.main([]) == 2


# Disk full and read-only folders: a real tmpfs where mounting is permitted (root, not in a
# restricted container), else skipped; the same paths with the OSError injected always run.

@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def mount(name, size="1m", read_only=False):
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        if read_only:
            done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
            if done.returncode != 0:
                pytest.skip(f"cannot remount a tmpfs read-only: {done.stderr.decode().strip()}")
        return folder

    yield mount
    for folder in mounted:  # lazily: a file a failed test left open must not keep it mounted
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


def test_disk_full_at_stage_00_names_the_output_and_free_space(tmp_path, tmpfs):
    data = data_folder(tmp_path, train_rows=6000)  # ~1.5 MB of text
    with open(data / "train.txt", "rb") as source, gzip.open(data / "train.txt.gz", "wb") as out:
        out.write(source.read())
    (data / "train.txt").unlink()
    small = tmpfs("small")
    message = error_message(run_script(small, "00_raw", *data_option(data)))
    assert f"{small / 't' / '00_raw' / 'train.txt'}: no space left on device" in message
    assert re.search(r"\(\d+(\.\d)? [KM]?B free there\)", message), message
    assert "--artifacts DIR" in message
    assert not any((small / "t").iterdir())  # the partial output is removed


def test_disk_full_at_stage_03_names_the_field_file(tmp_path, tmpfs):
    data = data_folder(tmp_path, train_rows=8000)  # 00 links it; 03 writes ~1.4 MB of ids
    small = tmpfs("small")
    for script in ("00_raw", "01_split", "02_count"):
        done = run_script(small, script, *data_option(data))
        assert done.returncode == 0, done.stderr[-3000:]
    message = error_message(run_script(small, "03_hash", *data_option(data)))
    assert re.search(rf"error: {small / 't' / '03_hash'}/\w+\.fields\.npy: no space left on "
                     rf"device while writing it after [\d.]+ KB of it \(0 B free there\)",
                     message), message
    assert sorted(path.name for path in (small / "t").iterdir()) == \
        ["00_raw", "01_split", "02_count"]


def test_npy_writer_on_a_full_disk_names_the_file(tmpfs):
    small = tmpfs("small")
    writer = npy.NpyWriter(small / "x.npy", "int32", (39,))
    with pytest.raises(errors.PipelineError) as caught:
        for _ in range(100):
            writer.append(np.zeros((1000, 39), "int32"))
    with contextlib.suppress(errors.PipelineError):  # closes the file, even if a flush fails
        writer.close()
    assert writer.handle.closed
    message = str(caught.value)
    assert message.startswith(f"{small / 'x.npy'}: no space left on device while writing it "
                              f"after 1.0 MB of it (0 B free there)"), message


def test_npy_writer_raises_what_the_background_sync_found(tmp_path, monkeypatch):
    """Writeback can find the disk full only at fdatasync, in the syncing thread: the writer
    raises it at its next append (before, the thread printed it and the file looked complete)."""
    def full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(npy, "SYNC_BYTES", 1)
    monkeypatch.setattr(npy.os, "fdatasync", full)
    writer = npy.NpyWriter(tmp_path / "x.npy", "int64")
    writer.append(np.arange(10))
    writer.syncer.join()
    with pytest.raises(errors.PipelineError, match=re.escape(
            f"{tmp_path / 'x.npy'}: no space left on device while writing it after")):
        writer.append(np.arange(10))
    writer.close()


class FullDisk:
    """A binary file whose writes fail with ENOSPC once `limit` bytes were written."""

    def __init__(self, path, limit):
        self.inner, self.limit, self.name = open(path, "wb"), limit, str(path)  # noqa: SIM115

    def write(self, data):
        if self.inner.tell() + len(memoryview(data).cast("B")) > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.inner.write(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_disk_full_in_stage_03_names_the_published_path(artifacts, tmp_path, monkeypatch, capsys):
    data = data_folder(tmp_path, train_rows=500)
    run_stages("t", *data_option(data), modules=("raw", "split", "count"))
    monkeypatch.setattr(npy, "open", lambda path, mode: FullDisk(path, 20_000), raising=False)
    from preprocessing import hash_fields
    capsys.readouterr()
    assert errors.run(hash_fields.main, ["--tag", "t", *data_option(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {stage_dir('t', '03_hash')}/") and ".tmp-" not in err
    assert re.search(r"\.npy: no space left on device while writing it( after .*)? "
                     r"\(.* free there\)", err), err
    assert not stage_dir("t", "03_hash").exists()


def test_read_only_artifacts_folder_is_one_line(tmp_path, tmpfs):
    data = data_folder(tmp_path)
    locked = tmpfs("locked", read_only=True)
    message = error_message(run_script(locked, "00_raw", *data_option(data)))
    assert message.startswith(f"error: {locked}: read-only file system")
    assert "--artifacts DIR" in message


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_unwritable_artifacts_folder_injected(artifacts, tmp_path, monkeypatch, capsys, code):
    data = data_folder(tmp_path)
    (artifacts / "t").mkdir(parents=True)
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name.startswith(".tmp-"):
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    capsys.readouterr()
    assert errors.run(raw.main, ["--tag", "t", *data_option(data)]) == 2
    err = capsys.readouterr().err
    what = "read-only file system" if code == errno.EROFS else "permission denied"
    assert err.startswith(f"error: {artifacts / 't'}: {what} (cannot create")
    assert f"{artifacts / 't' / '00_raw'}" in err and ".tmp-" not in err
    assert len(err.splitlines()) == 1


def test_missing_data_folder_or_test_file_is_one_line(artifacts, tmp_path):
    message = error_message(run_script(artifacts, "00_raw", *data_option(tmp_path / "nowhere")))
    assert f"{tmp_path / 'nowhere'}: no train.txt/test.txt" in message
    folder = tmp_path / "half"
    folder.mkdir()
    write_raw(folder / "train.txt", 5, labelled=True)
    message = error_message(run_script(artifacts, "00_raw", *data_option(folder)))
    assert f"{folder}: found train.txt but no test file" in message
