#!/usr/bin/python3
"""PyTorch (1.13, float32, no_grad) implementation of the same Titans memory equations as
components/titans/src/memory.cpp, for bench_titans: stream patch latents through an MLP memory of
depth 2, reading each chunk's readout y = M(q) before the chunk is written, then writing it with
the chunked update of Behrouz et al. 2024, eq. 16-18 (gradients at the chunk-start weights,
momentum eta, forgetting alpha, per-patch theta).

Usage: titans_torch.py DIR N D_IN D HIDDEN CHUNK THETA_MAX ETA_MAX ALPHA_MAX REPEATS
DIR holds the raw little-endian f32 files written by bench_titans (x, w_k, w_v, w_q, theta_w,
theta_b, eta_w, eta_b, alpha_w, alpha_b, m0_0, m0_1); writes DIR/readout_torch.f32 and prints
"patches_per_second <wall> cpu_patches_per_second <thread CPU time>" (medians of REPEATS timed
runs after one warm-up run).
"""
import os
import sys
import time

import numpy as np
import torch


def load(d, name, shape):
    return torch.from_numpy(np.fromfile(os.path.join(d, name + ".f32"), dtype="<f4").reshape(shape))


def median(values):
    v = sorted(values)
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def l2n(t):
    return t * torch.rsqrt((t * t).sum(-1, keepdim=True) + 1e-6)


def run(x, p, chunk, theta_max, eta_max, alpha_max):
    w1, w2 = p["m0_0"].clone(), p["m0_1"].clone()
    s1, s2 = torch.zeros_like(w1), torch.zeros_like(w2)
    q_all = l2n(x @ p["w_q"])
    out = []
    n_all = x.shape[0]
    for start in range(0, n_all, chunk):
        xc = x[start:start + chunk]
        n = xc.shape[0]
        q = q_all[start:start + chunk]
        out.append(torch.nn.functional.silu(q @ w1) @ w2)  # retrieval: chunk-start memory
        if n < chunk:
            break  # a partial chunk stays pending, as in neat
        k = l2n(xc @ p["w_k"])
        v = xc @ p["w_v"]
        theta = theta_max * torch.sigmoid(xc @ p["theta_w"] + p["theta_b"])  # (n, 1)
        xm = xc.mean(0, keepdim=True)
        eta = float(eta_max * torch.sigmoid(xm @ p["eta_w"] + p["eta_b"]))
        alpha = float(alpha_max * torch.sigmoid(xm @ p["alpha_w"] + p["alpha_b"]))
        beta = 1.0 - alpha
        pw, bw, h = [1.0], [1.0], [1.0]
        for _ in range(n):
            pw.append(pw[-1] * eta)
            bw.append(bw[-1] * beta)
            h.append(beta * h[-1] + pw[-1])
        c_m = theta * torch.tensor(h[n - 1::-1], dtype=torch.float32).unsqueeze(1)
        c_s = theta * torch.tensor(pw[n - 1::-1], dtype=torch.float32).unsqueeze(1)
        mean_c = torch.full((n, 1), 1.0 / n)
        z1 = k @ w1
        a1 = torch.nn.functional.silu(z1)
        err = a1 @ w2 - v
        d2 = 2.0 * err
        sig = torch.sigmoid(z1)
        d1 = (d2 @ w2.t()) * (sig * (1 + z1 * (1 - sig)))
        g2 = [a1.t() @ (d2 * c) for c in (c_m, c_s, mean_c)]
        g1 = [k.t() @ (d1 * c) for c in (c_m, c_s, mean_c)]
        _surprise = float(torch.sqrt((g1[2] ** 2).sum() + (g2[2] ** 2).sum()))
        carry = h[n] - bw[n]
        w1, s1 = bw[n] * w1 + carry * s1 - g1[0], pw[n] * s1 - g1[1]
        w2, s2 = bw[n] * w2 + carry * s2 - g2[0], pw[n] * s2 - g2[1]
    return torch.cat(out, 0)


def main():
    d = sys.argv[1]
    n, d_in, dim, hidden, chunk = (int(a) for a in sys.argv[2:7])
    theta_max, eta_max, alpha_max = (float(a) for a in sys.argv[7:10])
    repeats = int(sys.argv[10])
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as neat (memory.cpp, DenormalGuard)
    p = {
        "w_k": load(d, "w_k", (d_in, dim)), "w_v": load(d, "w_v", (d_in, dim)),
        "w_q": load(d, "w_q", (d_in, dim)),
        "theta_w": load(d, "theta_w", (d_in, 1)), "theta_b": load(d, "theta_b", (1,)),
        "eta_w": load(d, "eta_w", (d_in, 1)), "eta_b": load(d, "eta_b", (1,)),
        "alpha_w": load(d, "alpha_w", (d_in, 1)), "alpha_b": load(d, "alpha_b", (1,)),
        "m0_0": load(d, "m0_0", (dim, hidden)), "m0_1": load(d, "m0_1", (hidden, dim)),
    }
    x = load(d, "x", (n, d_in))
    times, cpu_times = [], []
    with torch.no_grad():
        y = run(x, p, chunk, theta_max, eta_max, alpha_max)  # warm-up
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            y = run(x, p, chunk, theta_max, eta_max, alpha_max)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.thread_time() - c0)
    y.numpy().astype("<f4").tofile(os.path.join(d, "readout_torch.f32"))
    print("patches_per_second %.1f cpu_patches_per_second %.1f" % (
        n / median(times), n / median(cpu_times)))


if __name__ == "__main__":
    main()
