"""The process-wide settings of acr_ros.acr.runtime that are not about a device."""
import gc

from acr_ros.acr import runtime


class Cycle:
    def __init__(self):
        self.me = self


def test_the_frozen_collector_leaves_what_was_alive_and_still_collects_new_cycles():
    """What tune_process does once the model is loaded (benchmarks/ort_beside_torch.py: the stalls)."""
    Cycle()  # garbage before: collected by the freeze's own collection, not frozen
    try:
        runtime.freeze_collector()
        frozen = gc.get_freeze_count()
        assert frozen > 1000 and gc.collect() == 0  # the imported libraries' objects, out of the generations
        Cycle()
        assert gc.collect() >= 1  # a cycle made afterwards is still collected
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
