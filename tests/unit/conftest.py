"""
Unit tests run in a scratch directory: trial's C{TestCase.mktemp} makes
paths relative to the current directory, which under pytest would be the
checkout.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
