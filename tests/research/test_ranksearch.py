import json

from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.research.bench.phonebook import phonebook
from memft.research.ranksearch import next_rank, write_auto_rank


def _search(guess_tried: dict[int, bool], outcome, guess=4, max_rank=64):
    """Drive next_rank against an oracle outcome(rank) -> certified; return the ranks in the order tried."""
    tried, order = dict(guess_tried), []
    while (r := next_rank(tried, guess, max_rank)) is not None:
        order.append(r)
        tried[r] = outcome(r)
    return order, tried


def test_search_finds_smallest_certifying_rank_from_below_and_above():
    order, tried = _search({}, lambda r: r >= 11, guess=4)
    assert order == [4, 8, 16, 12, 10, 11]
    assert min(r for r, ok in tried.items() if ok) == 11
    order, _ = _search({}, lambda r: r >= 3, guess=16)
    assert order == [16, 8, 4, 2, 3]
    order, tried = _search({}, lambda r: False, guess=4, max_rank=20)
    assert order == [4, 8, 16, 20] and not any(tried.values())
    assert _search({}, lambda r: True, guess=1)[0] == [1]


def test_write_auto_rank_on_tiny(tmp_path):
    recs = phonebook(6, seed=2)
    res, tries = write_auto_rank(recs, tmp_path / "ad", "tiny-random", LoraSettings(rank=1, preset="all"),
                                 TrainConfig(lr=2e-2, max_steps=25), RuntimeConfig(device="cpu", dtype="fp32"), max_rank=16)
    assert res is not None and res.all_certified
    ok = sorted(t["rank"] for t in tries if t["certified"] == 1.0)
    best = ok[0]
    assert res.meta.lora.rank == best
    assert best == 1 or any(t["rank"] == best - 1 and t["certified"] < 1.0 for t in tries)
    meta = json.loads((tmp_path / "ad" / "memft.json").read_text())
    assert [t["rank"] for t in meta["rank_search"]["tries"]] == [t["rank"] for t in tries]


def test_write_auto_rank_holds_the_lock_for_the_whole_search_and_saves_once(tmp_path, monkeypatch):
    from memft.store import adapters, folders
    from memft.research import ranksearch

    monkeypatch.setattr(ranksearch, "planned_guess", lambda *a: 2)  # tries 2 then 1: two certifying tries
    out = tmp_path / "ad"
    saves, seen = [], []
    real_save = adapters.save
    monkeypatch.setattr(adapters, "save", lambda *a, **k: saves.append(1) or real_save(*a, **k))

    def on_try(t):  # during the search: the lock is held and nothing is saved yet
        seen.append((str(folders.resolve(out)) in folders._HELD, out.exists()))

    res, tries = write_auto_rank(phonebook(6, seed=2), out, "tiny-random", LoraSettings(rank=1, preset="all"),
                                 TrainConfig(lr=2e-2, max_steps=25), RuntimeConfig(device="cpu", dtype="fp32"), max_rank=16, on_try=on_try)
    assert res is not None and len(tries) >= 2 and seen == [(True, False)] * len(tries) and saves == [1]
    from memft import api

    ld = api.load_adapter(out, device="cpu")  # the saved weights are those of the smallest certifying try
    assert ld.meta.lora.rank == res.meta.lora.rank and ld.meta.files == res.meta.files
    got = api.recall_many(ld, [r.key for r in phonebook(6, seed=2)])
    assert [g.value for g in got] == [r.value for r in phonebook(6, seed=2)] and all(g.certified for g in got)
