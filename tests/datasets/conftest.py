"""Converters stream in pieces of about common.PIECE_BYTES; tiny test files would fit in one
piece, so the tests shrink it to make every conversion cross piece boundaries."""
import pytest

from datasets import common


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    monkeypatch.setattr(common, "PIECE_BYTES", 4096)
