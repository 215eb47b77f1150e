"""The vectors suffice to build a port (contract §17): tests/numpy_port/, a numpy port of the
controller, lens supervision, GistNet, TinyGPT (with LoRA) and the lens-gated attention and
block, written from the definitions in golden/vectors/*.json alone, passes every vector of
those files, run in a fresh interpreter that never imports torch or megacontext."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT = ROOT / "tests" / "numpy_port"


def test_numpy_port_imports_nothing_of_the_reference():
    """The port's sources import only numpy, the standard library and each other."""
    allowed = {"numpy", "json", "math", "sys", "pathlib", "__future__", "tests"}
    for path in sorted(PORT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_numpy_port_passes_every_vector_it_ports():
    """`python -m tests.numpy_port.check` reports no failure over every case of each ported
    file, and neither torch nor megacontext was imported."""
    proc = subprocess.run([sys.executable, "-m", "tests.numpy_port.check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    for name in ("controller.json", "lens_supervision.json", "gistnet.json", "tiny_gpt.json",
                 "lens_gated.json"):
        assert any(ln.startswith(f"{name}: ") and ln.endswith(" 0 failures") for ln in lines), (
            proc.stdout)
    assert "reference stack: none" in proc.stdout, proc.stdout
