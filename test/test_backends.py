"""Backend selection: auto runs the embedded backend only when no ACR file is configured; a set but
unusable path fails clearly, naming the file and the setting to fix."""
import pytest

from acr_ros.acr.options import EngineOptions
from acr_ros.backends import acr_files_problem, create_backend


@pytest.fixture
def fake_files(tmp_path):
    ckpt = tmp_path / "wild.pkl"
    ckpt.write_bytes(b"not a checkpoint")
    mano = tmp_path / "mano"
    mano.mkdir()
    for name in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl"):
        (mano / name).write_bytes(b"x")
    return ckpt, mano


def test_auto_without_files_uses_mediapipe():
    backend, reason = create_backend("auto")
    try:
        assert backend.name == "mediapipe"
        assert reason == ("neither the parameter checkpoint nor the parameter mano_dir is set; "
                          "using the embedded MediaPipe backend")
    finally:
        backend.close()


def test_auto_reasons(tmp_path, fake_files):
    ckpt, mano = fake_files
    problem = acr_files_problem(str(tmp_path / "nope.pkl"), str(mano))
    assert problem[0] == "checkpoint" and "not found at" in problem[1] and "nope.pkl" in problem[1]
    assert "Google Drive" in problem[1]
    problem = acr_files_problem(str(ckpt), "")
    assert problem[0] == "mano" and "not configured (the parameter mano_dir)" in problem[1]
    assert "set the parameter mano_dir to the folder holding them" in problem[1]
    (mano / "MANO_LEFT.pkl").unlink()
    problem = acr_files_problem(str(ckpt), str(mano))
    assert problem[0] == "mano" and "MANO_LEFT.pkl not found in" in problem[1]
    assert str(mano.resolve()) in problem[1] and "https://mano.is.tue.mpg.de" in problem[1]



@pytest.mark.parametrize("checkpoint, mano_dir, expected", [
    ("nowhere.pkl", "", "ACR checkpoint not found at"),            # checkpoint set, wrong
    ("", "mano", "ACR checkpoint not configured (the parameter checkpoint)"),  # only the MANO folder set
    ("wild.pkl", "mano", "MANO_RIGHT.pkl not found in"),           # both set, a MANO file missing
])
def test_auto_with_a_set_but_unusable_path_is_an_error_not_a_fallback(tmp_path, fake_files, checkpoint, mano_dir,
                                                                      expected):
    (tmp_path / "mano" / "MANO_RIGHT.pkl").unlink()
    with pytest.raises(ValueError) as info:
        create_backend("auto", checkpoint=str(tmp_path / checkpoint) if checkpoint else "",
                       mano_dir=str(tmp_path / mano_dir) if mano_dir else "")
    assert expected in str(info.value)


def test_messages_name_the_callers_settings(tmp_path):
    names = {"checkpoint": "--checkpoint", "mano_dir": "--mano-dir"}
    with pytest.raises(ValueError) as info:
        create_backend("auto", checkpoint=str(tmp_path / "wild.pkl"), names=names)
    assert "set --checkpoint to its path" in str(info.value) and "parameter" not in str(info.value)
    backend, reason = create_backend("auto", names=names, detection_threshold=0.4)
    try:
        assert reason.startswith("neither --checkpoint nor --mano-dir is set")
        assert backend.name == "mediapipe" and backend.detection_threshold == pytest.approx(0.4)
    finally:
        backend.close()


def test_files_present(fake_files):
    ckpt, mano = fake_files
    assert acr_files_problem(str(ckpt), str(mano)) is None


def test_explicit_acr_names_the_missing_file(tmp_path, fake_files):
    ckpt, mano = fake_files
    with pytest.raises(ValueError) as info:
        create_backend("acr", checkpoint="", mano_dir=str(mano))
    assert "checkpoint" in str(info.value) and "wild.pkl" in str(info.value)
    with pytest.raises(ValueError) as info:
        create_backend("acr", checkpoint=str(tmp_path / "missing.pkl"), mano_dir=str(mano))
    assert str((tmp_path / "missing.pkl").resolve()) in str(info.value)
    (mano / "MANO_RIGHT.pkl").unlink()
    with pytest.raises(ValueError) as info:
        create_backend("acr", checkpoint=str(ckpt), mano_dir=str(mano))
    message = str(info.value)
    assert "MANO_RIGHT.pkl" in message and str(mano.resolve()) in message
    assert "mano.is.tue.mpg.de" in message and "never redistributed" in message


def test_error_types_are_the_acr_ones(tmp_path, fake_files):
    from acr_ros.acr.checkpoint import CheckpointError
    from acr_ros.acr.mano import ManoFileError

    ckpt, mano = fake_files
    with pytest.raises(CheckpointError):
        create_backend("acr", checkpoint=str(tmp_path / "missing.pkl"), mano_dir=str(mano))
    with pytest.raises(ManoFileError):
        create_backend("acr", checkpoint=str(ckpt), mano_dir=str(tmp_path / "no_mano"))


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("openpose")


def test_explicit_mediapipe_ignores_acr_options(fake_files):
    ckpt, mano = fake_files
    backend, reason = create_backend("MediaPipe", checkpoint=str(ckpt), mano_dir=str(mano),
                                     options=EngineOptions(suppress_duplicate_hands=True))
    try:
        assert backend.name == "mediapipe" and reason == "backend mediapipe requested"
        assert backend.faces("left") is None
    finally:
        backend.close()


@pytest.mark.parametrize("device", ["banana", "cuda:x", "gpu", ""])
def test_an_unknown_device_is_refused_before_any_model_loads(device):
    with pytest.raises(ValueError, match=r"device must be auto, cpu, cuda or cuda:N .*got"):
        EngineOptions(device=device)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_the_documented_devices_are_accepted(device):
    assert EngineOptions(device=device).device == device


def test_mediapipe_says_that_it_runs_on_the_cpu_whatever_the_device():
    backend, reason = create_backend("mediapipe", options=EngineOptions(device="cuda"))
    try:
        assert reason == ("backend mediapipe requested; device cuda does not apply: the embedded backend "
                          "runs on the CPU")
    finally:
        backend.close()
    backend, reason = create_backend("auto", options=EngineOptions(device="cpu"))
    try:
        assert "device" not in reason
    finally:
        backend.close()


def test_auto_with_acr_files_runs_acr(monkeypatch, fake_files):
    """Selection and arguments only (the real ACR backend runs in test_offline.py)."""
    import acr_ros.backends.acr as acr_backend

    made = {}

    class FakeACR:
        name = "acr"
        detection_threshold = 0.35
        precision, precision_reason, device, onnx_export, aot = "fp32", "requested", "cpu", "", ""
        runtime, runtime_reason = "torch", "requested"

        def __init__(self, checkpoint, mano_dir, options, smoothing, tune_process):
            made.update(checkpoint=checkpoint, mano_dir=mano_dir, options=options, smoothing=smoothing,
                        tune_process=tune_process)

    monkeypatch.setattr(acr_backend, "ACRBackend", FakeACR)
    ckpt, mano = fake_files
    smoothing = object()
    options = EngineOptions(device="cpu", precision="fp32", suppress_duplicate_hands=True)
    backend, reason = create_backend("auto", checkpoint=str(ckpt), mano_dir=str(mano), options=options,
                                     detection_threshold=0.5, smoothing=smoothing)
    assert isinstance(backend, FakeACR) and backend.detection_threshold == 0.5
    assert reason == (f"ACR checkpoint and MANO files found: wild.pkl, MANO from {mano}; network fp32 (requested) "
                      "on cpu, runtime torch (requested)")
    assert made == dict(checkpoint=str(ckpt), mano_dir=str(mano), options=options, smoothing=smoothing,
                        tune_process=False)
    backend, reason = create_backend("acr", checkpoint=str(ckpt), mano_dir=str(mano))
    assert isinstance(backend, FakeACR) and reason.startswith("backend acr requested")
    assert backend.detection_threshold == 0.35  # None: the backend's own default


def test_auto_with_a_wrong_checkpoint_raises(fake_files):
    ckpt, mano = fake_files  # both exist but are garbage: an error, not a silent fallback
    with pytest.raises(ValueError):
        create_backend("auto", checkpoint=str(ckpt), mano_dir=str(mano), options=EngineOptions(device="cpu"))
