"""The house rules, checked from the source: no system imports another (the codec's generic
compressed-parameter API is the one way in), no two modules import each other (no cycles), no
`sharded.py` beside a `train.py`, and no module over the size a reader takes in at once."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxsys"
SYSTEMS = ("autodecoder", "codec", "ginr", "gpt", "mlp")
# the one allowed crossing: a system may store its parameters with the codec's generic API
ALLOWED = {("gpt", "codec")}
MAX_LINES = 460


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every jaxsys module a file imports (at any depth: function-level imports count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("jaxsys"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxsys"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {m: {t for t in _imports(p) if t in files and t != m} for m, p in files.items()}


def _system(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SYSTEMS else None


def test_no_system_imports_another():
    bad = []
    for mod, targets in _graph().items():
        src = _system(mod)
        for t in targets:
            dst = _system(t)
            if src and dst and src != dst and (src, dst) not in ALLOWED:
                bad.append(f"{mod} -> {t}")
    assert not bad, "a system imports another system:\n" + "\n".join(sorted(bad))


def test_allowed_crossing_is_the_codec_public_api():
    """The GPT reaches the codec only through its package-level API (jaxsys.codec / jaxsys.codec.params),
    never through format/group internals."""
    for mod, targets in _graph().items():
        if _system(mod) == "gpt":
            inner = [t for t in targets if _system(t) == "codec" and t not in ("jaxsys.codec", "jaxsys.codec.params")]
            assert not inner, f"{mod} reaches into codec internals: {inner}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _drop_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exporting its own submodules is not a circle between modules."""
    g = {}
    for m, ts in graph.items():
        g[m] = {t for t in ts if not (m.startswith(t + ".") or t.startswith(m + "."))}
    return g


def test_no_import_cycles():
    cycles = _cycles(_drop_package_inits(_graph()))
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("system", SYSTEMS)
def test_one_training_loop(system):
    pkg = ROOT / system
    assert not ((pkg / "train.py").exists() and (pkg / "sharded.py").exists()), f"{system}: sharded.py beside train.py"


def test_modules_stay_small():
    big = [
        f"{p.relative_to(ROOT.parent)}: {n}"
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not big, f"modules over {MAX_LINES} lines:\n" + "\n".join(big)
