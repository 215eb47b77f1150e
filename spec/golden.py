"""Golden snapshots stored under golden/, reviewed as diffs and never regenerated blindly.

Update on purpose only: `pytest spec/<file> --snapshot-update`, then explain the diff in the
commit message.
"""

import json
from pathlib import Path

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"


class GoldenText(SingleFileSnapshotExtension):
    """One UTF-8 text file per snapshot: golden/<spec module>/<test name>.txt"""

    file_extension = "txt"
    _write_mode = WriteMode.TEXT

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(GOLDEN_DIR / test_location.basename)

    def serialize(self, data, **kwargs) -> str:
        if not isinstance(data, str):
            raise TypeError(f"golden text snapshots take str, got {type(data).__name__}")
        return data if data.endswith("\n") else data + "\n"


def render_json(obj, depth: int = 0) -> str:
    """JSON for golden vectors with one line per innermost list (a row of numbers), so a
    changed vector reads as a small diff."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {render_json(v, depth + 1)}" for k, v in obj.items()]
        text = "{\n" + ",\n".join(items) + f"\n{pad}}}"
    elif isinstance(obj, list) and any(isinstance(x, list | dict) for x in obj):
        text = "[\n" + ",\n".join(inner + render_json(x, depth + 1) for x in obj) + f"\n{pad}]"
    else:
        text = json.dumps(obj, ensure_ascii=False)
    return text + ("\n" if depth == 0 else "")
