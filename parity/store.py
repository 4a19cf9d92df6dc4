"""Captures on disk: one ``.npz`` per pass, so judging runs offline and memory holds
no capture at all.

A capture is written as ``<name>.npz`` (arrays keyed ``r0``, ``r1``... in record
order) and ``<name>.json`` (each record's name, module and kind). A
:class:`CaptureWriter` streams each record to disk the moment it is recorded, so a
pass holds only what its framework needs; ``load_capture`` gives the records back
with their arrays read from disk only when asked for, so judging a whole model holds
about one tensor pair in memory. A run directory holds the captures of every pass and
``run.json`` (what ``python -m parity judge`` needs to judge it again under another
tolerance file).
"""
import json
import os
import zipfile

import numpy as np

from rtdetr_common.files import write_text_atomic

from .capture import Capture, Record

RUN_FILE = "run.json"


class CaptureWriter:
    """A sink for :func:`parity.capture.capture`: ``append(record)`` writes the record's
    array into ``directory/name.npz`` at once and keeps only its name, module and kind.
    Used as a context manager; the files appear (atomically) when it closes cleanly."""

    def __init__(self, directory, name):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{name}.npz")
        self.index_path = os.path.join(directory, f"{name}.json")
        self._tmp = os.path.join(directory, f".{name}.npz.partial")
        self._zip = zipfile.ZipFile(self._tmp, "w", allowZip64=True)
        self.index = []

    def append(self, record):
        with self._zip.open(f"r{len(self.index)}.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.asarray(record.value), allow_pickle=False)
        self.index.append([record.name, record.module, record.kind])

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        self._zip.close()
        if exc_type is not None:
            os.remove(self._tmp)
            return False
        os.replace(self._tmp, self.path)
        write_text_atomic(self.index_path, json.dumps(self.index))
        return False


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
    """Write an in-memory ``capture`` as ``directory/name.npz`` + ``.json``."""
    with CaptureWriter(directory, name) as writer:
        for record in capture.records:
            writer.append(record)


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
    """``{tensor name: per-element floor}`` (a dict, or an iterable of pairs computed one
    at a time) as a capture ``directory/name``."""
    items = floors.items() if isinstance(floors, dict) else floors
    with CaptureWriter(directory, name) as writer:
        for tensor, floor in items:
            writer.append(Record(tensor, floor, tensor, "floor"))


def remove_capture(directory, name):
    for suffix in (".npz", ".json"):
        os.remove(os.path.join(directory, name + suffix))


class StoredFloors:
    """The saved floors, as a read-only mapping that reads each array when asked for."""

    def __init__(self, directory, name):
        with open(os.path.join(directory, f"{name}.json")) as f:
            self._keys = {n: f"r{i}" for i, (n, _, _) in enumerate(json.load(f))}
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
