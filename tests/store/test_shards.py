"""The store's pure rules (memft.store.shards): split, place, route, its own names, store.json."""

import hashlib
import json

import pytest

from memft.errors import AdapterError, ConfigError
from memft.store import folders, shards


def test_split_is_balanced_stable_and_follows_the_key_hash():
    keys = [f"Person {i}:" for i in range(2001)]
    parts = shards.split(keys, str, 1000)
    assert [len(p) for p in parts] == [667, 667, 667]  # ceil(2001 / 1000) = 3 shards, sizes differ by at most one
    assert sorted(k for p in parts for k in p) == sorted(keys)  # each key once
    assert shards.split(list(reversed(keys)), str, 1000) == parts  # the file's order does not matter
    # in the order of sha256(key): the first shard holds the smallest hashes
    first = min(keys, key=lambda k: hashlib.sha256(k.encode()).digest())
    assert parts[0][0] == first
    assert shards.split(keys[:1000], str, 1000) == [sorted(keys[:1000], key=lambda k: hashlib.sha256(k.encode()).digest())]


def test_place_fills_one_open_shard_or_opens_new_ones():
    full = {f"shard-{i:03d}": 1000 for i in range(10)}
    assert shards.place([f"k{i}" for i in range(100)], full, 1000) == {"shard-010": [f"k{i}" for i in range(100)]}
    assert shards.place(["a", "b"], full | {"shard-010": 100}, 1000) == {"shard-010": ["a", "b"]}
    # 950 new keys do not fit beside shard-010's 100: one new shard, none of the held shards touched
    assert list(shards.place([f"k{i}" for i in range(950)], full | {"shard-010": 100}, 1000)) == ["shard-011"]
    big = shards.place([f"k{i}" for i in range(1500)], full | {"shard-010": 100}, 1000)
    assert list(big) == ["shard-011", "shard-012"] and [len(v) for v in big.values()] == [750, 750]
    assert shards.place([], full, 1000) == {}
    with pytest.raises(ConfigError, match="positive number"):
        shards.place(["a"], {}, 0)


def test_route_by_ledger_keys():
    held = {"shard-000": ["a", "b"], "shard-003": ["c"]}
    assert shards.route(["c", "zz", "a", "b"], held) == ({"shard-003": ["c"], "shard-000": ["a", "b"]}, ["zz"])


def test_store_meta_round_trip_and_damage(tmp_path):
    shards.write_meta(tmp_path, shards.StoreMeta(250))
    assert shards.is_store(tmp_path) and shards.read_meta(tmp_path) == shards.StoreMeta(250)
    (tmp_path / "shard-002").mkdir()
    (tmp_path / "shard-010").mkdir()
    (tmp_path / "notes").mkdir()
    assert [p.name for p in shards.shard_dirs(tmp_path)] == ["shard-002", "shard-010"]
    for bad, msg in (({"format": "x"}, "not a memft store file"), ({"format": "memft-store", "version": 9, "shard_size": 5}, "version 9"),
                     ({"format": "memft-store", "version": 1, "shard_size": 0}, "shard_size 0")):
        (tmp_path / "store.json").write_text(json.dumps(bad))
        with pytest.raises(AdapterError, match=msg):
            shards.read_meta(tmp_path)
    err = shards.store_error(tmp_path, "export")
    assert "a memory store of 2 shards" in str(err) and "`memft export`" in str(err) and "shard-002" in str(err)


def test_a_new_store_version_does_not_bring_back_removed_shards(tmp_path):
    """carry_over keeps the user's files, never a shard or store.json of the previous version."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    (old / "shard-000").mkdir()
    (old / "store.json").write_text("{}")
    (old / ".shard-000.memft-lock").write_text("")
    (old / "notes.txt").write_text("mine")
    assert folders.carry_over(old, new) == ["notes.txt"]
