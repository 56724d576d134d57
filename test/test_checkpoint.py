"""Checkpoint loading: the official layout, safe loading and clear refusals; random test weights.

What the file format decides (containers, unsafe pickles, non-torch files) is tested on files;
the layout checks (missing, mis-shaped, extra keys) on state dicts in memory (validate_state_dict,
which loading ends with)."""
import hashlib
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from acr_ros.acr import checkpoint as ckpt
from acr_ros.acr.checkpoint import (CheckpointError, CheckpointNotFoundError, checkpoint_id, load_acr_network,
                                    load_acr_state_dict, validate_state_dict)
from support.official_layout import official_layout
from support.random_weights import random_acr_network, random_checkpoint_state


@pytest.fixture(scope="module")
def state(acr_checkpoint):
    return torch.load(acr_checkpoint, map_location="cpu", weights_only=True)


def test_random_checkpoint_has_the_complete_official_layout(state):
    official = official_layout()
    assert set(state) == {"module." + k for k in official}
    for key, (shape, dtype) in official.items():
        t = state["module." + key]
        assert tuple(t.shape) == shape and str(t.dtype) == f"torch.{dtype}", key


def test_loading_strips_the_prefix_and_ignores_segmentation_layers(acr_checkpoint, state):
    sd = load_acr_state_dict(acr_checkpoint)
    assert len(sd) == 2058 and not any(k.startswith(("module.", "segmentation_layers")) for k in sd)
    torch.testing.assert_close(sd["backbone.conv1.weight"], state["module.backbone.conv1.weight"])
    net = load_acr_network(acr_checkpoint)
    assert not net.training
    torch.testing.assert_close(net.contact_layers[2].weight, state["module.contact_layers.2.weight"])


@pytest.mark.parametrize("wrap", ["model_state_dict", "state_dict"])
def test_wrapped_state_dicts_load(tmp_path, state, wrap):
    path = tmp_path / "w.pkl"
    torch.save({wrap: state, "epoch": 7}, path)
    assert len(load_acr_state_dict(path)) == 2058


def test_a_state_dict_without_the_prefix_is_accepted(state):
    assert len(validate_state_dict({k[len("module."):]: v for k, v in state.items()})) == 2058


def test_missing_and_misshaped_keys_are_refused_by_name(state):
    broken = dict(state)
    del broken["module.backbone.conv1.weight"]
    for k in [k for k in broken if ".stage4." in k][:20]:
        del broken[k]
    broken["module.contact_layers.4.weight"] = torch.zeros(109, 200, 1, 1)
    with pytest.raises(CheckpointError) as e:
        validate_state_dict(broken, "broken.pkl")
    msg = str(e.value)
    assert msg.startswith("broken.pkl is not an ACR checkpoint")
    assert "21 missing key(s)" in msg and "backbone.conv1.weight" in msg and "and 11 more" in msg
    assert "1 mis-shaped key(s)" in msg
    assert "contact_layers.4.weight (109, 200, 1, 1) (expected (109, 218, 1, 1))" in msg
    # Only the segmentation_layers are optional.
    no_seg = {k: v for k, v in state.items() if "segmentation_layers" not in k}
    assert len(validate_state_dict(no_seg)) == 2058


def test_missing_file_says_where_it_looked_and_where_to_get_it(tmp_path):
    where = tmp_path / "checkpoints" / "wild.pkl"
    with pytest.raises(CheckpointNotFoundError) as e:
        load_acr_state_dict(where)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
    assert str(where) in str(e.value) and "Google Drive" in str(e.value) and "README" in str(e.value)


@pytest.mark.parametrize("content", [b"hello, this is not a checkpoint", b"", b"PK\x03\x04truncated zip"])
def test_non_torch_files_are_refused(tmp_path, content):
    path = tmp_path / "wild.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_acr_state_dict(path)
    assert "not a" in str(e.value) and "PyTorch checkpoint" in str(e.value)


@pytest.mark.parametrize("cut", [1, 2, 3, 100])
def test_a_cut_legacy_checkpoint_is_refused_without_the_unpicklers_internals(tmp_path, cut):
    # Cut after 1 byte the unpickler raised IndexError, after 3 (a pickle's STOP) "pop from empty list".
    whole = tmp_path / "whole.pkl"
    torch.save({"module.backbone.conv1.weight": torch.zeros(64, 3, 3, 3)}, whole, _use_new_zipfile_serialization=False)
    path = tmp_path / "wild.pkl"
    path.write_bytes(whole.read_bytes()[:cut] if cut != 3 else b"\x80\x02.")
    with pytest.raises(CheckpointError) as e:
        load_acr_state_dict(path)
    msg = str(e.value)
    assert msg.startswith(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt): download it again")
    assert "Google Drive" in msg and "\n" not in msg
    assert not re.search(r"IndexError|EOFError|index out of range|pop from empty", msg)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused_and_the_code_never_runs(tmp_path, state, how):
    marker = tmp_path / "pwned"
    # Refused while unpickling, before any tensor is looked at: a few of them make the point.
    obj = {"model_state_dict": dict(list(state.items())[:3]), "hook": _RunsCode(marker)}
    path = tmp_path / "wild.pkl"
    if how == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    with pytest.raises(CheckpointError) as e:
        load_acr_state_dict(path)
    msg = str(e.value)
    assert "not a plain state dict" in msg and "unsafe" in msg
    if how == "torch.save":
        assert "mkdir" in msg
    assert not marker.exists()


def test_loader_never_disables_safe_loading():
    source = Path(ckpt.__file__).read_text()
    assert "weights_only=True" in source
    assert not re.search(r"weights_only\s*=\s*False", source)


def test_checkpoint_id_is_name_and_sha256_prefix(acr_checkpoint):
    digest = hashlib.sha256(Path(acr_checkpoint).read_bytes()).hexdigest()
    assert checkpoint_id(acr_checkpoint) == f"wild.pkl:{digest[:12]}"


def test_random_checkpoints_are_reproducible_and_validate_their_arguments():
    sa = random_checkpoint_state(seed=0, detect="left")
    sb = random_checkpoint_state(seed=0, detect="left")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    sc = random_checkpoint_state(seed=0, detect="right")
    assert sa["module.l_final_layers.2.2.bias"].item() == 1.0 and sa["module.r_final_layers.2.2.bias"].item() == -1.0
    assert sc["module.l_final_layers.2.2.bias"].item() == -1.0 and sc["module.r_final_layers.2.2.bias"].item() == 1.0
    with pytest.raises(ValueError):
        random_acr_network(0, "three")
    with pytest.raises(ValueError):
        random_acr_network(0, "both", {"left": (64, 0)})
    with pytest.raises(ValueError):
        random_acr_network(0, "both", {"left": (32, 0)}, grid=32)
