#!/usr/bin/env python3
"""Capacity of a linear associative memory written by the chunked delta rule (Titans eq. 16-18
with eta = alpha = 0, M_0 = 0): N associations with random unit keys of width D (what hashed
n-gram keys approximate) and random unit values, chunks of C written at the chunk-start
weights, M <- M - 2 theta (M K - V)^T K. Prints, per (N, D, theta), the mean cosine of the
readout M k_i with its value v_i and the share of keys whose readout is closest to their own
value among all N. Used in docs/titans.md ("n-gram keys") to choose D. NumPy only; seed fixed.
Run: python3 bench/titans/capacity.py"""
import numpy as np

rng = np.random.default_rng(0)
dv, C = 128, 8
print("N     D     theta  cosine  top-1")
for n in (1500, 2800):
    for d in (128, 256, 384, 512, 768):
        for theta in (0.05, 0.1):
            k = rng.standard_normal((n, d))
            k /= np.linalg.norm(k, axis=1, keepdims=True)
            v = rng.standard_normal((n, dv))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            m = np.zeros((dv, d))
            for s in range(0, n, C):
                kc, vc = k[s:s + C], v[s:s + C]
                m -= 2 * theta * (kc @ m.T - vc).T @ kc
            r = k @ m.T
            cos = np.sum(r * v, 1) / np.linalg.norm(r, axis=1)
            top1 = np.mean(np.argmax(r @ v.T, 1) == np.arange(n))
            print(f"{n:<5} {d:<5} {theta:<6} {cos.mean():.3f}   {top1:.3f}")
