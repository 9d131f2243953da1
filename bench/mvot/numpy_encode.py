"""NumPy reference of neat's mvot VQ encoding, timed on the same data as bench_mvot.

Reads raw files written by bench_mvot: images (N, 28, 28) u8 and the codebook (K, D) f32;
computes the patch descriptors (4x4 patches / 255, then with a context radius r = 1 the ring of
the 6x6 window around each patch, raster order, zero outside the image, times the context
weight), squared distances -2 x.c + ||c||^2 by matrix products in blocks of 4096 rows, argmin;
prints "images_per_s <value>" (best of --repeats) and writes the codes (i32) so that bench_mvot
can check they agree.
Usage: python3 numpy_encode.py IMAGES N CODEBOOK K CODES_OUT REPEATS [RADIUS WEIGHT]
"""
import sys
import time

import numpy as np


def descriptors(images, radius, weight):
    n = images.shape[0]
    x = images.reshape(n, 7, 4, 7, 4).transpose(0, 1, 3, 2, 4).reshape(n * 49, 16)
    x = x.astype(np.float32) * np.float32(1.0 / 255.0)
    if radius == 0:
        return x
    side = 4 + 2 * radius
    padded = np.pad(images, ((0, 0), (radius, radius), (radius, radius)))
    # windows[i, py, px] = the side x side window whose centre 4x4 block is patch (py, px)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (side, side), axis=(1, 2))
    windows = windows[:, ::4, ::4][:, :7, :7].reshape(n * 49, side * side)
    ring = np.ones((side, side), dtype=bool)
    ring[radius:radius + 4, radius:radius + 4] = False
    scale = np.float32(weight) / np.float32(255.0)  # as neat: weight / 255.0f in float32
    rings = windows[:, ring.ravel()].astype(np.float32) * scale
    return np.concatenate([x, rings], axis=1)


def encode(images, codebook, radius=0, weight=0.0):
    x = descriptors(images, radius, weight)
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
    radius = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    weight = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
    images = np.fromfile(path, dtype=np.uint8).reshape(n, 28, 28)
    codebook = np.fromfile(cb_path, dtype=np.float32).reshape(k, (4 + 2 * radius) ** 2)
    best = float("inf")
    codes = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        codes = encode(images, codebook, radius, weight)
        best = min(best, time.perf_counter() - t0)
    codes.tofile(out)
    print(f"images_per_s {n / best:.1f}")


if __name__ == "__main__":
    main()
