"""Record digests: salted scrypt for new folders, plain sha256 still read in old ones, and no value recoverable from
an unsalted hash anywhere in a folder."""

import hashlib
import json
import shutil

import pytest

from memft import api
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.store.digests import DigestScheme
from memft.errors import AdapterError
from memft.store import ledger
from memft.memory.rewrite import append
from memft.store.meta import AdapterMeta
from memft.prompts.records import Record

ALICE = Record("Alice:", "555-0100")
SALT = bytes(range(16)).hex()
CPU = RuntimeConfig(device="cpu", dtype="fp32")


def test_scrypt_v1_is_scrypt_of_the_canonical_record_with_the_documented_parameters():
    got = DigestScheme("scrypt-v1", SALT).digest(ALICE)
    want = hashlib.scrypt(b'["Alice:","555-0100"]', salt=bytes(range(16)), n=2**10, r=8, p=1, dklen=32).hex()
    # the same value from OpenSSL's command line: openssl kdf -keylen 32 -kdfopt pass:'["Alice:","555-0100"]'
    #   -kdfopt hexsalt:000102030405060708090a0b0c0d0e0f -kdfopt n:1024 -kdfopt r:8 -kdfopt p:1 SCRYPT
    assert got == want == "7db8110f4c76c008ce8fabb58884c81d25879575b22df80376a3146b75feafac"


def test_sha256_scheme_is_the_digest_of_memft_0_1():
    assert DigestScheme().digest(ALICE) == hashlib.sha256(b'["Alice:","555-0100"]').hexdigest() == (
        "9044fa6f66da6e2d004cb4dacf97b73dfdd7d118f053685d647850c15736e0cc")


def test_same_record_and_salt_agree_another_salt_or_value_differs():
    a, b = DigestScheme("scrypt-v1", SALT), DigestScheme("scrypt-v1", "ff" * 16)
    assert a.digest(Record("Alice:", "555-0100")) == a.digest(ALICE)
    assert a.digest(ALICE) != b.digest(ALICE)
    assert a.digest(ALICE) != a.digest(Record("Alice:", "555-0101"))
    assert a.digest(Record("k", value_ids=(3, 4))) != a.digest(Record("k", "[3,4]"))  # canonical JSON keeps the type
    one, two = DigestScheme.fresh(), DigestScheme.fresh()
    assert one.name == "scrypt-v1" and len(one.salt) == 32 and one.salt != two.salt


def test_set_hash_ignores_order_and_is_salted():
    a = [Record("x", "1"), Record("y", value_ids=(3, 4))]
    s = DigestScheme("scrypt-v1", SALT)
    assert s.set_hash(a) == s.set_hash(a[::-1])
    assert s.set_hash(a) != s.set_hash([Record("x", "1"), Record("y", value_ids=(3, 5))])
    assert s.set_hash(a) != DigestScheme("scrypt-v1", "ff" * 16).set_hash(a) != DigestScheme().set_hash(a)


def test_each_digest_is_computed_once_per_record_and_salt(monkeypatch):
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = DigestScheme.fresh()
    recs = [Record(f"k{i}:", str(i)) for i in range(5)]
    first = [s.digest(r) for r in recs]
    s.set_hash(recs)
    assert [s.digest(Record(r.key, r.value)) for r in recs] == first  # equal records, new objects: still cached
    assert len(calls) == 5


def test_scheme_from_json():
    assert DigestScheme.from_json(None, "x") == DigestScheme()  # written before salted digests
    s = DigestScheme.fresh()
    assert DigestScheme.from_json(s.to_json(), "x") == s
    for bad, needle in [({"scheme": "argon9"}, "unknown digest scheme 'argon9'"), ({"scheme": "scrypt-v1", "salt": "zz"}, "salt of 16 bytes"),
                        ({"scheme": "scrypt-v1"}, "salt of 16 bytes"), ({"scheme": "sha256", "salt": SALT}, "takes no salt"), ("sha256", "expected")]:
        with pytest.raises(AdapterError, match=needle):
            DigestScheme.from_json(bad, "ad/ledger.json")


# --- folders ---------------------------------------------------------------------------------------------------

RECS = [Record("Carol Whyte:", "5550199"), Record("PIN:", "4821")]


@pytest.fixture(scope="module")
def ad(tmp_path_factory):
    out = tmp_path_factory.mktemp("digests") / "ad"
    res = api.write(RECS, out, model="tiny-random", lora=LoraSettings(rank=8, preset="all"),
                    train=TrainConfig(lr=2e-2, max_steps=300), runtime=CPU)
    assert res.all_certified
    return out


def _unsalted_hashes(records):
    """Every unsalted sha256 (hex) of a value an attacker would try: of the value, key+value, the canonical record,
    and memft 0.1's set hash."""
    out = set()
    for r in records:
        for blob in (r.value, r.key + r.value, r.key + " " + r.value, json.dumps([r.key, r.value], ensure_ascii=False, separators=(",", ":"))):
            out.add(hashlib.sha256(blob.encode()).hexdigest())
    out.add(DigestScheme().set_hash(records))
    return out


def test_no_unsalted_hash_of_a_value_is_in_the_folder(ad):
    book = ledger.read(ad)
    meta = json.loads((ad / "memft.json").read_text())
    assert book.scheme.name == "scrypt-v1" and meta["records"]["digest"] == book.scheme.to_json()
    assert sorted(meta["records"]["digests"]) == sorted(e.digest for e in book.entries) == sorted(book.scheme.digest(r) for r in RECS)
    files = {p.name: p.read_bytes() for p in ad.iterdir() if p.is_file()}
    assert {"ledger.json", "memft.json"} <= set(files)
    for h in _unsalted_hashes(RECS):
        for name, data in files.items():
            assert h.encode() not in data and h[:12].encode() not in data, (name, h)
    # The value as a JSON string: a bare "4821" also turns up inside the floats (min_prob 0.99482...) and salted
    # digests of a folder, which made this test fail at random.
    for name in ("ledger.json", "memft.json"):
        assert all(json.dumps(r.value).encode() not in files[name] for r in RECS), name


def _to_old_format(folder, fingerprint: bool):
    """Rewrite a folder's ledger.json and memft.json as memft 0.1 wrote them (unsalted sha256 digests, no scheme;
    fingerprint=False: no fingerprint either) or as this branch did before salted digests (fingerprint=True)."""
    old = {r.key: hashlib.sha256(json.dumps([r.key, r.value], separators=(",", ":")).encode()).hexdigest() for r in RECS}
    meta = json.loads((folder / "memft.json").read_text())
    del meta["records"]["digest"]
    meta["records"]["digests"] = sorted(old.values())
    meta["records"]["hash"] = hashlib.sha256("".join(sorted(old.values())).encode()).hexdigest()
    (folder / "memft.json").write_text(json.dumps(meta, indent=2))
    book = json.loads((folder / "ledger.json").read_text())
    del book["digest"]
    for e in book["entries"]:
        e["digest"] = old[e["key"]]
    if fingerprint:
        book["fingerprint"] = ledger.fingerprint(AdapterMeta.from_json(meta))
    else:
        del book["fingerprint"]
    (folder / "ledger.json").write_text(json.dumps(book, indent=2))


@pytest.mark.parametrize("fingerprint", [False, True], ids=["memft-0.1", "before-salt"])
def test_an_old_unsalted_folder_recalls_certified_and_append_moves_it_to_salted_digests(ad, tmp_path, fingerprint):
    d = tmp_path / "old"
    shutil.copytree(ad, d)
    _to_old_format(d, fingerprint)
    assert ledger.read(d).scheme == DigestScheme()
    got = api.recall_many(d, [r.key for r in RECS])
    assert [(g.value, g.certified) for g in got] == [(r.value, True) for r in RECS]
    assert api.verify(d, RECS, device="cpu").summary["certified"] == 1.0
    new = Record("Dan:", "77")
    res = append(d, [new], runtime=CPU)
    assert res.saved and res.plan["kept"] == [r.key for r in RECS] and res.plan["added"] == ["Dan:"]
    book, meta = ledger.read(d), json.loads((d / "memft.json").read_text())
    assert book.scheme.name == "scrypt-v1" and book.scheme.salt != ledger.read(ad).scheme.salt  # a fresh salt
    assert meta["records"]["digest"] == book.scheme.to_json() and meta["records"]["hash"] == book.scheme.set_hash([*RECS, new])
    assert [e.digest for e in book.entries] == [book.scheme.digest(r) for r in [*RECS, new]]
    assert all(g.certified for g in api.recall_many(d, [r.key for r in [*RECS, new]]))
    files = b"".join(p.read_bytes() for p in d.iterdir() if p.is_file())
    assert not any(h.encode() in files for h in _unsalted_hashes(RECS))  # the old digests are gone


def test_a_salt_edited_in_one_file_is_refused_on_open(ad, tmp_path):
    d = tmp_path / "ad"
    shutil.copytree(ad, d)
    book = json.loads((d / "ledger.json").read_text())
    book["digest"]["salt"] = "00" * 16
    (d / "ledger.json").write_text(json.dumps(book))
    with pytest.raises(AdapterError, match="the digest scheme or salt of ledger.json and memft.json differ"):
        api.load_adapter(d, device="cpu")

