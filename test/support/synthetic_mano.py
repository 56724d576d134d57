"""Synthetic MANO-format pickles for tests and demos without the licensed MANO files.

The files hold RANDOM arrays with the shapes, dtypes and pickle layout of MPI's MANO_LEFT.pkl /
MANO_RIGHT.pkl (official mano/manolayer.py reads these keys). They are NOT MANO data and give no
meaningful hand shape: only the kinematic tree is MANO's, the skeleton is a rough hand so that
joints and skinning are sensible.

``chumpy_format=True`` writes what MPI's Python 2 files look like: protocol 2, Python 2 strings
(BINSTRING, read back with encoding='latin1'), ``numpy.core.multiarray._reconstruct``, shapedirs as
a ``chumpy.ch.Ch`` object and J_regressor as a ``scipy.sparse.csc.csc_matrix``. Neither chumpy nor
scipy is needed: tiny stand-in classes are written under those names by a pickler that emits the
global names directly, so nothing is registered in ``sys.modules``.
"""
from __future__ import annotations

import copyreg
import io
import pickle
import struct
from pathlib import Path
from typing import Union

import numpy as np

from acr_ros.acr.hands import LEFT, NUM_VERTICES, RIGHT
from acr_ros.acr.mano import MANO_FILES, MANO_PARENTS, NUM_BETAS, NUM_FACES, NUM_MANO_JOINTS, TIP_VERTICES, _numpy_attr

_ROOT_PARENT = 4294967295  # how MPI's kintree_table stores "no parent"

# A rough right-hand skeleton (metres): wrist at the origin, fingers along +x.
_FINGER_BASES = {  # MANO joint of the base -> (base position, direction)
    1: ((0.090, 0.022, 0.000), (1.0, 0.05, 0.0)),     # index
    4: ((0.095, 0.000, 0.000), (1.0, 0.0, 0.0)),      # middle
    7: ((0.080, -0.040, 0.000), (1.0, -0.15, 0.0)),   # pinky
    10: ((0.090, -0.020, 0.000), (1.0, -0.07, 0.0)),  # ring
    13: ((0.025, 0.030, -0.010), (0.6, 0.8, -0.1)),   # thumb
}
_SEGMENTS = (0.035, 0.025, 0.020)
_TIP_JOINT = {0: 15, 1: 3, 2: 6, 3: 12, 4: 9}  # tip k (thumb..pinky) -> distal MANO joint


def _skeleton(side: str) -> tuple[np.ndarray, np.ndarray]:
    """(16,3) joint positions and (16,3) unit finger directions of a plausible hand."""
    joints = np.zeros((NUM_MANO_JOINTS, 3))
    dirs = np.tile([1.0, 0.0, 0.0], (NUM_MANO_JOINTS, 1))
    for base, (pos, d) in _FINGER_BASES.items():
        d = np.asarray(d) / np.linalg.norm(d)
        p = np.asarray(pos, dtype=np.float64)
        for k in range(3):
            joints[base + k] = p
            dirs[base + k] = d
            p = p + _SEGMENTS[k] * d
    if side == LEFT:  # mirror image
        joints[:, 0] *= -1
        dirs[:, 0] *= -1
    return joints, dirs


def synthetic_mano_arrays(side: str, seed: int = 0) -> dict:
    """The dict a MANO pickle holds, filled with random arrays of the real shapes and dtypes."""
    rng = np.random.default_rng([seed, 0 if side == LEFT else 1])
    joints, dirs = _skeleton(side)
    parents = np.array(MANO_PARENTS)

    # Every vertex belongs to a joint; it sits near that joint, along the bone.
    owner = rng.permutation(np.arange(NUM_VERTICES) % NUM_MANO_JOINTS)
    for k, vid in enumerate(TIP_VERTICES[side]):
        owner[vid] = _TIP_JOINT[k]
    along = rng.uniform(0.0, 0.02, NUM_VERTICES)[:, None]
    v_template = joints[owner] + along * dirs[owner] + rng.normal(0.0, 0.006, (NUM_VERTICES, 3))
    for k, vid in enumerate(TIP_VERTICES[side]):
        j = _TIP_JOINT[k]
        v_template[vid] = joints[j] + 0.022 * dirs[j]

    # J_regressor: each joint is the mean of its vertices (rows sum to 1, sparse like MANO's).
    j_reg = np.zeros((NUM_MANO_JOINTS, NUM_VERTICES))
    j_reg[owner, np.arange(NUM_VERTICES)] = 1.0
    j_reg /= j_reg.sum(1, keepdims=True)

    # Skinning weights: mostly the owner, some parent, a little of everything; rows sum to 1.
    weights = 0.05 * rng.dirichlet(np.ones(NUM_MANO_JOINTS), NUM_VERTICES)
    weights[np.arange(NUM_VERTICES), owner] += 0.8
    weights[np.arange(NUM_VERTICES), np.maximum(parents[owner], 0)] += 0.15

    faces = np.stack([rng.choice(NUM_VERTICES, 3, replace=False) for _ in range(NUM_FACES)]).astype(np.uint32)
    kintree = np.stack([np.where(parents < 0, _ROOT_PARENT, parents), np.arange(NUM_MANO_JOINTS)]).astype(np.int64)
    hands_components = np.linalg.qr(rng.normal(size=(45, 45)))[0]
    return {
        "hands_components": hands_components,
        "f": faces,
        "J_regressor": j_reg,
        "kintree_table": kintree,
        "J": j_reg @ v_template,
        "bs_style": "lbs",
        "hands_coeffs": rng.normal(0.0, 0.5, (1554, 45)),
        "weights": weights,
        "posedirs": rng.normal(0.0, 0.002, (NUM_VERTICES, 3, 135)),
        "hands_mean": rng.normal(0.0, 0.15, 45),
        "v_template": v_template,
        "shapedirs": rng.normal(0.0, 0.003, (NUM_VERTICES, 3, NUM_BETAS)),
        "bs_type": "lrotmin",
    }


# ------------------------------------------------------------------------------------------------
# MPI-style (Python 2, chumpy, scipy.sparse) pickling without chumpy or scipy


class _ChWriter:
    """Pickles as a plain ``chumpy.ch.Ch`` wrapping an array (the state chumpy's __getstate__ gives)."""

    def __init__(self, x: np.ndarray):
        self.state = {"x": np.asarray(x, dtype=np.float64), "_dirty_vars": {"x"}, "_itr": None,
                      "_depends_on_deps": {}, "_make_dense": False, "_make_sparse": False}

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


class _CscWriter:
    """Pickles as an old-scipy ``csc_matrix`` (its instance __dict__ as the state)."""

    def __init__(self, dense: np.ndarray):
        rows, cols = dense.shape
        col_idx, row_idx = np.nonzero(dense.T)  # non-zeros in column-major order
        self.state = {
            "format": "csc",
            "_shape": (rows, cols),
            "maxprint": 50,
            "indices": row_idx.astype(np.int32),
            "indptr": np.concatenate([[0], np.cumsum(np.bincount(col_idx, minlength=cols))]).astype(np.int32),
            "data": dense[row_idx, col_idx].astype(np.float64),
        }

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.state


class _Py2Pickler(pickle._Pickler):
    """The pure-Python pickler, writing str/bytes as Python 2 strings and chosen global names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file):
        super().__init__(file, protocol=2)
        self._names = {
            id(_numpy_attr("multiarray", "_reconstruct")): ("numpy.core.multiarray", "_reconstruct"),
            id(_ChWriter): ("chumpy.ch", "Ch"),
            id(_CscWriter): ("scipy.sparse.csc", "csc_matrix"),
        }

    def save_global(self, obj, name=None):
        spec = self._names.get(id(obj))
        if spec is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{spec[0]}\n{spec[1]}\n".encode("ascii"))
        self.memoize(obj)

    def _save_py2_string(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def _save_str(self, obj):
        try:
            obj.encode("latin1")
        except UnicodeEncodeError:
            return pickle._Pickler.save_str(self, obj)  # a Python 2 unicode
        self._save_py2_string(obj)

    dispatch[bytes] = _save_py2_string
    dispatch[str] = _save_str


def dumps_mpi_style(data: dict) -> bytes:
    """Pickle a MANO dict the way MPI's files are (shapedirs as Ch, J_regressor as csc_matrix)."""
    out = dict(data)
    out["shapedirs"] = _ChWriter(data["shapedirs"])
    out["J_regressor"] = _CscWriter(np.asarray(data["J_regressor"]))
    buf = io.BytesIO()
    _Py2Pickler(buf).dump(out)
    return buf.getvalue()


def write_synthetic_mano(directory: Union[str, Path], seed: int = 0, chumpy_format: bool = False) -> Path:
    """Write MANO_LEFT.pkl and MANO_RIGHT.pkl of random arrays (not MANO data) into ``directory``.

    chumpy_format=False: a plain dict of numpy arrays (dense J_regressor), loadable by smplx.
    chumpy_format=True: the structure of MPI's Python 2 files (see the module docstring).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for side in (LEFT, RIGHT):
        data = synthetic_mano_arrays(side, seed)
        raw = dumps_mpi_style(data) if chumpy_format else pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
        (directory / MANO_FILES[side]).write_bytes(raw)
    return directory
