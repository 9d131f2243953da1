#!/usr/bin/env python3
"""PyTorch side of bench_blt: the shipped byte LM rebuilt in torch from the weights bench_blt
exports, run over the same token stream at batch 1 with a KV cache, next-token entropies
H_i = -sum_v p_i(v) ln p_i(v) (nats), then BLT's global-threshold patch starts (Pagnoni et al.
2024, eq. 3: position k >= 2 starts a patch iff H_{k-1} > theta_g; positions 0 and 1 always
start).

The architecture follows neat::nn::TransformerLM (nn/src/modules.cpp, nn/src/ops_nn.cpp):
x = tok_emb[t] + pos_emb[p]; pre-norm blocks x += attn(norm1(x)), x += mlp(norm2(x)); RMSNorm
y = x / sqrt(mean(x^2) + eps) * w (eps from the export, 1e-5); attention without biases, scores
scaled by 1/sqrt(head_dim), softmax; MLP down(gelu_tanh(up(x))) with biases; norm_f; lm_head
without bias. The KV cache holds max_seq_len positions; when it is full the context restarts at
the current token, as in neat::blt::EntropyStream. Two stream shapes, as in bench_blt: --mode
token decodes one token per cached forward step; --mode document decodes each context window
(up to max_seq_len tokens, causal within it) in one cached call.

Input directory (written by bench_blt): index.json (config, parameters with names, shapes,
files), p<i>.f32 (float32, row-major), tokens.i32, entropies.f64 and starts.u8 (neat's results).

First the entropies are checked against neat's: max |diff| > 1e-3 nats fails (exit 1, the
reason on stderr), as does a patch start that differs where the entropy is not within 1e-3 of
the threshold. Then one JSON line on stdout: {"available": true, "max_abs_entropy_diff": ...}.
After that, each line "run" on stdin times one pass over the whole stream (entropies + patch
starts) and answers {"seconds": ..., "cpu_seconds": ...} (wall clock and process CPU time), so
that bench_blt can alternate its own repeats with these. The first line also names the kernel
set of the OpenBLAS torch links ("openblas_core"). {"available": false} and exit 0 when torch
cannot be imported.

Usage: /usr/bin/python3 bench/blt/torch_stream.py --dir DIR --mode token|document --threads N
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as error:
    print(json.dumps({"available": False, "reason": str(error)}), flush=True)
    sys.exit(0)

# The RMSNorm of neat::nn (shared with bench_nn's reference model).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from torch_reference import RMSNorm  # noqa: E402

TOLERANCE = 1e-3  # nats


def openblas_core():
    """The kernel set of the OpenBLAS that torch links (openblas_get_corename), or "unknown"."""
    for name in ("libopenblas.so.0", ctypes.util.find_library("openblas")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode()
        except (OSError, AttributeError):
            continue
    return "unknown"


def reply(obj):
    print(json.dumps(obj), flush=True)


class Attention(nn.Module):
    """Causal self-attention at batch 1 for n new positions, with a preallocated KV cache."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cache_k, cache_v, pos):
        # x (n, C); cache_k, cache_v (context, C); pos: cache index of the first new position
        n, C = x.shape
        H, D = self.heads, C // self.heads
        L = pos + n
        q = self.wq(x).view(n, H, D).transpose(0, 1)  # (H, n, D)
        cache_k[pos:L] = self.wk(x)
        cache_v[pos:L] = self.wv(x)
        keys = cache_k[:L].view(L, H, D).permute(1, 2, 0)  # (H, D, L)
        values = cache_v[:L].view(L, H, D).transpose(0, 1)  # (H, L, D)
        scores = torch.bmm(q, keys) * (1.0 / D**0.5)  # (H, n, L)
        if n > 1:  # new position i sees cache positions j <= pos + i
            visible = torch.ones(n, L, dtype=torch.bool).tril(pos)
            scores = scores.masked_fill(~visible, float("-inf"))
        out = torch.bmm(torch.softmax(scores, dim=-1), values)  # (H, n, D)
        return self.wo(out.transpose(0, 1).reshape(n, C))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, eps):
        super().__init__()
        self.norm1 = RMSNorm(dim, eps)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = MLP(dim, hidden)

    def forward(self, x, cache_k, cache_v, pos):
        x = x + self.attn(self.norm1(x), cache_k, cache_v, pos)
        return x + self.mlp(self.norm2(x))


class ByteLM(nn.Module):
    def __init__(self, vocab, dim, layers, heads, hidden, context, eps):
        super().__init__()
        self.context = context
        self.tok_emb = nn.Embedding(vocab, dim)
        self.pos_emb = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, eps) for _ in range(layers))
        self.norm_f = RMSNorm(dim, eps)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def make_cache(self):
        dim = self.tok_emb.weight.shape[1]
        return [(torch.zeros(self.context, dim), torch.zeros(self.context, dim)) for _ in self.blocks]

    def step(self, tokens, pos, cache):
        """Logits (n, vocab) for n tokens (a LongTensor) at cache positions pos .. pos + n - 1."""
        n = tokens.shape[0]
        x = self.tok_emb.weight[tokens] + self.pos_emb.weight[pos : pos + n]
        for block, (k, v) in zip(self.blocks, cache):
            x = block(x, k, v, pos)
        return self.lm_head(self.norm_f(x))


def stream(model, tokens, threshold, chunk):
    """Entropies (nats, float64 numpy) and global patch starts (uint8 numpy) for one document,
    decoded `chunk` tokens per cached forward call (never across a context restart)."""
    n = tokens.shape[0]
    entropies = torch.empty(n, dtype=torch.float64)
    cache = model.make_cache()
    pos = 0
    i = 0
    while i < n:
        if pos >= model.context:  # the context restarts when the cache is full (stale rows
            pos = 0  # beyond pos are never read)
        m = min(chunk, model.context - pos, n - i)
        logp = torch.log_softmax(model.step(tokens[i : i + m], pos, cache), dim=-1)
        entropies[i : i + m] = -(logp.exp() * logp).sum(-1)
        pos += m
        i += m
    starts = torch.zeros(n, dtype=torch.uint8)
    starts[:2] = 1
    starts[2:] = entropies[1 : n - 1] > threshold
    return entropies.numpy(), starts.numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=["token", "document"], default="token",
                    help="token: one token per cached step; document: whole context windows")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    with open(os.path.join(a.dir, "index.json")) as f:
        index = json.load(f)
    cfg = index["config"]
    if index.get("activation") != "gelu_tanh" or cfg.get("window", 0) != 0:
        sys.exit("torch_stream.py: only GELU (tanh) and full causal attention are implemented; "
                 f"got activation {index.get('activation')}, window {cfg.get('window')}")
    model = ByteLM(cfg["vocab_size"], cfg["dim"], cfg["layers"], cfg["heads"], cfg["mlp_hidden"],
                   cfg["context"], index["norm_eps"])
    state = {}
    for p in index["parameters"]:
        values = np.fromfile(os.path.join(a.dir, p["file"]), dtype="<f4")
        if values.size != int(np.prod(p["shape"])):
            sys.exit(f"torch_stream.py: {p['file']} ({p['name']}) holds {values.size} floats, "
                     f"shape {p['shape']} needs {int(np.prod(p['shape']))}")
        state[p["name"]] = torch.from_numpy(values.reshape(p["shape"]).copy())
    model.load_state_dict(state, strict=True)  # every name must match neat's, both ways
    model.eval()

    tokens = torch.from_numpy(np.fromfile(os.path.join(a.dir, "tokens.i32"), dtype="<i4").astype(np.int64))
    neat_h = np.fromfile(os.path.join(a.dir, "entropies.f64"), dtype="<f8")
    neat_starts = np.fromfile(os.path.join(a.dir, "starts.u8"), dtype=np.uint8)
    threshold = float(index["threshold"])
    chunk = 1 if a.mode == "token" else model.context
    if len(tokens) != index["tokens"] or neat_h.size != len(tokens) or neat_starts.size != len(tokens):
        sys.exit("torch_stream.py: token, entropy and start counts in the export disagree")

    with torch.inference_mode():
        h, starts = stream(model, tokens, threshold, chunk)  # check run, also the warm-up
        diff = float(np.max(np.abs(h - neat_h)))
        differing = np.nonzero(starts != neat_starts)[0]
        near = [k for k in differing if k >= 2 and abs(neat_h[k - 1] - threshold) <= TOLERANCE]
        if not diff <= TOLERANCE:
            sys.exit(f"torch_stream.py: entropies differ from neat's by {diff:.3e} nats "
                     f"(> {TOLERANCE}); the models are not the same")
        if len(near) != len(differing):
            sys.exit(f"torch_stream.py: patch starts differ at positions {differing.tolist()[:20]} "
                     "where the entropy is not within the tolerance of the threshold")
        reply({
            "available": True,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "openblas_core": openblas_core(),
            "mode": a.mode,
            "max_abs_entropy_diff": diff,
            "starts_differing": int(len(differing)),
        })
        for line in sys.stdin:  # one timed pass per "run" line, until bench_blt closes stdin
            if line.strip() != "run":
                sys.exit(f"torch_stream.py: unknown request {line.strip()!r}")
            t0, c0 = time.perf_counter(), time.process_time()
            stream(model, tokens, threshold, chunk)
            reply({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0})


if __name__ == "__main__":
    main()
