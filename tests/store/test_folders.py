"""memft.store.folders: the folder lock, the crash-proof swap, recovery of interrupted swaps, and the user's files."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memft.store import adapters, folders, meta
from memft.errors import AdapterError
from tests.cli.test_cli import FAST, memft
from tests.conftest import write_jsonl

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _fill(text):
    def fill(tmp):
        (tmp / adapters.META).write_text(json.dumps({"v": text}), encoding="utf-8")
        (tmp / "adapter_model.safetensors").write_text(text, encoding="utf-8")

    return fill


def _py(code, **env):
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_user_files_are_carried_over_and_stale_files_are_not(tmp_path):
    ad = tmp_path / "ad"
    adapters.write_atomic(ad, _fill("v1"))
    (ad / "notes.txt").write_text("mine", encoding="utf-8")
    (ad / "sub").mkdir()
    (ad / "sub" / "a.jsonl").write_text("{}", encoding="utf-8")
    (ad / "adapter_model.bin").write_text("stale weights", encoding="utf-8")
    adapters.write_atomic(ad, _fill("v2"))
    assert sorted(p.name for p in ad.iterdir()) == ["adapter_model.safetensors", "memft.json", "notes.txt", "sub"]
    assert (ad / "notes.txt").read_text() == "mine" and (ad / "sub" / "a.jsonl").read_text() == "{}"
    assert (ad / "adapter_model.safetensors").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ad.memft-lock", "ad"]  # no leftovers beside it


@pytest.mark.slow  # a fault test: a subprocess killed between the renames
def test_a_kill_between_the_renames_is_recovered_by_the_next_open(tmp_path):
    ad = tmp_path / "ad"
    adapters.write_atomic(ad, _fill("v1"))
    code = (
        "import os; from pathlib import Path; from memft.store import adapters, folders\n"
        "folders._between_renames = lambda: os._exit(9)\n"
        f"adapters.write_atomic(Path({str(ad)!r}), lambda t: (t / 'memft.json').write_text('v2'))\n"
    )
    p = _py(code)
    p.wait(60)
    assert p.returncode == 9
    assert not ad.exists() and len(folders.leftovers(ad)["old"]) == 1  # the crash left no adapter under its name
    assert meta.read_json(ad) == {"v": "v1"}  # the next open put the previous version back
    assert folders.leftovers(ad) == {"tmp": [], "old": []}


def test_ctrl_c_between_the_renames_leaves_the_folder_unchanged(tmp_path, monkeypatch):
    ad = tmp_path / "ad"
    adapters.write_atomic(ad, _fill("v1"))

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(folders, "_between_renames", interrupt)
    with pytest.raises(KeyboardInterrupt):
        adapters.write_atomic(ad, _fill("v2"))
    assert meta.read_json(ad) == {"v": "v1"} and folders.leftovers(ad) == {"tmp": [], "old": []}


def test_leftovers_of_old_versions_are_cleaned_and_do_not_block_a_save(tmp_path):
    ad = tmp_path / "ad"
    adapters.write_atomic(ad, _fill("v1"))
    for name in (".ad.old-1", ".ad.tmp-abcd_123", f".ad.memft-tmp-{'0' * 32}"):  # memft 0.1 left the first two
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("junk")
    (tmp_path / ".adx.old-1").mkdir()  # another folder's name: not ours
    adapters.write_atomic(ad, _fill("v2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ad.memft-lock", ".adx.old-1", "ad"]
    assert meta.read_json(ad) == {"v": "v2"}


def test_a_legacy_interrupted_swap_is_restored(tmp_path):
    ad = tmp_path / "ad"
    adapters.write_atomic(ad, _fill("v1"))
    os.replace(ad, tmp_path / ".ad.old-4242")  # what memft 0.1 left after a crash between its renames
    assert meta.read_json(ad) == {"v": "v1"}


def test_a_second_writer_waits_then_gives_up_with_a_one_line_error(tmp_path):
    ad = tmp_path / "ad"
    holder = _py(
        "import sys, time; from memft.store import folders\n"
        f"with folders.locked({str(ad)!r}):\n    print('held', flush=True); time.sleep(30)\n"
    )
    assert holder.stdout.readline() == "held\n"
    try:
        said = []
        t0 = time.monotonic()
        with pytest.raises(AdapterError, match="another memft process held it for 1 s; nothing was changed"):
            with folders.locked(ad, wait=1.0, notify=said.append):
                pass
        assert 0.9 < time.monotonic() - t0 < 10
        assert said == [f"{ad}: another memft process is writing it; waiting for it to finish (at most 1 s)"]
    finally:
        holder.kill()
        holder.wait()
    with folders.locked(ad, wait=5):  # a killed holder releases the lock at once (an OS lock, never stale)
        pass


def test_lock_is_reentrant_within_one_process(tmp_path):
    ad = tmp_path / "ad"
    with folders.locked(ad, wait=0):
        adapters.write_atomic(ad, _fill("v1"))  # takes the same lock inside: must not deadlock
    assert meta.read_json(ad) == {"v": "v1"}


def test_unwritable_location_is_refused_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(AdapterError, match="cannot lock it"):
            with folders.locked(ro / "ad"):
                pass
    finally:
        ro.chmod(0o700)


@pytest.mark.slow  # two model loads and trainings at once: ~20 s on 2 cores
def test_two_concurrent_appends_keep_both(tmp_path):
    ad = tmp_path / "ad"
    first = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "Ann:", "value": "0042"})])
    assert memft("write", first, "--out", ad, "--quiet", *FAST).returncode == 0
    (ad / "notes.txt").write_text("keep me", encoding="utf-8")
    procs = []
    for name, key in (("a", "Bo:"), ("b", "Cy:")):
        f = write_jsonl(tmp_path / f"{name}.jsonl", [json.dumps({"key": key, "value": f"v-{name}"})])
        procs.append(subprocess.Popen([sys.executable, "-m", "memft.cli.main", "append", str(ad), str(f), "--quiet"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("waiting for it to finish" in err for _, err in outs) == 1  # the second one said it waited
    book = json.loads(memft("ledger", ad, "--json").stdout)
    assert sorted(e["key"] for e in book["entries"]) == ["Ann:", "Bo:", "Cy:"]
    assert (ad / "notes.txt").read_text() == "keep me"


def test_a_symlinked_alias_locks_and_swaps_the_real_folder(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    adapters.write_atomic(real, _fill("v1"))
    link.symlink_to(real)
    assert folders.lock_path(link) == folders.lock_path(real) == tmp_path / ".real.memft-lock"
    with folders.locked(real, wait=0):  # held through one name: the alias is the same lock (re-entrant here) ...
        assert str(folders.resolve(link)) in folders._HELD
    adapters.write_atomic(link, _fill("v2"))  # ... and a save through the alias replaces the folder, not the link
    assert link.is_symlink() and os.readlink(link) == str(real) and meta.read_json(real) == {"v": "v2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".real.memft-lock", "link", "real"]  # no .link.memft-old-*


def test_another_process_holding_the_real_folder_blocks_its_alias(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    adapters.write_atomic(real, _fill("v1"))
    link.symlink_to(real)
    p = _py(f"from memft.store import folders; import time\nwith folders.locked({str(real)!r}):\n    print('held', flush=True); time.sleep(30)")
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(AdapterError, match="another memft process is using it"):
            with folders.locked(link, wait=0):
                pass
    finally:
        p.kill()
        p.wait()


def test_out_dot_in_an_empty_folder_is_written_and_the_lock_file_stays_outside(tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    adapters.write_atomic(Path("."), _fill("v1"))
    assert meta.read_json(here) == {"v": "v1"} and (tmp_path / ".here.memft-lock").exists()
    assert not list(here.glob(".*memft-lock"))


def test_out_under_a_file_is_a_clear_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(AdapterError, match=r"notes.txt is a file, not a folder; give a location inside a folder"):
        with folders.locked(tmp_path / "notes.txt" / "sub"):
            pass


def test_input_errors_leave_no_lock_file_beside_out(tmp_path):
    bad = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "k:", "value": "v"})])
    w = memft("write", bad, "--out", tmp_path / "out", "--quiet", *FAST, "--rank", "1000000")  # too large a rank
    assert w.returncode == 2 and "--rank 1000000 is larger" in w.stderr
    a = memft("append", tmp_path / "missing", bad, "--quiet")
    assert a.returncode == 2 and "no such adapter folder" in a.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def test_readers_clean_leftovers_of_a_killed_save_but_not_a_live_writers(tmp_path):
    from memft.store.ledger import read

    ad = tmp_path / "ad"
    shutil.copytree(Path(__file__).parents[1] / "data" / "adapter-0.1.0", ad)
    p = _py(f"from memft.store import folders; import time\nwith folders.locked({str(ad)!r}):\n    print('held', flush=True); time.sleep(30)")
    try:
        assert p.stdout.readline().strip() == "held"
        for name in (".ad.memft-tmp-" + "a" * 32, ".ad.memft-old-" + "b" * 32):  # as a save in progress has them
            shutil.copytree(ad, tmp_path / name)
        read(ad)  # a writer holds the lock: its siblings may be its own, so they stay
        assert len(list(tmp_path.glob(".ad.memft-*-*"))) == 2
    finally:
        p.kill()
        p.wait()
    assert len(read(ad).entries) == 3  # nobody holds it now: the reader cleans under the lock
    assert not list(tmp_path.glob(".ad.memft-*-*"))
    shutil.copytree(ad, tmp_path / (".ad.memft-old-" + "c" * 32))
    assert memft("ledger", ad, "--json").returncode == 0 and not list(tmp_path.glob(".ad.memft-*-*"))


def test_read_consistent_rereads_when_a_save_swaps_the_folder_meanwhile(tmp_path, monkeypatch):
    ad = tmp_path / "ad"
    adapters.write_atomic(ad, _fill("v1"))
    real_read = folders._read_or_none
    calls = []

    def racing(path):  # a save lands between the reader's first and second file
        calls.append(path.name)
        if len(calls) == 2:
            adapters.write_atomic(ad, _fill("v2"))
        return real_read(path)

    monkeypatch.setattr(folders, "_read_or_none", racing)
    got = folders.read_consistent(ad, (adapters.META, "adapter_model.safetensors"))
    assert json.loads(got[adapters.META]) == {"v": "v2"} and got["adapter_model.safetensors"] == b"v2"  # one version
    assert len(calls) == 4  # read twice: the first pair mixed v1 and v2
