"""MANO: a safe loader for the official pickles and one batched two-sided LBS layer (official
mano/manolayer.py and acr/mano_wrapper.py; docs/architecture.md, "MANO").

The official MANO_LEFT.pkl / MANO_RIGHT.pkl are Python 2 pickles holding chumpy objects and a
scipy.sparse matrix. They are read here without chumpy or scipy and without running pickled code:
a restricted unpickler resolves only the handful of globals a MANO file contains and refuses
everything else. The MANO files come from https://mano.is.tue.mpg.de (licence-gated); this package
never ships them.
"""
from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from acr_ros.acr.rotation import axis_angle_to_matrix
from acr_ros.acr.hands import LEFT, NUM_VERTICES, RIGHT
from acr_ros.acr.model_files import MANO_FILES, MANO_HELP

NUM_FACES = 1538
NUM_MANO_JOINTS = 16
NUM_BETAS = 10
# MANO kinematic tree: wrist; index 1-3, middle 4-6, pinky 7-9, ring 10-11-12, thumb 13-15.
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# Fingertip vertices thumb, index, middle, ring, pinky (joints 16..20 before the reorder).
TIP_VERTICES = {LEFT: (745, 317, 445, 556, 673), RIGHT: (745, 317, 444, 556, 673)}
# 16 MANO joints + 5 tips -> wrist, thumb, index, middle, ring, pinky (each base to tip).
REORDER_21 = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
# The MANO joint whose frame each of the 21 output joints takes (a tip takes its parent's).
ROTATION_SOURCE_21 = (0, 13, 14, 15, 15, 1, 2, 3, 3, 4, 5, 6, 6, 10, 11, 12, 12, 7, 8, 9, 9)
ROOT_ALIGN_JOINT = 9  # middle-finger MCP in the 21-joint order

_EXPECTED_SHAPES = {
    "v_template": (NUM_VERTICES, 3),
    "shapedirs": (NUM_VERTICES, 3, NUM_BETAS),
    "posedirs": (NUM_VERTICES, 3, 135),
    "J_regressor": (NUM_MANO_JOINTS, NUM_VERTICES),
    "weights": (NUM_VERTICES, NUM_MANO_JOINTS),
    "kintree_table": (2, NUM_MANO_JOINTS),
    "f": (NUM_FACES, 3),
    "hands_mean": (45,),
}


class ManoFileError(ValueError):
    """A MANO file is missing, unreadable, unsafe or not shaped like MANO."""


class ManoFileNotFoundError(ManoFileError, FileNotFoundError):
    """The MANO file is not where it was looked for."""


# ------------------------------------------------------------------------------------------------
# Restricted unpickling


class _ChumpyStandIn:
    """Takes the place of a chumpy object: keeps the pickled state, yields the stored array."""

    chumpy_class = "chumpy.ch.Ch"

    def __setstate__(self, state):
        self.state = state

    def to_array(self) -> np.ndarray:
        state = getattr(self, "state", None)
        if not isinstance(state, dict) or "x" not in state:
            raise TypeError(f"{self.chumpy_class} object holds no stored array (a chumpy expression "
                            "cannot be evaluated without chumpy)")
        return _to_numpy(state["x"])


class _SparseStandIn:
    """Takes the place of a scipy.sparse CSC/CSR matrix; rebuilds the dense matrix without scipy."""

    sparse_format = "csc"

    def __setstate__(self, state):
        self.state = state

    def to_array(self) -> np.ndarray:
        s = self.state
        shape = s.get("_shape", s.get("shape"))
        if shape is None:
            raise TypeError("sparse matrix without a shape")
        rows, cols = (int(v) for v in shape)
        data = np.asarray(s["data"])
        indices = np.asarray(s["indices"], dtype=np.int64)
        indptr = np.asarray(s["indptr"], dtype=np.int64)
        fmt = s.get("format", self.sparse_format)
        major = cols if fmt == "csc" else rows
        if indptr.shape != (major + 1,) or indices.shape != data.shape or indptr[-1] != data.size:
            raise TypeError("inconsistent sparse matrix arrays")
        dense = np.zeros((rows, cols), dtype=data.dtype if data.dtype.kind == "f" else np.float64)
        counts = np.diff(indptr)
        major_idx = np.repeat(np.arange(major), counts)
        if fmt == "csc":
            np.add.at(dense, (indices, major_idx), data)  # add: duplicates sum, as in scipy
        else:
            np.add.at(dense, (major_idx, indices), data)
        return dense


_SPARSE_MODULES = {"scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr"}
_SPARSE_NAMES = {"csc_matrix": "csc", "csc_array": "csc", "csr_matrix": "csr", "csr_array": "csr"}


def _numpy_attr(submodule: str, name: str):
    # numpy 2 moved numpy.core to numpy._core; pickles name either.
    for mod in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"numpy has no {submodule}.{name}")


def _latin1_encode(text, encoding="latin1"):
    # Python 3 protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); allow only that.
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ManoUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path
        self._classes: dict = {}

    def _stand_in(self, base, module: str, name: str, **attrs):
        key = (module, name)
        if key not in self._classes:
            self._classes[key] = type(name, (base,), dict(attrs))
        return self._classes[key]

    def _reconstructor(self, cls, base, state):
        # copyreg._reconstructor (protocols 0/1): only for our stand-ins.
        if not (isinstance(cls, type) and issubclass(cls, (_ChumpyStandIn, _SparseStandIn))) or base is not object:
            raise ManoFileError(f"{self._path}: refusing copyreg._reconstructor for {cls!r}")
        return object.__new__(cls)

    def find_class(self, module: str, name: str):
        mod = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if mod in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return _numpy_attr("multiarray", name)
        if mod in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return _numpy_attr("numeric", name)
        if mod == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if mod == "builtins" and name in ("set", "frozenset", "object"):
            return {"set": set, "frozenset": frozenset, "object": object}[name]
        if mod == "copyreg" and name == "_reconstructor":
            return self._reconstructor
        if mod == "_codecs" and name == "encode":
            return _latin1_encode
        if mod == "chumpy" or mod.startswith("chumpy."):
            return self._stand_in(_ChumpyStandIn, mod, name, chumpy_class=f"{mod}.{name}")
        if mod in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return self._stand_in(_SparseStandIn, mod, name, sparse_format=_SPARSE_NAMES[name])
        raise ManoFileError(
            f"{self._path}: refusing to load {module}.{name}: a MANO file holds only numpy arrays, "
            "chumpy arrays and scipy sparse matrices, and nothing else is unpickled")


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, (_ChumpyStandIn, _SparseStandIn)):
        return value.to_array()
    return np.asarray(value)


# ------------------------------------------------------------------------------------------------
# Model data


@dataclass
class ManoModel:
    """The arrays of one MANO side, as used by ACR (left shapedirs already x-fixed by default)."""

    side: str
    v_template: np.ndarray    # (778, 3) float32
    shapedirs: np.ndarray     # (778, 3, 10) float32
    posedirs: np.ndarray      # (778, 3, 135) float32
    J_regressor: np.ndarray   # (16, 778) float32, dense
    weights: np.ndarray       # (778, 16) float32
    parents: np.ndarray       # (16,) int64, root -1
    faces: np.ndarray         # (1538, 3) int64
    hands_mean: np.ndarray    # (45,) float32, axis-angle mean finger pose
    path: str = ""


def _normalise_side(side) -> str:
    if side in (0, "l", "L", LEFT, "LEFT"):
        return LEFT
    if side in (1, "r", "R", RIGHT, "RIGHT"):
        return RIGHT
    raise ValueError(f"side must be {LEFT!r} or {RIGHT!r}, got {side!r}")


def load_mano(path: Union[str, Path], side: Optional[str] = None, *, fix_left_shapedirs: bool = True) -> ManoModel:
    """Load one official MANO pickle (or a plain-numpy one) without chumpy, scipy or pickled code.

    ``path`` is the .pkl file or the folder holding MANO_LEFT.pkl / MANO_RIGHT.pkl. ``side`` is
    'left' or 'right' (taken from the file name when omitted). For the left side the x component of
    shapedirs is negated, as ACR does for the known MANO_LEFT shape-blendshape bug.
    """
    path = Path(path)
    if side is None:
        upper = path.name.upper()
        if path.is_dir() or ("LEFT" in upper) == ("RIGHT" in upper):
            raise ValueError(f"cannot tell the hand side of {path}; pass side='left' or 'right'")
        side = LEFT if "LEFT" in upper else RIGHT
    side = _normalise_side(side)
    if path.is_dir():
        path = path / MANO_FILES[side]
    if not path.is_file():
        raise ManoFileNotFoundError(
            f"MANO model file not found: looked for {path}. {MANO_HELP}")

    try:
        with open(path, "rb") as f:
            data = _ManoUnpickler(f, path).load()
    except ManoFileError:
        raise
    except Exception as e:  # truncated file, wrong format, ...
        raise ManoFileError(f"{path}: not a readable MANO pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise ManoFileError(f"{path}: expected a dict of MANO arrays, found {type(data).__name__}")

    arrays = {}
    for key, shape in _EXPECTED_SHAPES.items():
        if key not in data:
            raise ManoFileError(f"{path}: missing key {key!r} (not a MANO model file?)")
        try:
            arr = _to_numpy(data[key])
        except Exception as e:
            raise ManoFileError(f"{path}: key {key!r} cannot be read as an array ({e})") from e
        if arr.shape != shape:
            raise ManoFileError(f"{path}: key {key!r} has shape {arr.shape}, expected {shape}")
        if arr.dtype.kind not in "fiub":
            raise ManoFileError(f"{path}: key {key!r} has dtype {arr.dtype}, expected numbers")
        arrays[key] = arr

    float_keys = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "hands_mean")
    for key in float_keys:
        if not np.all(np.isfinite(arrays[key])):
            raise ManoFileError(f"{path}: key {key!r} holds non-finite values")

    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # the root's parent is stored as 4294967295
    if tuple(parents.tolist()) != MANO_PARENTS:
        raise ManoFileError(f"{path}: key 'kintree_table' is not the MANO kinematic tree: {parents.tolist()}")
    faces = arrays["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= NUM_VERTICES:
        raise ManoFileError(f"{path}: key 'f' has vertex indices outside 0..{NUM_VERTICES - 1}")

    shapedirs = np.array(arrays["shapedirs"], dtype=np.float32)
    if side == LEFT and fix_left_shapedirs:
        shapedirs[:, 0, :] *= -1
    return ManoModel(
        side=side,
        v_template=arrays["v_template"].astype(np.float32),
        shapedirs=shapedirs,
        posedirs=arrays["posedirs"].astype(np.float32),
        J_regressor=arrays["J_regressor"].astype(np.float32),
        weights=arrays["weights"].astype(np.float32),
        parents=parents,
        faces=faces,
        hands_mean=arrays["hands_mean"].astype(np.float32),
        path=str(path),
    )


# ------------------------------------------------------------------------------------------------
# Layer


@dataclass
class ManoOutput:
    vertices: torch.Tensor         # (N, 778, 3) metres, root-aligned on joint 9
    joints: torch.Tensor           # (N, 21, 3) metres, root-aligned, wrist/thumb/index/middle/ring/pinky
    joint_rotations: torch.Tensor  # (N, 21, 3, 3) global rotation of each joint's frame


# Kinematic levels of the MANO tree: each level's parents are the previous level, same position.
_LEVELS = ((1, 4, 7, 10, 13), (2, 5, 8, 11, 14), (3, 6, 9, 12, 15))
# Position of MANO joint j in cat([root, level1, level2, level3]).
_LEVEL_ORDER = (0, 1, 6, 11, 2, 7, 12, 3, 8, 13, 4, 9, 14, 5, 10, 15)


class ManoLayer(nn.Module):
    """Both MANO sides in one module; one batched LBS for rows of either side.

    Equivalent to the official two manopth layers (use_pca=False, flat_hand_mean=False,
    center_idx=9, left shapedirs fix), with the root rotation given as a matrix.
    """

    def __init__(self, left: ManoModel, right: ManoModel):
        super().__init__()
        if left.side != LEFT or right.side != RIGHT:
            raise ValueError("ManoLayer(left, right) needs the left then the right model")
        for m in (left, right):
            if tuple(np.asarray(m.parents).tolist()) != MANO_PARENTS:
                raise ValueError(f"{m.side} model: parents are not the MANO kinematic tree")
        models = (left, right)

        def stack(name, reshape=None):
            arrs = [getattr(m, name) for m in models]
            if reshape is not None:
                arrs = [reshape(a) for a in arrs]
            return torch.from_numpy(np.stack(arrs))

        # Not persistent: model data, not weights; keeps them out of checkpoints of a parent module.
        self.register_buffer("v_template", stack("v_template"), persistent=False)            # (2,778,3)
        self.register_buffer("shapedirs", stack(                                             # (2,10,2334)
            "shapedirs", lambda a: a.reshape(NUM_VERTICES * 3, NUM_BETAS).T.copy()), persistent=False)
        self.register_buffer("posedirs", stack(                                              # (2,135,2334)
            "posedirs", lambda a: a.reshape(NUM_VERTICES * 3, 135).T.copy()), persistent=False)
        self.register_buffer("J_regressor", stack("J_regressor"), persistent=False)          # (2,16,778)
        self.register_buffer("weights", stack("weights"), persistent=False)                  # (2,778,16)
        self.register_buffer("hands_mean", stack("hands_mean"), persistent=False)            # (2,45)
        self.register_buffer("tips", torch.tensor([TIP_VERTICES[LEFT], TIP_VERTICES[RIGHT]]), persistent=False)
        self.register_buffer("reorder", torch.tensor(REORDER_21), persistent=False)
        self.register_buffer("rotation_source", torch.tensor(ROTATION_SOURCE_21), persistent=False)
        self.register_buffer("level_joints", torch.tensor(_LEVELS), persistent=False)
        self.register_buffer("level_parents", torch.tensor(((0,) * 5,) + _LEVELS[:-1]), persistent=False)
        self.register_buffer("level_order", torch.tensor(_LEVEL_ORDER), persistent=False)
        self._faces = {LEFT: left.faces, RIGHT: right.faces}

    @classmethod
    def from_directory(cls, mano_dir: Union[str, Path]) -> "ManoLayer":
        """Load MANO_LEFT.pkl and MANO_RIGHT.pkl from a folder."""
        return cls(load_mano(mano_dir, LEFT), load_mano(mano_dir, RIGHT))

    def faces(self, side) -> np.ndarray:
        """(1538, 3) int64 triangles of 'left'/'right' (or 0/1)."""
        return self._faces[_normalise_side(side)]

    def forward(self, side: torch.Tensor, global_orient: torch.Tensor, finger_pose: torch.Tensor,
                betas: torch.Tensor) -> ManoOutput:
        """side (N,) 0=left 1=right; global_orient (N,3,3) rotation matrices (or (N,3) axis-angle);
        finger_pose (N,45) axis-angle relative to the MANO mean pose; betas (N,10)."""
        n = side.shape[0]
        side = side.long()
        dtype = self.v_template.dtype
        if global_orient.shape[-1] == 3 and global_orient.dim() == 2:
            global_orient = axis_angle_to_matrix(global_orient)
        root_rot = global_orient.to(dtype)
        rows = torch.arange(n, device=side.device)

        # Shape blend shapes: both sides in one GEMM, then each row keeps its own side.
        v_shaped = self.v_template[side] + torch.matmul(betas.to(dtype).unsqueeze(0), self.shapedirs)[
            side, rows].view(n, NUM_VERTICES, 3)
        joints = torch.bmm(self.J_regressor[side], v_shaped)                              # (N,16,3)

        # Mean pose added in axis-angle space, then the official quaternion Rodrigues.
        full_pose = finger_pose.to(dtype) + self.hands_mean[side]
        rots = axis_angle_to_matrix(full_pose.view(n, 15, 3))                            # (N,15,3,3)
        eye = torch.eye(3, dtype=dtype, device=rots.device)
        pose_feat = (rots - eye).reshape(n, 135)
        v_posed = v_shaped + torch.matmul(pose_feat.unsqueeze(0), self.posedirs)[side, rows].view(n, NUM_VERTICES, 3)

        # Kinematic chain, level by level (5 fingers at once). Index tensors are buffers: a
        # Python-list index would be uploaded (and synced) on every call on CUDA.
        g_rot = [root_rot.unsqueeze(1)]
        g_pos = [joints[:, :1]]
        for lev in range(len(_LEVELS)):
            idx, parent_idx = self.level_joints[lev], self.level_parents[lev]
            rel = (joints[:, idx] - joints[:, parent_idx]).unsqueeze(-1)                 # (N,5,3,1)
            p_rot, p_pos = g_rot[lev], g_pos[lev]
            g_pos.append(torch.matmul(p_rot, rel).squeeze(-1) + p_pos)
            g_rot.append(torch.matmul(p_rot, rots[:, idx - 1]))
        glob_rot = torch.cat(g_rot, 1)[:, self.level_order]                              # (N,16,3,3)
        glob_pos = torch.cat(g_pos, 1)[:, self.level_order]                              # (N,16,3)

        # Skinning: per-joint affine transforms (rest pose -> posed), blended by the weights.
        trans = glob_pos - torch.matmul(glob_rot, joints.unsqueeze(-1)).squeeze(-1)
        affine = torch.cat([glob_rot.reshape(n, NUM_MANO_JOINTS, 9), trans], dim=-1)     # (N,16,12)
        blended = torch.bmm(self.weights[side], affine)                                  # (N,778,12)
        verts = torch.matmul(blended[..., :9].view(n, NUM_VERTICES, 3, 3), v_posed.unsqueeze(-1)).squeeze(-1)
        verts = verts + blended[..., 9:]

        tips = torch.gather(verts, 1, self.tips[side].unsqueeze(-1).expand(n, 5, 3))
        joints21 = torch.cat([glob_pos, tips], dim=1)[:, self.reorder]
        center = joints21[:, ROOT_ALIGN_JOINT:ROOT_ALIGN_JOINT + 1]
        return ManoOutput(
            vertices=verts - center,
            joints=joints21 - center,
            joint_rotations=glob_rot[:, self.rotation_source],
        )
