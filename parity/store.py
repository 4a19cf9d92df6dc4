"""Captures on disk: one ``.npz`` per pass, so judging runs offline and memory holds
one pass at a time.

A capture is written as ``<name>.npz`` (arrays keyed ``r0``, ``r1``... in record
order) and ``<name>.json`` (each record's name, module and kind). ``load_capture``
gives the records back with their arrays read from disk only when asked for, so
judging a whole model holds about one tensor pair in memory. A run directory holds
the captures of every pass and ``run.json`` (what ``python -m parity judge`` needs to
judge it again under another tolerance file).
"""
import json
import os

import numpy as np

from rtdetr_common.files import write_atomic, write_text_atomic

from .capture import Capture, Record

RUN_FILE = "run.json"


class StoredRecord:
    """A :class:`Record` whose value is read from its archive on each access."""

    __slots__ = ("name", "module", "kind", "_archive", "_key")

    def __init__(self, name, module, kind, archive, key):
        self.name, self.module, self.kind = name, module, kind
        self._archive, self._key = archive, key

    @property
    def value(self):
        return self._archive[self._key]


def save_capture(directory, name, capture):
    """Write ``capture`` as ``directory/name.npz`` + ``.json``; returns the npz path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.npz")
    arrays = {f"r{i}": np.asarray(r.value) for i, r in enumerate(capture.records)}
    write_atomic(path, lambda handle: np.savez(handle, **arrays), binary=True)
    index = [[r.name, r.module, r.kind] for r in capture.records]
    write_text_atomic(os.path.join(directory, f"{name}.json"), json.dumps(index))
    return path


def load_capture(directory, name):
    """The capture saved as ``name`` under ``directory``, values read lazily."""
    with open(os.path.join(directory, f"{name}.json")) as f:
        index = json.load(f)
    archive = np.load(os.path.join(directory, f"{name}.npz"), allow_pickle=False)
    return Capture(records=[StoredRecord(n, m, k, archive, f"r{i}") for i, (n, m, k) in enumerate(index)])


def capture_from_arrays(arrays, kind="extra"):
    """A capture of ``{name: array}`` (training state after a step), in the dict's order."""
    return Capture(records=[Record(n, np.asarray(v), n, kind) for n, v in arrays.items()])


def save_floors(directory, name, floors):
    """``{tensor name: per-element floor}`` as ``directory/name.npz``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.npz")
    names = list(floors)
    write_atomic(path, lambda handle: np.savez(handle, **{f"f{i}": floors[n] for i, n in enumerate(names)}), binary=True)
    write_text_atomic(os.path.join(directory, f"{name}.json"), json.dumps(names))
    return path


class StoredFloors:
    """The saved floors, as a read-only mapping that reads each array when asked for."""

    def __init__(self, directory, name):
        with open(os.path.join(directory, f"{name}.json")) as f:
            self._keys = {n: f"f{i}" for i, n in enumerate(json.load(f))}
        self._archive = np.load(os.path.join(directory, f"{name}.npz"), allow_pickle=False)

    def get(self, name, default=None):
        key = self._keys.get(name)
        return default if key is None else self._archive[key]

    def __contains__(self, name):
        return name in self._keys


def write_run(directory, info):
    """``run.json``: how the run was made and which passes it saved."""
    write_text_atomic(os.path.join(directory, RUN_FILE), json.dumps(info, indent=1))


def read_run(directory):
    path = os.path.join(directory, RUN_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory} holds no saved parity run ({RUN_FILE} missing); "
                                f"`python -m parity compare ... --keep-captures` saves one")
    with open(path) as f:
        return json.load(f)
