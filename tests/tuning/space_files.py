"""Helpers for the search-space tests: the shipped spaces' folder and a writer for ad-hoc space files."""

import textwrap
from pathlib import Path

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path
