"""Times numpy.linalg.svd (LAPACK gesdd, full_matrices=False) on the matrices bench_t2 wrote.

Usage: numpy_svd.py LIST REPEATS, where LIST has one line per matrix: "path rows cols" (float64,
row-major). Prints one line per matrix: "rows cols median_seconds relative_error".
"""
import sys
import time

import numpy as np


def main() -> None:
    listing, repeats = sys.argv[1], int(sys.argv[2])
    with open(listing) as f:
        for line in f:
            path, rows, cols = line.split()
            rows, cols = int(rows), int(cols)
            a = np.fromfile(path, dtype=np.float64).reshape(rows, cols)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                u, s, vt = np.linalg.svd(a, full_matrices=False)
                times.append(time.perf_counter() - t0)
            err = np.linalg.norm(a - (u * s) @ vt) / np.linalg.norm(a)
            print(rows, cols, float(np.median(times)), float(err))


if __name__ == "__main__":
    main()
