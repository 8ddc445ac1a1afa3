"""Under mpiexec -n N: open a data split on every rank; on bad data every rank must report
the same error and exit non-zero, none may hang.

    mpiexec -n N python open_data.py PATH
"""
import sys

from dist_nn.data import DataError, open_split
from dist_nn.distributed import communicator


def main(path):
    comm = communicator("mpi")
    try:
        open_split(path, "train", comm)
    except DataError as error:
        sys.stderr.write(f"[rank {comm.rank}] {error}\n")
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1])
