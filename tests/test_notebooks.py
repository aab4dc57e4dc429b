"""One pytest item per notebook in nbs/, executed with nbdev's own test runner.

Cells flagged with the `tst_flags` of pyproject.toml (`notest`, `slow`) are skipped, `#| eval: false` cells never
run, and `IN_TEST` is set so heavy cells shrink. A notebook's first failing cell fails its item.
"""

from pathlib import Path

import nbdev.test as nbt  # not `from nbdev.test import test_nb`: pytest would collect it as a test
import pytest
from nbdev.config import get_config

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(
    p for p in (ROOT / "nbs").rglob("*.ipynb") if not any(part.startswith((".", "_")) for part in p.relative_to(ROOT / "nbs").parts)
)


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NBS, ids=[str(p.relative_to(ROOT / "nbs")) for p in NBS])
def test_notebook(nb: Path):
    flags = get_config(ROOT).tst_flags.split()
    ok, secs = nbt.test_nb(nb, skip_flags=flags, basepath=ROOT)
    assert ok, f"{nb.name} failed (the failing cell's traceback is printed above)"


def test_notebooks_found():
    assert len(NBS) >= 3, NBS
