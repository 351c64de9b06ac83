"""The layers README's Layout section describes, checked on the imports: the core imports no other layer (api, its
facade, also the ledger and memft.sampling), the memory store and the checks build only on what is below them,
research and integrations never import the CLI. Every module belongs to exactly one layer."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "memft"
CORE = {"errors", "config", "records", "encoding", "modeling", "meta", "adapters", "batching", "forward", "objectives", "window",
        "curriculum", "train", "sizing", "forecast", "evaluate", "metrics", "parity", "folders", "digests", "safejson", "api",
        "vocab", "lora_init", "rollback", "preserve"}
MEMORY = {"ledger", "rewrite"}
CHECKS = {"deploy", "plaincheck", "sampling", "audit", "leaks"}
RESEARCH = {"bench", "bench.phonebook", "bench.stress", "bench.rule", "runs", "store", "sweep", "law", "ranksearch", "plots", "report", "claims"}
INTEGRATIONS = {"integrations"}
ALLOWED = {  # layer -> the layers its modules may import
    "core": {"core"}, "memory": {"core", "memory"}, "checks": {"core", "memory", "checks"},
    "research": {"core", "research"}, "integrations": {"core"},
}
# api writes the ledger and computes sampling odds; the audit's held-out text is the stress benchmark's default text.
EXCEPTIONS = {("api", "ledger"), ("api", "sampling"), ("audit", "bench.stress")}


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__").removesuffix("__init__")
        if name and not name.startswith("cli"):
            out[name] = p
    return out


def _layer(name: str) -> str:
    (layer,) = [k for k, v in {"core": CORE, "memory": MEMORY, "checks": CHECKS, "research": RESEARCH, "integrations": INTEGRATIONS}.items() if name in v]
    return layer


def _imports(path: Path) -> set[str]:
    out = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("memft"):
            names = [f"{n.module}.{a.name}" for a in n.names] if n.module == "memft" else [n.module]
            out |= {x.removeprefix("memft.") for x in names}
        elif isinstance(n, ast.Import):
            out |= {a.name.removeprefix("memft.") for a in n.names if a.name.startswith("memft.")}
    return {x for x in out if x != "__version__" and x != "memft"}


def test_every_module_has_one_layer():
    for name in _modules():
        _layer(name)  # raises when a module is in none or in several


def test_no_import_runs_up_the_layers():
    bad = []
    for name, path in sorted(_modules().items()):
        for dep in sorted(_imports(path)):
            if dep.startswith("cli") or _layer(dep) not in ALLOWED[_layer(name)] and (name, dep) not in EXCEPTIONS:
                bad.append(f"{name} ({_layer(name)}) imports {dep} ({'cli' if dep.startswith('cli') else _layer(dep)})")
    assert bad == []
