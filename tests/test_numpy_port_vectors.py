"""The controller vectors suffice to build a port (contract §17): tests/numpy_port/, a numpy
port written from the definitions in golden/vectors/controller.json alone, passes every
controller vector, run in a fresh interpreter that never imports torch or megacontext."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT = ROOT / "tests" / "numpy_port"


def test_numpy_port_imports_nothing_of_the_reference():
    """The port's sources import only numpy, the standard library and each other."""
    allowed = {"numpy", "json", "sys", "pathlib", "__future__", "tests"}
    for path in sorted(PORT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_numpy_port_passes_every_controller_vector():
    """`python -m tests.numpy_port.check` reports no failure over every case, and neither
    torch nor megacontext was imported."""
    proc = subprocess.run([sys.executable, "-m", "tests.numpy_port.check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "0 failures" in proc.stdout and "reference stack: none" in proc.stdout, proc.stdout
