"""The twin contract: each file both twins have is the same code once the framework is
spelled the same way (``tests/twin_contract.py`` says how), except for the hunks
``tests/twin_contract_allow.yaml`` lists with a reason. A failure prints the unified
diff of the normalised files and the hunks no entry explains.

Controls on synthetic pairs show the checker can fail: an unexplained difference, a
plain Jittor op where compat has the shim (``docs/TWINS.md``), a stale allow-list entry.
"""
import os

import pytest

from tests import twin_contract as tc

FILES = tc.twin_files()
ALLOW = tc.load_allow_list()


def test_the_twin_files_are_found():
    for rel in ("builder.py", "checkpoint.py", "engine.py", os.path.join("backbone", "presnet.py"),
                os.path.join("rtdetr", "rtdetr_decoder.py"), os.path.join("optim", "optim.py"),
                os.path.join("tools", "train.py")):
        assert rel in FILES, rel


@pytest.mark.parametrize("rel", FILES)
def test_twin_files_are_the_same_code_but_for_listed_hunks(rel):
    reference_lines, jittor_lines = tc.read_pair(rel)
    missing, stale = tc.unexplained(reference_lines, jittor_lines, ALLOW.get(rel, []))
    message = []
    if missing:
        message += [f"{len(missing)} unexplained hunk(s) in {rel} (reference '-', Jittor '+'), in context:",
                    tc.unified_diff(reference_lines, jittor_lines, rel, ALLOW.get(rel, []))]
    if stale:
        message += [f"{len(stale)} allow-list hunk(s) for {rel} no longer occur (remove them):"] + stale
    assert not message, "\n".join(message)


def _public_names(path):
    import ast
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom) and node.level:  # re-exports of the twin's own modules
            names.update(a.asname or a.name for a in node.names if not (node.module is None and a.name == "compat"))
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("rel", sorted(tc.NOT_COMPARED))
def test_glue_files_offer_the_same_interface(rel):
    """``backend.py`` and ``distributed.py`` are not compared line by line (``tc.NOT_COMPARED``); their names are."""
    reference = _public_names(os.path.join(tc.ROOT, tc.REFERENCE, rel))
    jittor = _public_names(os.path.join(tc.ROOT, tc.JITTOR, rel))
    assert reference == jittor, {"reference only": reference - jittor, "jittor only": jittor - reference}


def test_allow_list_entries_name_a_twin_file_and_give_one_line_reasons():
    assert set(ALLOW) <= set(FILES), set(ALLOW) - set(FILES)
    for rel, entries in ALLOW.items():
        for entry in entries:
            reason = entry["reason"]
            assert isinstance(reason, str) and reason.strip() and "\n" not in reason and reason != "TODO", (rel, reason)
            assert entry["hunks"], (rel, reason)


# ---------------------------------------------------------------- controls

REFERENCE = '''"""doc"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Head(nn.Module):
    """doc"""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    @torch.no_grad()
    def forward(self, x, device=None):
        y = F.sigmoid(x).to(x.device)  # a comment
        w = F.softmax(x, dim=-1).max(-1, keepdim=True).values
        return torch.topk(y.detach(), 2, dim=1), w.to(dtype=torch.float32)
'''

JITTOR = '''"""another doc"""
from rtdetr_jittor._env import jt
from jittor import nn

from rtdetr_jittor import compat
from rtdetr_jittor.compat import LayerNorm


class Head(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = LayerNorm(dim)

    def execute(self, x):
        y = compat.sigmoid(x)
        w = compat.softmax(x).max(-1, keepdims=True)
        return compat.topk(compat.detach(y), 2, dim=1), w.astype("float32")
'''


def _hunks(reference, jittor):
    return tc.hunks(tc.normalise(reference, os.path.join(tc.REFERENCE, "x.py")),
                    tc.normalise(jittor, os.path.join(tc.JITTOR, "x.py")))


def test_the_same_code_spelled_per_framework_normalises_the_same():
    assert _hunks(REFERENCE, JITTOR) == []


def test_an_unexplained_difference_fails_the_checker():
    changed = JITTOR.replace("compat.topk(compat.detach(y), 2, dim=1)", "compat.topk(compat.detach(y), 3, dim=1)")
    found = _hunks(REFERENCE, changed)
    assert len(found) == 1 and "3, dim=1" in tc.hunk_text(found[0])
    reference_lines = tc.normalise(REFERENCE, os.path.join(tc.REFERENCE, "x.py"))
    jittor_lines = tc.normalise(changed, os.path.join(tc.JITTOR, "x.py"))
    missing, stale = tc.unexplained(reference_lines, jittor_lines, [])
    assert missing == [tc.hunk_text(found[0])] and stale == []
    diff = tc.unified_diff(reference_lines, jittor_lines, "x.py")
    assert "-        return (torch.topk(y.detach(), 2, dim=1)" in diff and "+        return (torch.topk(y.detach(), 3, dim=1)" in diff


def test_a_plain_jittor_op_where_compat_has_the_shim_is_a_difference():
    plain = JITTOR.replace("compat.sigmoid(x)", "jt.sigmoid(x)")
    (hunk,) = _hunks(REFERENCE, plain)
    assert "+        y = jittor.sigmoid(x)" in tc.hunk_text(hunk)


def test_a_listed_hunk_passes_and_a_stale_entry_is_reported():
    changed = JITTOR.replace("self.norm = LayerNorm(dim)", "self.norm = LayerNorm(dim, eps=1e-6)")
    reference_lines = tc.normalise(REFERENCE, os.path.join(tc.REFERENCE, "x.py"))
    jittor_lines = tc.normalise(changed, os.path.join(tc.JITTOR, "x.py"))
    (hunk,) = tc.hunks(reference_lines, jittor_lines)
    entry = {"reason": "a test", "hunks": [tc.hunk_text(hunk)]}
    assert tc.unexplained(reference_lines, jittor_lines, [entry]) == ([], [])
    same = tc.normalise(JITTOR, os.path.join(tc.JITTOR, "x.py"))
    assert tc.unexplained(reference_lines, same, [entry]) == ([], [tc.hunk_text(hunk)])
