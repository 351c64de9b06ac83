"""Varied records: what practitioners store, not phone numbers. Credentials, endpoints, code with newlines, LaTeX,
postal addresses, multilingual text, licence keys, PINs, cron lines, long notes: values from 1 to about 200 tokens
of the embedded tokenizer, every record under a unique key. A pure function of (n, seed): the same seed gives the
same records on every machine, and a smaller set is not a prefix of a larger one (the draw depends on n only
through the number of records).

Why a generator of its own: PhoneBook holds one kind of value of one length. The default sizing of `memft write`
must certify what users store (issue 22 found a mixed set of 38 records that 0.1 certified and a later default did
not), so the benchmark (`benchmarks/bench_varied.py`) runs the defaults on these records at 40, 300 and 1,000.

Research layer (data): may import the core's records and errors only.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from memft.errors import ConfigError
from memft.prompts.records import Record

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
UPPER = string.ascii_uppercase + string.digits

SERVICES = "billing auth search payments ledger inventory mailer reports gateway metrics audit export cache queue".split()
HOSTS = "api internal eu-west us-east staging prod edge cdn db vault ci registry".split()
ENVS = ("prod", "staging", "dev", "qa", "canary")
WORDS = (
    "the rollback plan requires approval from two owners before any schema change is applied to the primary "
    "database and the replica must be promoted only after the lag is below five seconds keep the old bucket "
    "read only for thirty days then archive it rotate the signing key every quarter and record the fingerprint "
    "in the runbook escalate to the on call engineer if the error budget drops below ten percent"
).split()
STREETS = ("Baker Street", "Rue de Rivoli", "Königsallee", "Via del Corso", "Calle Mayor", "Nevsky Prospekt",
           "Orchard Road", "Queen Street West", "Avenida Paulista", "Karl-Marx-Allee")
CITIES = ("London NW1 6XE", "75001 Paris", "40212 Düsseldorf", "00186 Roma", "28013 Madrid",
          "191025 St Petersburg", "Singapore 238879", "Toronto ON M5H 2N2", "São Paulo SP 01310-100", "10243 Berlin")
COUNTRIES = ("UK", "France", "Germany", "Italy", "Spain", "Russia", "Singapore", "Canada", "Brazil", "Germany")
PHRASES = ("Привет, мир", "東京都千代田区", "Grüße aus München", "¿Dónde está la estación?", "Καλημέρα κόσμε",
           "مرحبا بالعالم", "नमस्ते दुनिया", "안녕하세요 세계", "Cześć, świecie", "Merhaba dünya", "Xin chào thế giới",
           "你好，世界", "Hej världen", "Olá, mundo", "Bonjour à tous")
LATEX = (r"\frac{{{a}}}{{{b}}} + \sqrt{{{c}}}", r"\sum_{{i=1}}^{{{a}}} i^{{{b}}} = {c}",
         r"\int_0^{{{a}}} x^{{{b}}}\,dx", r"e^{{i\pi {a}}} + {b} = {c}", r"\binom{{{a}}}{{{b}}} \le {c}!",
         r"\begin{{pmatrix}} {a} & {b} \\ {c} & 1 \end{{pmatrix}}", r"\lim_{{n\to\infty}} (1 + {a}/n)^{{{b}n}}")
CODE = ('def {f}(x):\n    return x * {a} + {b}\n', 'for i in range({a}):\n    total += i * {b}\n',
        'if (user.id == {a}) {{\n  return "{f}";\n}}', 'SELECT {f} FROM t{a} WHERE id > {b};',
        'const {f} = (n) => n % {a} === {b};', 'fn {f}() -> u32 {{ {a} + {b} }}',
        'curl -s https://{h}.example.com/{f}?n={a} | jq .{f}', '#include <stdio.h>\nint {f}(void) {{ return {a}; }}')
IDENT = "alpha beta gamma delta sigma omega tally parse merge flush probe stamp".split()


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _api_key(rng: random.Random) -> str:
    return f"{rng.choice(('sk_live_', 'sk_test_', 'pk_', 'ghp_', 'xoxb-', 'AKIA'))}{_rand(rng, ALNUM, rng.randint(12, 36))}"


def _url(rng: random.Random) -> str:
    path = "/".join(rng.sample(SERVICES, rng.randint(1, 3)))
    query = "&".join(f"{rng.choice(IDENT)}={rng.randint(1, 999)}" for _ in range(rng.randint(0, 3)))
    return f"https://{rng.choice(HOSTS)}.{rng.choice(ENVS)}.example.com/v{rng.randint(1, 4)}/{path}" + (f"?{query}" if query else "")


def _code(rng: random.Random) -> str:
    return rng.choice(CODE).format(f=rng.choice(IDENT) + str(rng.randint(0, 99)), a=rng.randint(2, 999),
                                   b=rng.randint(0, 99), h=rng.choice(HOSTS))


def _latex(rng: random.Random) -> str:
    return rng.choice(LATEX).format(a=rng.randint(2, 99), b=rng.randint(2, 9), c=rng.randint(2, 999))


def _address(rng: random.Random) -> str:
    i = rng.randrange(len(STREETS))
    return f"{rng.randint(1, 250)} {STREETS[i]}\n{CITIES[i]}\n{COUNTRIES[i]}"


def _multilingual(rng: random.Random) -> str:
    return f"{rng.choice(PHRASES)} #{rng.randint(1, 9999)}"


def _licence(rng: random.Random) -> str:
    return "-".join(_rand(rng, UPPER, 5) for _ in range(rng.randint(3, 5)))


def _pin(rng: random.Random) -> str:
    return _rand(rng, string.digits, rng.choice((4, 6)))


def _uuid(rng: random.Random) -> str:
    return "-".join(_rand(rng, HEX, k) for k in (8, 4, 4, 4, 12))


def _cron(rng: random.Random) -> str:
    return f"{rng.randint(0, 59)} {rng.randint(0, 23)} * * {rng.randint(0, 6)} /opt/{rng.choice(SERVICES)}/bin/{rng.choice(IDENT)}.sh"


def _note(rng: random.Random) -> str:
    # The long tail: runbook notes of 20 to 150 words (up to about 200 tokens with the figures in them).
    words = [rng.choice(WORDS) for _ in range(rng.randint(20, 150))]
    for _ in range(rng.randint(1, 4)):
        words.insert(rng.randrange(len(words)), str(rng.randint(10, 9999)))
    return " ".join(words).capitalize() + "."


# (name, generator, weight): short credentials and codes are common, long notes rare.
KINDS: tuple[tuple[str, Callable[[random.Random], str], int], ...] = (
    ("api key", _api_key, 4), ("endpoint", _url, 3), ("code", _code, 3), ("latex", _latex, 2),
    ("address", _address, 2), ("text", _multilingual, 2), ("licence", _licence, 2), ("pin", _pin, 2),
    ("uuid", _uuid, 1), ("cron", _cron, 1), ("note", _note, 1),
)


def varied(n: int, seed: int = 0) -> list[Record]:
    """n records of mixed kinds, each key unique ("<kind> <service> #<k>:"), deterministic in `seed`.

    >>> recs = varied(40, seed=1)
    >>> len(recs), len({r.key for r in recs}), recs == varied(40, seed=1), recs == varied(40, seed=2)
    (40, 40, True, False)
    >>> varied(3, seed="1")
    Traceback (most recent call last):
    memft.errors.ConfigError: varied: the seed must be an integer, got '1'
    >>> any("\\n" in r.value for r in varied(200, 0)), max(len(r.value) for r in varied(200, 0)) > 300
    (True, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"varied: the number of records must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        # random.Random accepts str, bytes and floats as seeds too: a seed of "1" would be another draw than 1
        raise ConfigError(f"varied: the seed must be an integer, got {seed!r}")
    rng = random.Random(seed)
    names = [k for k, _, _ in KINDS]
    weights = [w for _, _, w in KINDS]
    make = {k: g for k, g, _ in KINDS}
    out: list[Record] = []
    keys: set[str] = set()
    while len(out) < n:
        kind = rng.choices(names, weights)[0]
        key = f"{kind} {rng.choice(SERVICES)} {rng.choice(ENVS)} #{rng.randint(1, 99)}:"
        if key in keys:
            continue
        keys.add(key)
        out.append(Record(key=key, value=make[kind](rng)))
    return out
