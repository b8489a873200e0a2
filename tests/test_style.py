"""The source reads in one 120-column window: a line past it fails here, not in a reviewer's diff."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_COLUMNS = 120


def test_every_python_line_fits_in_120_columns():
    files = [path for folder in ("avalanche_lvae", "benchmarks", "examples", "tests")
             for path in sorted((ROOT / folder).rglob("*.py"))] + [ROOT / "setup.py"]
    assert len(files) > 50
    too_long = [f"{path.relative_to(ROOT)}:{number} ({len(line)} columns)"
                for path in files
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                if len(line) > MAX_COLUMNS]
    assert not too_long, "wrap these lines to 120 columns: " + ", ".join(too_long)
