"""Data: the HDF5 layout (writer, reader), the distributed sampler, augmentation and the
prefetching loader."""
from .dataset import HDF5Split, Subset, open_split, shard_files
from .loader import Batch, Loader
from .sampler import DistributedSampler
from .checks import DataError, DataReadError
from .writer import DatasetWriter, shard_paths

__all__ = ["Batch", "DataError", "DataReadError", "DatasetWriter", "DistributedSampler", "HDF5Split", "Loader",
           "Subset", "open_split", "shard_files", "shard_paths"]
