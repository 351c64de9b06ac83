"""The layers README's Layout section describes, checked on the imports.

The core is grouped by stage, one package per stage, each importing only the stages before it: prompts (records in,
token ids out) -> model (the base and its forward passes) -> certify (teacher-forced statistics, greedy decoding) ->
objectives -> training -> store (the folder on disk), with errors and config below them all. memft.api is the one
facade above the core; memory/ (append, forget), checks/, runtime/, research/ and integrations/ build on the core
and never import the facade or the CLI; cli/ may import everything.

A module's layer is its first package below memft (`memft.store.ledger` -> "store"); errors and config are "base",
api is "facade"."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "memft"
CORE = ("prompts", "model", "certify", "objectives", "training", "store")  # the stages, in order
OUTER = ("memory", "checks", "research", "integrations", "runtime")  # layers on top of the core
BASE = ("errors", "config")
_core = {"base", *CORE}
ALLOWED = {  # layer -> the layers its modules may import
    "base": {"base", "objectives"},  # config validates method options against the objectives' registry
    "prompts": {"base", "prompts"},
    "model": {"base", "prompts", "model"},
    "certify": {"base", "prompts", "model", "certify"},
    "objectives": {"base", "certify", "objectives"},
    "training": {"base", "prompts", "model", "certify", "objectives", "training"},
    "store": _core,
    "memory": _core | {"memory"},
    "checks": _core | {"memory", "checks"},
    "runtime": _core | {"memory", "runtime"},
    "research": _core | {"research"},
    "integrations": _core | {"integrations"},
    "facade": _core | {"memory", "checks", "facade"},
}
EXCEPTIONS: set[tuple[str, str]] = set()  # (module, import) pairs allowed against the rules: none


def _modules() -> dict[str, Path]:
    """Dotted name below memft ("train", "research.bench.stress") -> file, the CLI left out."""
    out = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__").removesuffix("__init__")
        if name and not name.startswith("cli"):
            out[name] = p
    return out


def _layer(name: str) -> str:
    """The layer of a module from its package path: "store.ledger" -> "store", "config" -> "base", "api" -> "facade"."""
    top = name.split(".")[0]
    if top == "api":
        return "facade"
    if top in BASE or top == "":
        return "base"
    assert top in CORE or top in OUTER, f"memft.{name}: a module outside every layer; put it in a package of the core"
    return top


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The memft modules a file imports, by dotted name below memft; `from memft.x import y` counts x.y when y is a
    module, else x."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.ImportFrom) and n.module and (n.module == "memft" or n.module.startswith("memft.")):
            base = n.module.removeprefix("memft").removeprefix(".")
            for a in n.names:
                sub = f"{base}.{a.name}".removeprefix(".")
                out.add(sub if sub in modules or sub.startswith("cli") else base)
        elif isinstance(n, ast.Import):
            out |= {a.name.removeprefix("memft.") for a in n.names if a.name.startswith("memft.")}
    return {x for x in out if x and x != "__version__"}


def test_layer_is_read_from_the_package_path():
    names = ("training.loop", "api", "store.ledger", "memory", "objectives.ot", "config", "checks.audit")
    assert [_layer(n) for n in names] == ["training", "facade", "store", "memory", "objectives", "base", "checks"]


def test_every_folder_is_a_layer_and_says_what_it_may_import():
    folders = {p.parent.name for p in SRC.glob("*/__init__.py")} - {"cli"}
    known = set(CORE) | set(OUTER)
    assert folders <= known, f"a folder that is no layer: {sorted(folders - known)}; add it to CORE (or OUTER)"
    for name in folders:
        doc = ast.get_docstring(ast.parse((SRC / name / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "may import" in doc, f"memft/{name}/__init__.py: its docstring must say what it may import"


def test_the_top_of_the_package_holds_only_the_facade_and_the_base():
    assert sorted(p.stem for p in SRC.glob("*.py")) == sorted(["__init__", "api", *BASE])


def test_no_import_runs_up_the_layers():
    mods = _modules()
    bad = []
    for name, path in sorted(mods.items()):
        for dep in sorted(_imports(path, set(mods))):
            if dep.startswith("cli") or _layer(dep) not in ALLOWED[_layer(name)] and (name, dep) not in EXCEPTIONS:
                bad.append(f"{name} ({_layer(name)}) imports {dep} ({'cli' if dep.startswith('cli') else _layer(dep)})")
    assert bad == []


def test_a_wrong_import_is_caught(tmp_path):
    """The check itself can fail: an early stage importing a later one, a layer importing the facade or the CLI."""
    mod = tmp_path / "x.py"
    mod.write_text("from memft.store.ledger import read\nfrom memft.training import loop\nfrom memft import api\nimport memft.cli.main\n")
    deps = _imports(mod, set(_modules()))
    assert deps == {"store.ledger", "training.loop", "api", "cli.main"}
    assert {_layer(d) for d in deps - {"cli.main"}} - ALLOWED["model"] == {"store", "training", "facade"}
    assert {_layer(d) for d in deps - {"cli.main"}} - ALLOWED["memory"] == {"facade"}
