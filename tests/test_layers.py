"""The layers README's Layout section describes, checked on the imports: the core imports no other layer (api, its
facade, also the ledger and memft.checks.sampling), the memory store and the checks build only on what is below them,
research and integrations never import the CLI.

A module's layer is its folder: `memft/memory/`, `memft/checks/`, `memft/research/`, `memft/integrations/`; what sits
at the top of `memft/` is the core, and so are the core's own packages (`memft/objectives/`); `memft/cli/` is the CLI,
which may import everything."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "memft"
LAYERS = ("memory", "checks", "research", "integrations", "runtime")  # memft's subpackages besides cli/; the rest is the core
CORE_PACKAGES = ("objectives",)  # packages of the core itself (one concept split into modules), no layer of their own
ALLOWED = {  # layer -> the layers its modules may import
    "core": {"core"}, "memory": {"core", "memory"}, "checks": {"core", "memory", "checks"},
    "research": {"core", "research"}, "integrations": {"core", "integrations"}, "runtime": {"core", "memory", "runtime"},
}
# api writes the ledger and computes sampling odds; the audit's held-out text is the stress benchmark's default text.
EXCEPTIONS = {("api", "memory.ledger"), ("api", "checks.sampling"), ("checks.audit", "research.bench.stress")}


def _modules() -> dict[str, Path]:
    """Dotted name below memft ("train", "research.bench.stress") -> file, the CLI left out."""
    out = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__").removesuffix("__init__")
        if name and not name.startswith("cli"):
            out[name] = p
    return out


def _layer(name: str) -> str:
    """The layer of a module from its package path: "memory.ledger" -> "memory", "train" -> "core"."""
    top = name.split(".")[0]
    return top if top in LAYERS else "core"


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
    assert [_layer(n) for n in ("train", "api", "memory.ledger", "memory", "objectives.ot")] == ["core", "core", "memory", "memory", "core"]


def test_every_folder_is_a_layer_and_says_what_it_may_import():
    folders = {p.parent.name for p in SRC.glob("*/__init__.py")} - {"cli"}
    known = set(LAYERS) | set(CORE_PACKAGES)
    assert folders <= known, f"a folder that is no layer: {sorted(folders - known)}; add it to LAYERS (or CORE_PACKAGES)"
    for name in folders:
        doc = ast.get_docstring(ast.parse((SRC / name / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "layer: may import" in doc, f"memft/{name}/__init__.py: its docstring must say what it may import"


def test_no_import_runs_up_the_layers():
    mods = _modules()
    bad = []
    for name, path in sorted(mods.items()):
        for dep in sorted(_imports(path, set(mods))):
            if dep.startswith("cli") or _layer(dep) not in ALLOWED[_layer(name)] and (name, dep) not in EXCEPTIONS:
                bad.append(f"{name} ({_layer(name)}) imports {dep} ({'cli' if dep.startswith('cli') else _layer(dep)})")
    assert bad == []


def test_a_wrong_import_is_caught(tmp_path):
    """The check itself can fail: a core module importing the memory store, a research module the checks."""
    core = tmp_path / "x.py"
    core.write_text("from memft.memory.ledger import read\nfrom memft.checks import deploy\nimport memft.cli.main\n")
    deps = _imports(core, set(_modules()) | {"checks.deploy"})
    assert deps == {"memory.ledger", "checks.deploy", "cli.main"}
    assert {_layer(d) for d in deps - {"cli.main"}} - ALLOWED["core"] == {"memory", "checks"}
