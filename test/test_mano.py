"""MANO loading (official pickle layout, safely) and the batched two-sided LBS layer."""
import io
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import smplx
import torch
from smplx.lbs import batch_rigid_transform

from acr_ros.acr.mano import (MANO_PARENTS, REORDER_21, ROTATION_SOURCE_21, TIP_VERTICES, ManoFileError,
                              ManoFileNotFoundError, ManoLayer, load_mano)
from acr_ros.acr.rotation import axis_angle_to_matrix
from support.synthetic_mano import dumps_mpi_style, synthetic_mano_arrays, write_synthetic_mano

KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "parents", "faces", "hands_mean")


@pytest.fixture(scope="module")
def chumpy_dir(tmp_path_factory):
    return write_synthetic_mano(tmp_path_factory.mktemp("mano_ch"), seed=0, chumpy_format=True)


@pytest.fixture(scope="module")
def layer(mano_dir):
    return ManoLayer.from_directory(mano_dir)


def _globals(raw: bytes) -> set:
    out = io.StringIO()
    pickletools.dis(raw, out=out)
    return {line.split("GLOBAL", 1)[1].strip().strip("'") for line in out.getvalue().splitlines() if "GLOBAL" in line}


# --- loading -------------------------------------------------------------------------------------

def test_chumpy_format_is_mpi_layout(chumpy_dir):
    raw = (chumpy_dir / "MANO_RIGHT.pkl").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2
    names = _globals(raw)
    assert {"chumpy.ch Ch", "scipy.sparse.csc csc_matrix", "numpy.core.multiarray _reconstruct"} <= names
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "SHORT_BINSTRING" in ops and "BINSTRING" in ops  # Python 2 str, needs encoding='latin1'
    # A plain unpickler needs chumpy (not installed here), as with MPI's files.
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(raw, encoding="latin1")


@pytest.mark.parametrize("side", ["left", "right"])
def test_chumpy_and_plain_pickles_load_identically(mano_dir, chumpy_dir, side):
    a, b = load_mano(chumpy_dir, side), load_mano(mano_dir, side)
    ref = synthetic_mano_arrays(side, seed=0)
    for key in KEYS:
        x, y = getattr(a, key), getattr(b, key)
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y, err_msg=key)
    np.testing.assert_array_equal(a.J_regressor, ref["J_regressor"].astype(np.float32))
    np.testing.assert_array_equal(a.v_template, ref["v_template"].astype(np.float32))
    assert a.parents.tolist() == list(MANO_PARENTS) and a.parents.dtype == np.int64
    assert a.faces.shape == (1538, 3) and a.faces.max() < 778
    np.testing.assert_allclose(a.J_regressor.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a.weights.sum(1), 1.0, atol=1e-6)


def test_loading_needs_neither_chumpy_nor_scipy(chumpy_dir):
    code = textwrap.dedent(f"""
        import sys
        from acr_ros.acr.mano import load_mano
        m = load_mano({str(chumpy_dir)!r}, 'left')
        assert m.shapedirs.shape == (778, 3, 10)
        assert not any(k == 'chumpy' or k.startswith(('chumpy.', 'scipy')) for k in sys.modules), sorted(sys.modules)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_numpy_pickles_of_any_protocol(tmp_path, protocol):
    data = synthetic_mano_arrays("right", seed=3)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    m = load_mano(path)  # side from the file name
    assert m.side == "right"
    np.testing.assert_array_equal(m.posedirs, data["posedirs"].astype(np.float32))


def test_left_shapedirs_fix(chumpy_dir):
    fixed, raw = load_mano(chumpy_dir, "left"), load_mano(chumpy_dir, "left", fix_left_shapedirs=False)
    np.testing.assert_array_equal(fixed.shapedirs[:, 0], -raw.shapedirs[:, 0])
    np.testing.assert_array_equal(fixed.shapedirs[:, 1:], raw.shapedirs[:, 1:])
    assert np.abs(raw.shapedirs[:, 0]).max() > 0
    right = load_mano(chumpy_dir, "right")
    np.testing.assert_array_equal(right.shapedirs, load_mano(chumpy_dir, "right", fix_left_shapedirs=False).shapedirs)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_is_refused(tmp_path, nested):
    marker = tmp_path / "pwned"
    payload = _Evil(marker)
    obj = dict(synthetic_mano_arrays("right"), hands_mean=payload) if nested else payload
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(ManoFileError) as err:
        load_mano(path, "right")
    assert f"{os.system.__module__}.system" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load")])
def test_other_globals_are_refused(tmp_path, target):
    raw = b"\x80\x02c" + f"{target[0]}\n{target[1]}\n".encode() + b"X\x01\x00\x00\x001\x85R."
    path = tmp_path / "MANO_LEFT.pkl"
    path.write_bytes(raw)
    with pytest.raises(ManoFileError, match=f"{target[0]}.{target[1]}"):
        load_mano(path)


def test_missing_key_and_wrong_shape(tmp_path):
    data = synthetic_mano_arrays("right")
    del data["hands_mean"]
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(dumps_mpi_style(data))
    with pytest.raises(ManoFileError, match=r"MANO_RIGHT\.pkl: missing key 'hands_mean'"):
        load_mano(path, "right")

    data = synthetic_mano_arrays("right")
    data["posedirs"] = data["posedirs"][:, :, :100]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ManoFileError, match=r"'posedirs' has shape \(778, 3, 100\), expected \(778, 3, 135\)"):
        load_mano(path, "right")

    data = synthetic_mano_arrays("right")
    data["kintree_table"] = data["kintree_table"][:, ::-1].copy()
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ManoFileError, match="kinematic tree"):
        load_mano(path, "right")

    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ManoFileError, match="expected a dict"):
        load_mano(path, "right")
    path.write_bytes(b"\x80\x02}q\x00(X\x01")  # truncated
    with pytest.raises(ManoFileError, match="not a readable MANO pickle"):
        load_mano(path, "right")


def test_missing_file(tmp_path):
    with pytest.raises(ManoFileNotFoundError) as err:
        load_mano(tmp_path, "left")
    msg = str(err.value)
    assert str(tmp_path / "MANO_LEFT.pkl") in msg and "https://mano.is.tue.mpg.de" in msg
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    with pytest.raises(FileNotFoundError):
        ManoLayer.from_directory(tmp_path)
    with pytest.raises(ValueError, match="side"):
        load_mano(tmp_path)


# --- LBS -----------------------------------------------------------------------------------------

def _smplx_reference(mano_dir, side, go, hp, be, dtype):
    m = smplx.MANO(str(mano_dir), is_rhand=side == "right", use_pca=False, flat_hand_mean=False, dtype=dtype)
    if side == "left":
        with torch.no_grad():
            m.shapedirs[:, 0, :] *= -1  # ACR's left fix, applied to smplx too
    out = m(betas=be, global_orient=go, hand_pose=hp)
    verts, j16 = out.vertices, out.joints
    j21 = torch.cat([j16, verts[:, list(TIP_VERTICES[side])]], 1)[:, list(REORDER_21)]
    center = j21[:, 9:10]
    # Global joint rotations from smplx's own kinematic chain.
    full = torch.cat([go, hp], 1) + m.pose_mean
    rots = smplx.lbs.batch_rodrigues(full.view(-1, 3)).view(go.shape[0], 16, 3, 3)
    j_rest = smplx.lbs.vertices2joints(m.J_regressor, m.v_template + smplx.lbs.blend_shapes(be, m.shapedirs))
    _, rel = batch_rigid_transform(rots, j_rest, m.parents)
    return verts - center, j21 - center, rel[:, :, :3, :3]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-7), (torch.float32, 1e-5)])
def test_lbs_matches_smplx_both_sides_in_one_batch(mano_dir, dtype, tol):
    g = torch.Generator().manual_seed(7)
    n = 6
    side = torch.tensor([0, 1, 1, 0, 1, 0])
    go = torch.randn(n, 3, generator=g, dtype=dtype)
    hp = torch.randn(n, 45, generator=g, dtype=dtype) * 0.6
    be = torch.randn(n, 10, generator=g, dtype=dtype) * 2
    lay = ManoLayer.from_directory(mano_dir).to(dtype)
    out = lay(side, axis_angle_to_matrix(go), hp, be)
    assert out.vertices.shape == (n, 778, 3) and out.joints.shape == (n, 21, 3)
    assert out.joint_rotations.shape == (n, 21, 3, 3) and out.vertices.dtype == dtype
    for s, name in ((0, "left"), (1, "right")):
        rows = (side == s).nonzero().flatten()
        v, j, rot16 = _smplx_reference(mano_dir, name, go[rows], hp[rows], be[rows], dtype)
        torch.testing.assert_close(out.vertices[rows], v, rtol=0, atol=tol)
        torch.testing.assert_close(out.joints[rows], j, rtol=0, atol=tol)
        torch.testing.assert_close(out.joint_rotations[rows], rot16[:, list(ROTATION_SOURCE_21)], rtol=0, atol=tol)


def test_lbs_outputs(layer):
    g = torch.Generator().manual_seed(8)
    n = 4
    rot = axis_angle_to_matrix(torch.randn(n, 3, generator=g))
    hp = torch.randn(n, 45, generator=g) * 0.3
    be = torch.randn(n, 10, generator=g)
    left = layer(torch.zeros(n, dtype=torch.long), rot, hp, be)
    right = layer(torch.ones(n, dtype=torch.long), rot, hp, be)
    # Root-aligned on the middle MCP; fingertips are the MANO tip vertices of each side.
    assert torch.all(left.joints[:, 9] == 0) and torch.all(right.joints[:, 9] == 0)
    for k, j in enumerate((4, 8, 12, 16, 20)):
        torch.testing.assert_close(left.joints[:, j], left.vertices[:, TIP_VERTICES["left"][k]])
        torch.testing.assert_close(right.joints[:, j], right.vertices[:, TIP_VERTICES["right"][k]])
    assert (left.vertices - right.vertices).abs().max() > 0.05  # the sides are different models
    # Rows are independent: one row alone gives the same result as in the batch.
    alone = layer(torch.tensor([1]), rot[2:3], hp[2:3], be[2:3])
    torch.testing.assert_close(alone.vertices[0], right.vertices[2], rtol=0, atol=1e-6)
    # Axis-angle root is accepted too.
    torch.testing.assert_close(layer(torch.tensor([0]), torch.zeros(1, 3), hp[:1], be[:1]).vertices,
                               layer(torch.tensor([0]), torch.eye(3)[None], hp[:1], be[:1]).vertices)
    # Joint frames are rotations; the wrist's is the global orientation; a tip shares its parent's.
    r = left.joint_rotations
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3).expand_as(r), rtol=0, atol=1e-5)
    torch.testing.assert_close(r[:, 0], rot)
    assert torch.equal(r[:, 4], r[:, 3]) and torch.equal(r[:, 20], r[:, 19])


def test_mean_pose_is_added(layer):
    eye = torch.eye(3)[None]
    zero, betas = torch.zeros(1, 45), torch.zeros(1, 10)
    mean = layer(torch.tensor([1]), eye, zero, betas)
    flat = layer(torch.tensor([1]), eye, -layer.hands_mean[1:2], betas)
    assert (mean.vertices - flat.vertices).abs().max() > 1e-3
    # A flat hand with identity root: every joint frame is the identity.
    torch.testing.assert_close(flat.joint_rotations[0], torch.eye(3).expand(21, 3, 3), rtol=0, atol=1e-6)


def test_faces(layer, mano_dir):
    for side in ("left", "right", 0, 1):
        f = layer.faces(side)
        assert f.shape == (1538, 3) and f.dtype == np.int64
    np.testing.assert_array_equal(layer.faces("left"), load_mano(mano_dir, "left").faces)
    assert not np.array_equal(layer.faces("left"), layer.faces("right"))
    assert "v_template" not in layer.state_dict()  # model data stays out of checkpoints


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_lbs_without_sync(mano_dir, layer):
    g = torch.Generator().manual_seed(9)
    side = torch.tensor([0, 1, 0, 1])
    rot = axis_angle_to_matrix(torch.randn(4, 3, generator=g))
    hp, be = torch.randn(4, 45, generator=g) * 0.3, torch.randn(4, 10, generator=g)
    ref = layer(side, rot, hp, be)
    gpu = ManoLayer.from_directory(mano_dir).cuda()
    args = [t.cuda() for t in (side, rot, hp, be)]
    gpu(*args)  # warm-up (library handles)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = gpu(*args)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(out.vertices.cpu(), ref.vertices, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.joint_rotations.cpu(), ref.joint_rotations, rtol=0, atol=1e-5)
