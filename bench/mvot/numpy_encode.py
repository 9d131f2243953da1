"""NumPy reference of neat's mvot VQ encoding, timed on the same data as bench_mvot.

Reads raw files written by bench_mvot: images (N, 28, 28) u8 and the codebook (K, 16) f32;
computes 4x4 patches / 255, squared distances -2 x.c + ||c||^2 by matrix products in blocks of
4096 rows, argmin; prints "images_per_s <value>" (best of --repeats) and writes the codes (i32)
so that bench_mvot can check they agree.
Usage: python3 numpy_encode.py IMAGES N CODEBOOK K CODES_OUT REPEATS
"""
import sys
import time

import numpy as np


def encode(images, codebook):
    n = images.shape[0]
    x = images.reshape(n, 7, 4, 7, 4).transpose(0, 1, 3, 2, 4).reshape(n * 49, 16)
    x = x.astype(np.float32) * np.float32(1.0 / 255.0)
    neg2ct = np.float32(-2.0) * codebook.T
    cnorm = (codebook * codebook).sum(axis=1)
    codes = np.empty(x.shape[0], dtype=np.int32)
    for s in range(0, x.shape[0], 4096):
        d = x[s:s + 4096] @ neg2ct
        d += cnorm
        codes[s:s + 4096] = d.argmin(axis=1)
    return codes


def main():
    path, n, cb_path, k, out, repeats = sys.argv[1:7]
    n, k, repeats = int(n), int(k), int(repeats)
    images = np.fromfile(path, dtype=np.uint8).reshape(n, 28, 28)
    codebook = np.fromfile(cb_path, dtype=np.float32).reshape(k, 16)
    best = float("inf")
    codes = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        codes = encode(images, codebook)
        best = min(best, time.perf_counter() - t0)
    codes.tofile(out)
    print(f"images_per_s {n / best:.1f}")


if __name__ == "__main__":
    main()
