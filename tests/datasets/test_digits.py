import numpy
import pytest

from datasets import digits
from dist_nn.data.embedded import EMBEDDED
from tests.datasets.readback import read_back


def test_builds_the_embedded_set_with_its_split(tmp_path):
    paths = digits.convert(tmp_path / "d.h5", val_fraction=0.25, seed=1, shards=2)
    assert [p.name for p in paths] == ["d-00000-of-00002.h5", "d-00001-of-00002.h5"]
    train, val = (read_back(str(tmp_path / "d-*.h5"), split) for split in ("train", "val"))
    assert (len(train[0]), len(val[0])) == (1348, 449) and train[2].num_classes == 10


def test_nothing_to_do():
    with pytest.raises(ValueError, match="nothing to do"):
        digits.convert()


def test_refresh_reproduces_the_embedded_copy(tmp_path):
    pytest.importorskip("sklearn", reason="the dev extra's scikit-learn is not installed")
    path = digits.refresh(tmp_path / "digits.npz")
    with numpy.load(path) as fresh, numpy.load(EMBEDDED) as embedded:
        for key in ("images", "labels"):
            assert fresh[key].dtype == numpy.uint8
            numpy.testing.assert_array_equal(fresh[key], embedded[key])
    assert list(tmp_path.iterdir()) == [path]  # no temporary file is left
