"""The suite's tolerances between two fp32 runs of the engine (those of test_pipeline.py's
comparison with the reference), as data: the equivalence tests and scripts/gpu_check.sh use them."""
from __future__ import annotations

import numpy as np

# HandRows field -> (absolute, relative) tolerance, over the hands both runs detected.
SUITE_TOLERANCES = {
    "scores": (1e-5, 0.0),
    "cam": (1e-4, 0.0),
    "keypoints": (0.5, 0.0),       # pixels of the original image
    "joints": (1e-4, 0.0),         # metres, root-aligned
    "vertices": (1e-4, 0.0),
    "translation": (1e-5, 1e-4),
    "finger_pose": (2e-3, 0.0),    # radians
    "betas": (1e-3, 0.0),
}


def suite_comparison(reference, other) -> dict:
    """Two readbacks (HandRows of numpy arrays) of the same images: whether detections, sides,
    cells and the prior agree, and per field the largest absolute difference and whether it is
    within SUITE_TOLERANCES (relative part against the reference's magnitude)."""
    same_detections = bool(np.array_equal(reference.detected, other.detected))
    both = reference.detected & other.detected
    result = {"detections_equal": same_detections,
              "cells_equal": bool(np.array_equal(reference.cells[both], other.cells[both])),
              "prior_equal": bool(np.array_equal(reference.prior_applied, other.prior_applied)),
              "hands": int(both.sum()), "fields": {}}
    within = same_detections and result["cells_equal"] and result["prior_equal"]
    for field, (atol, rtol) in SUITE_TOLERANCES.items():
        a = np.asarray(getattr(reference, field), np.float64)[both]
        b = np.asarray(getattr(other, field), np.float64)[both]
        worst = float(np.abs(a - b).max()) if a.size else 0.0
        ok = bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(a)))
        result["fields"][field] = {"max": worst, "tolerance": atol, "within": ok}
        within = within and ok
    result["within"] = within
    return result


def describe_failures(comparison: dict) -> str:
    """What is outside the tolerances, for an assertion message."""
    bad = [k for k in ("detections_equal", "cells_equal", "prior_equal") if not comparison[k]]
    bad += [f"{name} {f['max']:.3g} > {f['tolerance']:g}" for name, f in comparison["fields"].items()
            if not f["within"]]
    return ", ".join(bad) or "none"
