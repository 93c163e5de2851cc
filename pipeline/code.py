"""Code fingerprints from import closures: a stage depends on every project module its entry
module imports, directly or not, so no hand-kept list of files can miss one.

The closure is read from the source (ast), without importing anything. Besides `import` and
`from ... import` statements (at any depth, inside functions too), in a module that calls
`import_module` it follows the module names that module can load: string constants naming a
project module ("models.libffm"), and f-strings with a package prefix (f"models.{name}") joined
with the module's string constants (its list of names), or every module of that package when
none matches. Over-inclusion only makes a stage stale more often; a missed module would let a
changed stage count as done.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from pipeline.paths import REPO_ROOT


@functools.cache
def module_file(name: str) -> Path | None:
    """The project file of module `name` (a package's __init__.py), or None if not ours."""
    if not name or not all(part.isidentifier() for part in name.split(".")):
        return None
    path = REPO_ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file() and (path.parent / "__init__.py").is_file():
        return path.with_suffix(".py")
    return None


def _package_modules(package: str) -> set[str]:
    folder = REPO_ROOT.joinpath(*package.split("."))
    return {f"{package}.{path.stem}" for path in folder.glob("*.py") if path.stem != "__init__"}


@functools.cache
def _direct_imports(name: str) -> frozenset[str]:
    path = module_file(name)
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    strings: set[str] = set()
    prefixes: set[str] = set()
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and str(head.value).endswith("."):
                prefixes.add(str(head.value)[:-1])
        elif isinstance(node, (ast.Name, ast.Attribute)):
            dynamic |= (node.id if isinstance(node, ast.Name) else node.attr) == "import_module"
    if dynamic:  # importlib.import_module("a.b") or import_module(f"a.{name}")
        found.update(strings)
        for prefix in prefixes:
            named = {f"{prefix}.{text}" for text in strings if module_file(f"{prefix}.{text}")}
            found.update(named or (_package_modules(prefix) if module_file(prefix) else ()))
    # importing a.b.c runs a/__init__.py and a/b/__init__.py too
    with_parents = set()
    for item in found:
        parts = item.split(".")
        with_parents.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return frozenset(item for item in with_parents if item != name and module_file(item))


@functools.cache
def import_closure(*names: str) -> tuple[str, ...]:
    """Every project module that importing `names` loads, `names` included, sorted."""
    missing = [name for name in names if module_file(name) is None]
    if missing:
        raise ValueError(f"not a module of this project: {', '.join(missing)}")
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_direct_imports(name) - seen)
    return tuple(sorted(seen))


def code_digests(*modules: str) -> dict[str, str]:
    """Repo-relative file -> sha256 (first 16 hex) of every file in the modules' import closure."""
    files = sorted({module_file(name) for name in import_closure(*modules)})
    return {str(path.relative_to(REPO_ROOT)): file_digest(path) for path in files}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
