"""The twin-contract checker: twin model files, with the framework spelled the same way,
must be the same code (in the spirit of HuggingFace's ``utils/check_copies.py``).

Each file of ``reference_pytorch/`` that has a namesake in ``rtdetr_jittor/`` is parsed
with ``ast`` and *normalised*, then the two normalised texts are compared line by line
(``difflib``); each hunk that differs must be listed, with a one-line reason, in
``tests/twin_contract_allow.yaml``. Normalising (both sides, one set of rules):

1. documentation and imports go: docstrings, comments (``ast.unparse`` drops them),
   every ``import`` (``tests/test_imports.py`` checks those); layout is ``ast.unparse``'s;
2. a name bound by a framework import is spelled by what it refers to
   (``F`` -> ``torch.nn.functional``, ``jt`` -> ``jittor``, a name imported from
   ``rtdetr_jittor.compat`` -> ``compat.<name>``), then in torch's spelling
   (``NAMESPACES``, ``MODULES``, ``RENAMES``): ``torch.nn.functional.X`` and
   ``jittor.nn.x`` -> ``F.X``, ``jittor.nn.X`` and ``torch.nn.X`` -> ``nn.X``,
   ``jittor.X`` -> ``torch.X``;
3. a compat shim becomes the torch call it reproduces (``COMPAT_AS_TORCH`` and the
   ``compat.`` cases of ``_call_rewrite``), while a plain Jittor op that has a shim
   keeps its Jittor spelling (``SHIMMED``), so it differs from the reference's torch
   call: ``docs/TWINS.md``'s rule (a shim wherever one exists) is checked here;
4. Jittor's spellings of the same operation become torch's: method names
   (``METHODS``: ``execute`` -> ``forward``, ``astype`` -> ``to``, ...), keywords
   (``KEYWORDS``), dtype strings (``DTYPE_STRINGS``), and the call rewrites of
   ``_call_rewrite`` (``x.transpose(0, 2, 1)`` -> ``x.permute(...)``, ``x.tile([..])``
   -> ``x.repeat(..)``, ``nn.Dropout(p, is_train=True)`` -> ``nn.Dropout(p)``, ...);
5. torch-only placement and gradient-mode code goes: ``device`` arguments and
   parameters, ``device = x.device``, ``.cpu()``, ``.contiguous()``, ``.to(device)``,
   ``requires_grad=False`` (torch's default), ``@torch.no_grad()`` and
   ``@torch.jit.unused`` decorators, and ``with torch.no_grad():`` (its body stays).

``python -m tests.twin_contract`` prints every unexplained hunk as an allow-list entry
(reason left ``TODO``, which the test refuses) for a maintainer to judge.
"""
import ast
import difflib
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE, JITTOR = "reference_pytorch", "rtdetr_jittor"
ALLOW_FILE = os.path.join(ROOT, "tests", "twin_contract_allow.yaml")

# Where an imported framework name really lives (module path -> canonical root).
IMPORT_ALIASES = {
    "rtdetr_jittor._env.jt": "jittor",
    "rtdetr_jittor.compat": "compat",
}

# Canonical (torch) spelling of framework namespaces, longest prefix first:
# (prefix, replacement, applies to names that are lower-case / capitalised / any).
NAMESPACES = [
    ("torch.nn.functional.", "F.", "any"),   # F.softmax, F.interpolate
    ("torch.nn.init.", "init.", "any"),
    ("torch.nn.", "nn.", "any"),             # nn.Linear, nn.Module
    ("jittor.nn.", "nn.", "upper"),          # Jittor's nn holds the modules ...
    ("jittor.nn.", "F.", "lower"),           # ... and the functions of torch.nn.functional
    ("jittor.init.", "init.", "any"),
    ("jittor.", "torch.", "any"),            # jt.stack -> torch.stack, jt.Var -> torch.Tensor below
]

# Jittor names whose torch namesake (same meaning) is spelled differently.
RENAMES = {
    "torch.Var": "torch.Tensor",
    "F.sigmoid": "torch.sigmoid",  # torch's own aliases
    "torch.float": "torch.float32",
}

# compat shim -> the torch call it reproduces (same arguments).
COMPAT_AS_TORCH = {
    "compat.sigmoid": "torch.sigmoid",
    "compat.topk": "torch.topk",
    "compat.maximum": "torch.max",
    "compat.minimum": "torch.min",
    "compat.cdist_l1": "torch.cdist",  # with p=1 (CALL_REWRITES)
    "compat.erf": "torch.erf",
    "compat.log1p": "torch.log1p",
    "compat.Conv2d": "nn.Conv2d",
    "compat.ReLU": "nn.ReLU",
    "compat.SiLU": "nn.SiLU",
    "compat.max_pool2d": "F.max_pool2d",
    "compat.BatchNorm2d": "nn.BatchNorm2d",
    "compat.LayerNorm": "nn.LayerNorm",
    "compat.GELU": "nn.GELU",
    "compat.MultiheadAttention": "nn.MultiheadAttention",
    "compat.Embedding": "nn.Embedding",
    "compat.AvgPool2d": "nn.AvgPool2d",
    "compat.binary_cross_entropy_with_logits": "F.binary_cross_entropy_with_logits",
}

# Plain Jittor ops that have a compat shim: they keep their Jittor spelling, so using
# one where the reference calls the torch op shows as a difference (docs/TWINS.md).
SHIMMED = {"torch.sigmoid", "torch.topk", "torch.argmax", "torch.maximum", "torch.minimum", "torch.max",
           "torch.min", "torch.erf", "F.gelu", "F.softmax", "F.binary_cross_entropy_with_logits",
           "nn.Conv2d", "nn.ReLU", "nn.SiLU", "F.max_pool2d", "nn.BatchNorm2d", "nn.LayerNorm", "nn.GELU", "nn.Embedding", "nn.AvgPool2d", "nn.MultiheadAttention"}

# Jittor method spellings of torch's (the same operation), on values (not modules).
METHODS = {
    "execute": "forward",
    "astype": "to",
    "float32": "float",
    "float64": "double",
    "int64": "long",
    "assign": "copy_",   # Var.assign: replace the data outside the graph (torch: copy_ under no_grad)
}

KEYWORDS = {"keepdims": "keepdim"}

# Dtype strings Jittor takes where torch takes dtype objects.
DTYPE_STRINGS = {"float32": "torch.float32", "float64": "torch.float64", "int32": "torch.int32",
                 "int64": "torch.int64", "bool": "torch.bool"}

# torch-only placement and layout calls, dropped (Jittor has one device and no strides):
# x.cpu(), x.contiguous(), x.to(y.device), and every device= argument.
PLACEMENT_METHODS = {"cpu", "contiguous"}

# torch-only gradient-mode and TorchScript markers, dropped as decorators and unwrapped
# as ``with`` blocks (the Jittor twin keeps such values out of the graph with
# detach/NumPy/update, which shows as its own difference where it matters).
GRAD_MODE = {"torch.no_grad", "torch.jit.unused"}


def _call_rewrite(node, imported, reference):
    """Whole-call rewrites; ``node`` is an ``ast.Call`` already in canonical names,
    ``imported`` the names bound by imports (a method rewrite skips ``np.tile(...)``),
    ``reference`` whether the file is the reference's (torch-only synonyms)."""
    name = ast.unparse(node.func)
    args = node.args
    method = isinstance(node.func, ast.Attribute) and not (
        isinstance(node.func.value, ast.Name) and node.func.value.id in imported)
    if reference and method and node.func.attr == "softmax" and len(args) == 1 and not node.keywords:
        return ast.Call(ast.Name("F.softmax", ast.Load()), [node.func.value], [ast.keyword("dim", args[0])])
    if name == "compat.detach" and len(args) == 1:                       # compat.detach(x) == x.detach()
        return ast.Call(ast.Attribute(args[0], "detach", ast.Load()), [], [])
    if name == "compat.max_values" and args:                             # compat.max_values(x, d) == x.max(d)
        return ast.Call(ast.Attribute(args[0], "max", ast.Load()), args[1:], node.keywords)
    if name == "compat.clamp" and args:                                  # compat.clamp(x, ...) == x.clamp(...)
        return ast.Call(ast.Attribute(args[0], "clamp", ast.Load()), args[1:], node.keywords)
    if name == "compat.absolute" and len(args) == 1:                     # compat.absolute(x) == x.abs()
        return ast.Call(ast.Attribute(args[0], "abs", ast.Load()), [], [])
    if name == "compat.argmax" and args:                                 # compat.argmax(x, d) == x.argmax(d)
        return ast.Call(ast.Attribute(args[0], "argmax", ast.Load()), args[1:], node.keywords)
    if name == "compat.softmax" and len(args) == 1:                      # last-dimension softmax
        return ast.Call(ast.Name("F.softmax", ast.Load()), args, [ast.keyword("dim", ast.Constant(-1))])
    if name == "compat.sum64" and len(args) == 1:                        # float64-accumulated sum
        return ast.Call(ast.Attribute(args[0], "sum", ast.Load()), [], [])
    if name == "compat.mean64" and len(args) == 2:                       # float64-accumulated mean
        return ast.Call(ast.Attribute(args[0], "mean", ast.Load()), args[1:], [])
    if name == "compat.floor_divide" and len(args) == 2:                 # torch's // floors
        return ast.BinOp(args[0], ast.FloorDiv(), args[1])
    if name == "nn.ModuleList" and len(args) == 1 and isinstance(args[0], ast.GeneratorExp):
        return ast.Call(node.func, [ast.ListComp(args[0].elt, args[0].generators)], [])  # Jittor's takes a list
    if name == "torch.meshgrid":                                         # Jittor's meshgrid is torch's "ij"
        node.keywords = [k for k in node.keywords if not (k.arg == "indexing" and _constant(k.value) == "ij")]
    if name == "F.l1_loss" and len(args) == 2 and [(k.arg, _constant(k.value)) for k in node.keywords] \
            == [("reduction", "none")]:                                   # == (a - b).abs()
        return ast.Call(ast.Attribute(ast.BinOp(args[0], ast.Sub(), args[1]), "abs", ast.Load()), [], [])
    if name == "nn.Dropout":                                             # Jittor's is_train=True: torch's default
        node.keywords = [k for k in node.keywords if not (k.arg == "is_train" and _is_true(k.value))]
    if name == "torch.cdist" and len(args) == 2 and not node.keywords:   # compat.cdist_l1(a, b)
        return ast.Call(node.func, args, [ast.keyword("p", ast.Constant(1))])
    if name == "F.binary_cross_entropy_with_logits" and not any(k.arg == "reduction" for k in node.keywords):
        return ast.Call(node.func, args, node.keywords + [ast.keyword("reduction", ast.Constant("none"))])
    if method and node.func.attr == "tile" and args:                    # x.tile([a, b]) == x.repeat(a, b)
        dims = list(args[0].elts) if len(args) == 1 and isinstance(args[0], (ast.List, ast.Tuple)) else args
        return ast.Call(ast.Attribute(node.func.value, "repeat", ast.Load()), dims, [])
    if name == "torch.tile" and len(args) == 2 and isinstance(args[1], (ast.List, ast.Tuple)):
        return ast.Call(ast.Attribute(args[0], "repeat", ast.Load()), list(args[1].elts), [])
    if method and node.func.attr == "transpose" and len(args) >= 3:
        return ast.Call(ast.Attribute(node.func.value, "permute", ast.Load()), args, node.keywords)
    if method and node.func.attr == "is_training" and not args:
        return ast.Attribute(node.func.value, "training", ast.Load())    # Module.is_training() == .training
    return node


def _constant(node):
    return node.value if isinstance(node, ast.Constant) else None


def _is_true(node):
    return _constant(node) is True


def _is_device(node):
    """A device value: ``device`` or ``<anything>.device``."""
    return (isinstance(node, ast.Name) and node.id == "device") or \
        (isinstance(node, ast.Attribute) and node.attr == "device")


def _bindings(tree, path):
    """``{local name: qualified origin}`` for names bound by framework or compat imports."""
    package = path[:-3].split(os.sep)[:-1]
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                found[local] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[:len(package) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                found[alias.asname or alias.name] = f"{base}.{alias.name}"
    canonical = {}
    for local, origin in found.items():
        origin = IMPORT_ALIASES.get(origin, origin)
        for package_path, root in IMPORT_ALIASES.items():
            if origin.startswith(package_path + "."):
                origin = root + origin[len(package_path):]
        if origin.split(".")[0] in ("torch", "jittor", "compat"):
            canonical[local] = origin
    return canonical


# Framework modules used as values (``getattr(F, "relu")``, ``getattr(nn, "relu")``).
MODULES = {"torch.nn.functional": "F", "jittor.nn": "F", "torch.nn": "nn", "jittor": "torch",
           "torch.nn.init": "init", "jittor.init": "init"}


def canonical_name(dotted):
    """Torch spelling of a fully qualified framework name (see the module docstring)."""
    if dotted in COMPAT_AS_TORCH:
        return COMPAT_AS_TORCH[dotted]
    if dotted in MODULES:
        return MODULES[dotted]
    for prefix, replacement, case in NAMESPACES:
        if dotted.startswith(prefix):
            rest = dotted[len(prefix):]
            if case == "any" or (rest[:1].isupper()) == (case == "upper"):
                name = replacement + rest
                if prefix.startswith("jittor") and name in SHIMMED:
                    return "jittor." + dotted[len("jittor."):]
                return RENAMES.get(name, name)
    return RENAMES.get(dotted, dotted)


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    return None


class _Normaliser(ast.NodeTransformer):
    def __init__(self, bindings, imported, reference):
        self.bindings = bindings
        self.imported = imported
        self.reference = reference

    def _strip_docstring(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]

    def _drop_imports(self, node):
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts:
                kept = [s for s in stmts if not isinstance(s, (ast.Import, ast.ImportFrom))]
                setattr(node, field, kept or ([ast.Pass()] if field == "body" else []))

    def generic_visit(self, node):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            self._strip_docstring(node)
        self._drop_imports(node)
        node = super().generic_visit(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == "execute":
                node.name = "forward"
            _drop_device_parameter(node.args)
            node.decorator_list = [d for d in node.decorator_list if _callee(d) not in GRAD_MODE]
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list):
                kept = [inner for stmt in stmts for inner in _unwrap_grad_mode(stmt) if not _assigns_device(inner)]
                setattr(node, field, kept or ([ast.Pass()] if field == "body" else []))
        return node

    def _framework_name(self, node):
        dotted = _dotted(node)
        if dotted is None:
            return None
        root, _, rest = dotted.partition(".")
        if root not in self.bindings:
            return None
        return canonical_name(self.bindings[root] + ("." + rest if rest else ""))

    def visit_Name(self, node):
        name = self._framework_name(node)
        return ast.copy_location(ast.Name(name, node.ctx), node) if name else node

    def visit_keyword(self, node):
        node = self.generic_visit(node)
        node.arg = KEYWORDS.get(node.arg, node.arg)
        if node.arg == "dtype" and isinstance(node.value, ast.Constant) and node.value.value in DTYPE_STRINGS:
            node.value = ast.Name(DTYPE_STRINGS[node.value.value], ast.Load())
        return node

    def visit_Call(self, node):
        node = self.generic_visit(node)
        node.keywords = [k for k in node.keywords if k.arg != "device" and not (  # requires_grad=False: torch's default
            k.arg == "requires_grad" and isinstance(k.value, ast.Constant) and k.value.value is False)]
        node.args = [a for a in node.args if not _is_device(a)]
        func = node.func
        if isinstance(func, ast.Attribute) and not (isinstance(func.value, ast.Name) and func.value.id in self.imported):
            if func.attr in PLACEMENT_METHODS and not node.args:
                return func.value
            if func.attr == "to" and not node.keywords and len(node.args) == 1 and _is_device(node.args[0]):
                return func.value
            if func.attr == "to" and not node.args and not node.keywords:
                return func.value  # x.to(device=d) after device= is dropped
            if func.attr == "to" and not node.args and [k.arg for k in node.keywords] == ["dtype"]:
                node.args, node.keywords = [node.keywords[0].value], []  # x.to(dtype=t) == x.to(t)
            numpy_dtype = node.args and isinstance(node.args[0], ast.Attribute) \
                and isinstance(node.args[0].value, ast.Name) and node.args[0].value.id in self.imported
            if func.attr in METHODS and not numpy_dtype:  # x.astype(np.int64) is NumPy's
                func.attr = METHODS[func.attr]
            if func.attr == "to" and len(node.args) == 1 and _constant(node.args[0]) in DTYPE_STRINGS:
                node.args = [ast.Name(DTYPE_STRINGS[node.args[0].value], ast.Load())]  # x.astype("float32")
        return _call_rewrite(node, self.imported, self.reference)

    def visit_Attribute(self, node):
        name = self._framework_name(node)
        if name:
            return ast.copy_location(ast.Name(name, node.ctx), node)
        node = self.generic_visit(node)
        # torch's x.max(dim).values is Jittor's x.max(dim)
        if node.attr == "values" and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute) \
                and node.value.func.attr in ("max", "min") and node.value.args:
            return node.value
        return node


def _callee(node):
    """``torch.no_grad`` for a ``torch.no_grad()`` / ``torch.no_grad`` node (canonical names)."""
    return ast.unparse(node.func if isinstance(node, ast.Call) else node)


def _assigns_device(stmt):
    """``device = x.device`` (placement bookkeeping), or ``x = x`` left by dropping a
    ``.to(device)``: dropped."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
        return False
    target = stmt.targets[0]
    return _is_device(target) or ast.dump(target, annotate_fields=False).replace("Store", "Load") == \
        ast.dump(stmt.value, annotate_fields=False)


def _dtype_default(arg, default):
    """A ``dtype="float32"`` default as torch's ``torch.float32``."""
    if arg.arg == "dtype" and isinstance(default, ast.Constant) and default.value in DTYPE_STRINGS:
        return ast.Name(DTYPE_STRINGS[default.value], ast.Load())
    return default


def _drop_device_parameter(arguments):
    """Drop a ``device`` parameter and its default (placement: Jittor has one device)."""
    positional = arguments.posonlyargs + arguments.args
    defaults = [None] * (len(positional) - len(arguments.defaults)) + arguments.defaults
    kept = [(a, _dtype_default(a, d)) for a, d in zip(positional, defaults) if a.arg != "device"]
    n_posonly = sum(a.arg != "device" for a in arguments.posonlyargs)
    arguments.posonlyargs = [a for a, _ in kept[:n_posonly]]
    arguments.args = [a for a, _ in kept[n_posonly:]]
    arguments.defaults = [d for _, d in kept if d is not None]


def _unwrap_grad_mode(stmt):
    """The body of a ``with torch.no_grad():`` block, else ``[stmt]``."""
    if isinstance(stmt, ast.With) and len(stmt.items) == 1 and _callee(stmt.items[0].context_expr) in GRAD_MODE:
        return stmt.body
    return [stmt]


def _imported_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def normalise(source, path):
    """The normalised text of one twin file, as a list of lines."""
    tree = ast.parse(source, filename=path)
    reference = path.split(os.sep)[0] == REFERENCE
    tree = _Normaliser(_bindings(tree, path), _imported_names(tree), reference).visit(tree)
    return [line.rstrip() for line in ast.unparse(ast.fix_missing_locations(tree)).splitlines() if line.strip()]


def hunks(reference_lines, jittor_lines):
    """Each differing stretch as ``(reference lines, jittor lines)``."""
    matcher = difflib.SequenceMatcher(None, reference_lines, jittor_lines, autojunk=False)
    return [(tuple(reference_lines[i1:i2]), tuple(jittor_lines[j1:j2]))
            for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def hunk_text(hunk):
    """A hunk as allow-list text: reference lines ``-``, Jittor lines ``+``."""
    reference_lines, jittor_lines = hunk
    return "\n".join(["-" + line for line in reference_lines] + ["+" + line for line in jittor_lines]) + "\n"


# Twin files not compared line by line, each with the reason.
NOT_COMPARED = {
    "backend.py": "the framework glue itself: every function is its framework's own spelling of one interface "
                  "(tests/test_twin_contract.py checks that both backends offer the same names)",
    "distributed.py": "data-parallel glue: torch.distributed under torchrun against Jittor's MPI ops under mpirun, "
                      "one interface spelled twice (tests/test_twin_contract.py checks the same names)",
}


def twin_files():
    """Paths (relative to each twin's root) of the files both twins have, less ``NOT_COMPARED``."""
    found = []
    for folder, dirs, files in os.walk(os.path.join(ROOT, REFERENCE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), os.path.join(ROOT, REFERENCE))
            if name.endswith(".py") and rel not in NOT_COMPARED and os.path.exists(os.path.join(ROOT, JITTOR, rel)):
                found.append(rel)
    return sorted(found)


def read_pair(rel):
    texts = []
    for twin in (REFERENCE, JITTOR):
        with open(os.path.join(ROOT, twin, rel), encoding="utf-8") as handle:
            texts.append(normalise(handle.read(), os.path.join(twin, rel)))
    return texts


def load_allow_list(path=ALLOW_FILE):
    """``{file: [{"reason": one line, "hunks": [hunk text, ...]}, ...]}``."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def unexplained(reference_lines, jittor_lines, allowed):
    """The hunks that no entry of ``allowed`` (this file's allow-list entries) lists, and
    the listed hunks that match no hunk any more (stale)."""
    texts = [hunk_text(h) for h in hunks(reference_lines, jittor_lines)]
    allowed_texts = [text for entry in allowed for text in entry["hunks"]]
    missing = [t for t in texts if t not in allowed_texts]
    stale = [t for t in allowed_texts if t not in texts]
    return missing, stale


def unified_diff(reference_lines, jittor_lines, rel, allowed=(), context=3):
    """A unified diff of the normalised files showing only the hunks ``allowed`` (this
    file's allow-list entries) does not list, each with ``context`` lines around it."""
    allowed_texts = {text for entry in allowed for text in entry["hunks"]}
    matcher = difflib.SequenceMatcher(None, reference_lines, jittor_lines, autojunk=False)
    out = [f"--- {REFERENCE}/{rel} (normalised)", f"+++ {JITTOR}/{rel} (normalised)"]
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        hunk = (tuple(reference_lines[i1:i2]), tuple(jittor_lines[j1:j2]))
        if tag == "equal" or hunk_text(hunk) in allowed_texts:
            continue
        before = reference_lines[max(0, i1 - context):i1]
        after = reference_lines[i2:i2 + context]
        out.append(f"@@ -{i1 - len(before) + 1},{len(before) + i2 - i1 + len(after)} "
                   f"+{j1 - len(before) + 1},{len(before) + j2 - j1 + len(after)} @@")
        out += [" " + line for line in before] + ["-" + line for line in hunk[0]]
        out += ["+" + line for line in hunk[1]] + [" " + line for line in after]
    return "\n".join(out)


def main():
    """Print every unexplained hunk as allow-list YAML (reasons to be written by hand)."""
    allow = load_allow_list()
    for rel in twin_files():
        missing, stale = unexplained(*read_pair(rel), allow.get(rel, []))
        if missing:
            print(f"{rel}:")
            for text in missing:
                print("- reason: TODO\n  hunks:\n  - |\n" + "".join(f"    {line}\n" for line in text.splitlines()))
        for text in stale:
            print(f"# stale entry in {rel}:\n# " + text.replace("\n", "\n# "), file=sys.stderr)


if __name__ == "__main__":
    main()
