"""Import boundaries, read from the source with ``ast`` (module-level and lazy imports
inside functions alike, ``importlib.import_module("...")`` and ``__import__("...")``
with a literal name included):

- the twins do not import each other: nothing under ``reference_pytorch/`` imports
  ``rtdetr_jittor`` and nothing under ``rtdetr_jittor/`` imports ``reference_pytorch``;
- ``rtdetr_common/`` (framework-neutral) imports neither twin, torch nor Jittor;
- Jittor is imported first by ``rtdetr_jittor/_env.py`` (which sets its environment
  and undoes its import-time side effects): ``import jittor`` appears nowhere else, and
  any other file takes names from ``jittor`` / ``jittor_utils`` (``from jittor import
  nn``) only where ``rtdetr_jittor._env`` has already been imported: earlier at module
  level, or earlier in the same function.

Each rule is also run on small synthetic sources that break it (the checks can fail).
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_MODULE = "rtdetr_jittor._env"
JITTOR_ROOTS = ("jittor", "jittor_utils")
SKIPPED_DIRS = {".venv", ".git", "__pycache__", "reports", ".hypothesis", ".pytest_cache", "output"}


def python_files(top):
    """Every ``.py`` file under ``top`` (relative to the repository), sorted."""
    found = []
    for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        found += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files if f.endswith(".py")]
    return sorted(found)


def _package_of(path):
    """The package a repository file belongs to, as a list of names (for relative imports)."""
    return path[:-3].split(os.sep)[:-1]


def _absolute(module, level, path):
    if not level:
        return module or ""
    base = _package_of(path)
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


class _Imports(ast.NodeVisitor):
    """Collects ``(line, module, binds_module_itself, env_already_imported)`` for every
    import, tracking whether ``rtdetr_jittor._env`` was imported before it (at module
    level, or earlier in the enclosing function)."""

    def __init__(self, path):
        self.path = path
        self.found = []
        self.module_env = False   # module-level import of _env seen so far
        self.module_env_anywhere = False
        self.scope_env = [False]  # per function scope

    def _env_before(self):
        in_function = len(self.scope_env) > 1
        return any(self.scope_env) or (self.module_env_anywhere if in_function else self.module_env)

    def _record(self, line, module, binds_itself):
        self.found.append((line, module, binds_itself, self._env_before()))
        if module == ENV_MODULE or module.startswith(ENV_MODULE + "."):
            if len(self.scope_env) == 1:
                self.module_env = True
            else:
                self.scope_env[-1] = True

    def visit_Import(self, node):
        for alias in node.names:
            self._record(node.lineno, alias.name, True)

    def visit_ImportFrom(self, node):
        module = _absolute(node.module, node.level, self.path)
        for alias in node.names:  # "from rtdetr_jittor import _env" imports rtdetr_jittor._env
            self._record(node.lineno, f"{module}.{alias.name}", False)

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            self._record(node.lineno, node.args[0].value, True)
        self.generic_visit(node)

    def _function(self, node):
        self.scope_env.append(False)
        self.generic_visit(node)
        self.scope_env.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function


def imports_of(source, path):
    """Every import in ``source`` as ``(line, module, binds_module_itself, env_before)``."""
    tree = ast.parse(source, filename=path)
    first = _Imports(path)
    first.visit(tree)  # pass 1: is _env imported anywhere at module level (functions run later)
    collector = _Imports(path)
    collector.module_env_anywhere = first.module_env
    collector.visit(tree)
    return collector.found


def _is_under(module, root):
    return module == root or module.startswith(root + ".")


def forbidden_imports(path, source, forbidden_roots):
    """``path:line imports module`` for each import of a module under ``forbidden_roots``."""
    return [f"{path}:{line} imports {module}" for line, module, _, _ in imports_of(source, path)
            if any(_is_under(module, root) for root in forbidden_roots)]


def early_jittor_imports(path, source):
    """Jittor imports that bypass ``rtdetr_jittor._env`` (see the module docstring)."""
    if path == os.path.join("rtdetr_jittor", "_env.py"):
        return []
    problems = []
    for line, module, binds_itself, env_before in imports_of(source, path):
        if not any(_is_under(module, root) for root in JITTOR_ROOTS):
            continue
        if binds_itself and module in JITTOR_ROOTS:
            problems.append(f"{path}:{line} imports {module} itself (only {ENV_MODULE} may)")
        elif not env_before:
            problems.append(f"{path}:{line} imports {module} before {ENV_MODULE}")
    return problems


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


RULES = [
    ("reference_pytorch", ("rtdetr_jittor",)),
    ("rtdetr_jittor", ("reference_pytorch",)),
    ("rtdetr_common", ("rtdetr_jittor", "reference_pytorch", "torch", "jittor", "jittor_utils")),
]


@pytest.mark.parametrize("top,forbidden", RULES, ids=[top for top, _ in RULES])
def test_package_does_not_import_across_its_boundary(top, forbidden):
    files = python_files(top)
    assert files, top
    problems = [p for path in files for p in forbidden_imports(path, _read(path), forbidden)]
    assert not problems, "\n".join(problems)


def test_jittor_is_imported_through_env_only():
    files = [p for top in sorted(os.listdir(ROOT)) if os.path.isdir(os.path.join(ROOT, top))
             and top not in SKIPPED_DIRS and not top.startswith(".") for p in python_files(top)]
    files += [f for f in os.listdir(ROOT) if f.endswith(".py")]
    assert os.path.join("rtdetr_jittor", "compat", "modules.py") in files
    problems = [p for path in files for p in early_jittor_imports(path, _read(path))]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- negative controls

@pytest.mark.parametrize("source", [
    "import rtdetr_jittor\n",
    "from rtdetr_jittor.compat import clamp\n",
    "def f():\n    from rtdetr_jittor import compat\n    return compat\n",
    "import importlib\nmod = importlib.import_module('rtdetr_jittor.rtdetr.utils')\n",
    "class A:\n    def m(self):\n        import rtdetr_jittor.rtdetr as r\n        return r\n",
])
def test_a_cross_twin_import_is_found(source):
    assert forbidden_imports(os.path.join("reference_pytorch", "rtdetr", "x.py"), source, ("rtdetr_jittor",))


def test_relative_imports_resolve_inside_their_own_twin():
    path = os.path.join("rtdetr_jittor", "rtdetr", "x.py")
    assert not forbidden_imports(path, "from ..compat import clamp\nfrom .utils import f\n", ("reference_pytorch",))
    assert forbidden_imports(path, "from ..compat import clamp\n", ("rtdetr_jittor.compat",))


@pytest.mark.parametrize("source", [
    "import jittor\n",
    "import jittor as jt\n",
    "from jittor import nn\nfrom rtdetr_jittor._env import jt\n",
    "def f():\n    from jittor import nn\n    return nn\n",
    "def f():\n    from jittor import nn\n    from rtdetr_jittor._env import jt\n    return nn, jt\n",
    "from jittor_utils.load_pytorch import load_pytorch\n",
    "from rtdetr_jittor._env import jt\nimport jittor\n",
])
def test_a_jittor_import_that_bypasses_env_is_found(source):
    assert early_jittor_imports(os.path.join("rtdetr_jittor", "x.py"), source)


@pytest.mark.parametrize("source", [
    "from rtdetr_jittor._env import jt\nfrom jittor import nn\n",
    "def f():\n    from rtdetr_jittor._env import jt\n    from jittor import nn\n    return nn\n",
    "def f():\n    from jittor import nn\n    return nn\n\nfrom rtdetr_jittor._env import jt\n",
    "from rtdetr_jittor import _env\nfrom jittor import nn\n",
])
def test_a_jittor_import_after_env_is_accepted(source):
    assert not early_jittor_imports(os.path.join("rtdetr_jittor", "x.py"), source)
