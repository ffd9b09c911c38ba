"""The layout rules of docs/design.md, checked on the source: no import cycle, stages below the driver side,
schemas below everything, the run path free of the test models, modules of one concern (<= 300 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "stages", "pipeline")
MAX_LINES = 300


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def imports_of(name: str) -> set[str]:
    """Our modules ``name`` imports, anywhere in its body (function-level imports count)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def all_imports(name: str, graph: dict) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def imported_names(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_the_checker_sees_imports_and_cycles():
    assert "stages.base" in GRAPH["stages.caption"] and "schemas.records" in GRAPH["stages.caption"]
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert "a" in all_imports("a", planted) and "d" not in all_imports("a", planted)


def test_no_module_imports_itself_through_others():
    cycles = sorted(name for name in GRAPH if name in all_imports(name, GRAPH))
    assert cycles == []


@pytest.mark.parametrize("layer,forbidden", [
    ("schemas", ("stages", "pipeline", "ray")),
    ("stages", ("pipeline", "ray")),
])
def test_lower_layers_do_not_import_upper_ones(layer, forbidden):
    offenders = [f"{name} imports {n}" for name, path in MODULES.items() if name.split(".")[0] == layer
                 for n in sorted(imported_names(path)) if n.split(".")[0] in forbidden]
    assert offenders == []


def test_the_run_path_never_imports_the_test_models():
    run_path = [n for n in MODULES if n.startswith(("pipeline.execution", "pipeline.config", "pipeline.output",
                                                    "pipeline.report"))]
    offenders = [n for n in run_path if any(m.startswith("pipeline.testing") for m in all_imports(n, GRAPH))]
    assert offenders == []


def test_the_run_path_imports_ray_data_only_in_its_ray_modules():
    users = sorted(name for name, path in MODULES.items()
                   if name.startswith(("pipeline.execution", "pipeline.config", "pipeline.output", "stages"))
                   and any(n == "ray.data" or n.startswith("ray.data.") for n in imported_names(path)))
    assert users == ["pipeline.execution.ray_block_stats", "pipeline.execution.ray_executor",
                     "pipeline.execution.ray_input", "pipeline.execution.ray_output",
                     "pipeline.execution.ray_policies", "pipeline.execution.ray_seams"]


def test_no_source_module_is_over_300_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_package_says_what_lives_there_and_what_it_may_import():
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            assert "import" in doc.lower(), f"{name}/__init__.py says nothing of what it may import"


# The one-reader rule (issue 36): manifests are read only by pipeline/output/manifest.py, which declares the
# older schema versions and checks every key; a module that reads them itself would skip both.
MANIFEST_READER = "pipeline.output.manifest"
PARQUET_READS = {"read_table", "read_schema", "read_metadata", "ParquetFile", "ParquetDataset", "read_pandas",
                 "read_parquet", "dataset"}


def reads_manifests(source: str) -> bool:
    """Whether code reads parquet (pyarrow.parquet, pyarrow.dataset, Ray's read_parquet) and names the manifest
    folder: ``MANIFEST_DIR`` anywhere in the module, or a "manifest" path in the call itself."""
    tree = ast.parse(source)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr in PARQUET_READS)
        or (isinstance(node.func, ast.Name) and node.func.id in PARQUET_READS))]
    if not calls:
        return False
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    if "MANIFEST_DIR" in names:
        return True
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str) and "manifest" in n.value
               for call in calls for n in ast.walk(call))


def test_the_one_reader_checker_sees_direct_manifest_reads():
    assert reads_manifests("import pyarrow.parquet as pq\npq.read_table(s.open_input(MANIFEST_DIR, name))")
    assert reads_manifests("from pyarrow.parquet import read_schema\npath = s.path(layout.MANIFEST_DIR)\n"
                           "read_schema(path)")
    assert reads_manifests("import pyarrow.dataset as ds\nds.dataset(root + '/manifest/', format='parquet')")
    assert reads_manifests("ray.data.read_parquet(f'{out}/manifest')")
    assert not reads_manifests("pq.read_table(s.open_input(THUMBS_DIR, manifest_name))")  # the thumbnail index
    assert not reads_manifests("names = s.list(MANIFEST_DIR)")  # listing is not reading


def test_only_the_manifest_module_reads_manifests():
    readers = sorted(name for name, path in MODULES.items()
                     if reads_manifests(path.read_text(encoding="utf-8")))
    assert readers == [MANIFEST_READER]


def users_of(symbol: str) -> list[str]:
    """Our modules whose code uses ``symbol`` (``f(...)``, ``x.f``, ``ray.remote(f)``; importing it is not using it)."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Name) and node.id == symbol) or (isinstance(node, ast.Attribute)
                                                                       and node.attr == symbol):
                found.append(name)
                break
    return sorted(found)


def test_one_dedupe_rule_shared_by_both_executors():
    """Which seed repeats another is decided in one place, pipeline.execution.seen_registry: ingest claims each seed
    there (stages.ingest.decode), the ShardAssembler applies the registry's answers, copy_rows_maker gives a late
    copy its rows. No other module makes a seed a repeat (gives it the duplicate reason), and both executors, Ray
    and local, run that rule: a second rule in an executor (as ``mark_repeated_seed`` was) fails here."""
    assert users_of("duplicate_reason") == ["pipeline.execution.assembler", "pipeline.execution.seen_registry",
                                              "stages.ingest.decode"]
    assert users_of("SeenRegistry") == ["pipeline.execution.local", "pipeline.execution.ray_executor"]
    assert users_of("ShardAssembler") == ["pipeline.execution.local", "pipeline.execution.run"]
    assert users_of("copy_rows_maker") == ["pipeline.execution.local", "pipeline.execution.run"]
