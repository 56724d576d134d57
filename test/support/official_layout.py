"""The official checkpoint's state_dict layout, read from test/data/official_state_dict_keys.txt
(the key list of the official model, shapes and dtypes)."""
from pathlib import Path

KEYS = Path(__file__).resolve().parents[1] / "data" / "official_state_dict_keys.txt"


def official_layout() -> dict:
    """key -> (shape tuple, dtype name) of every tensor in the official checkpoint."""
    layout = {}
    for line in KEYS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        layout[key] = (tuple(int(v) for v in shape.strip("()").split(",") if v.strip()), dtype)
    return layout
