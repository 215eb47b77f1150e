"""Golden snapshots stored under golden/, reviewed as diffs and never regenerated blindly.

Update on purpose only: `pytest spec/<file> --snapshot-update`, then explain the diff in the
commit message.
"""

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
