"""The benches' scratch directory: removed at the end unless `--keep` asked for it."""

from __future__ import annotations

import shutil
from pathlib import Path


def leave(tmp: Path, keep: bool) -> None:
    """Remove `tmp`, or say where it was kept."""
    if keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
