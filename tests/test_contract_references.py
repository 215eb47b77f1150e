"""Every "§N" reference in the repository resolves to a section of the contract, spec/README.md.

The contract is the only document a "§N" may point to: a user has only the repository. The scan
covers the code, specs, tests, benchmarks, CI scripts, golden vectors, the README and the
contract itself. A reference "§N.M" needs a heading "§N.M"; "§N" a heading "§N.".
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "spec" / "README.md"

SCANNED_DIRS = ("megacontext", "spec", "tests", "benchmarks", "ci", "golden/vectors",
                "contract_notes", ".ci")
SCANNED_FILES = ("README.md", "conftest.py", "pyproject.toml", ".gitattributes")
TEXT_SUFFIXES = {".py", ".md", ".json", ".toml", ".sh", ".txt", ".cfg", ".yaml", ".yml", ""}

HEADING = re.compile(r"^#{2,6}\s+§(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
REFERENCE = re.compile(r"§\s?(\d+(?:\.\d+)?)")
# Built from pieces so that this file does not match its own patterns.
OUTSIDE = re.compile("design" + r"\.md|" + "design" + r"\s*§", re.IGNORECASE)


def scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for top in SCANNED_DIRS:
        base = ROOT / top
        if base.is_file():
            files.append(base)
            continue
        for path in sorted(base.rglob("*")) if base.is_dir() else ():
            parts = path.relative_to(ROOT).parts
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in parts:
                files.append(path)
    return files


def contract_sections(text: str) -> set[str]:
    return set(HEADING.findall(text))


def references(files: list[Path]) -> list[tuple[str, int, str]]:
    """(file, line, "N" or "N.M") for every § reference in the files."""
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for ref in REFERENCE.findall(line):
                found.append((str(path.relative_to(ROOT)), lineno, ref))
    return found


def test_contract_has_every_top_level_section():
    """spec/README.md has the headings §1 .. §17, in order (the numbering references rely on)."""
    text = CONTRACT.read_text(encoding="utf-8")
    tops = [s for s in HEADING.findall(text) if "." not in s]
    assert tops == [str(n) for n in range(1, 18)], f"top-level sections found: {tops}"


def test_every_section_reference_resolves_to_the_contract():
    """Each "§N" / "§N.M" in code, specs, tests, vectors, README and the contract names a
    section heading of spec/README.md."""
    sections = contract_sections(CONTRACT.read_text(encoding="utf-8"))
    refs = references(scanned_files())
    assert len(refs) > 100, f"only {len(refs)} § references found: is the scan looking anywhere?"
    unresolved = [f"{f}:{line}: §{ref}" for f, line, ref in refs
                  if ref not in sections or ref.split(".")[0] not in sections]
    assert not unresolved, (
        "references to sections that spec/README.md does not have "
        f"(its sections: {sorted(sections, key=lambda s: [int(x) for x in s.split('.')])}):\n"
        + "\n".join(unresolved)
    )


def test_nothing_points_at_a_document_outside_the_repo():
    """No file refers to the team's design document; "§N" means the contract."""
    hits = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not hits, "references to a document outside the repo:\n" + "\n".join(hits)


def test_every_public_name_is_in_the_contract():
    """Each name megacontext exports (the conformance surface) appears in spec/README.md as code
    (`name` or `name(...)`): a public function the contract does not describe is one a port
    cannot implement from the contract."""
    import megacontext

    text = CONTRACT.read_text(encoding="utf-8")
    missing = [name for name in megacontext.__all__
               if not re.search(r"`" + re.escape(name) + r"(`|\(|\.)", text)]
    assert not missing, f"exported but not in spec/README.md: {missing}"
