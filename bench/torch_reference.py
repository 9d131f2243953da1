#!/usr/bin/env python3
"""PyTorch CPU reference for bench_nn: the same byte-LM transformer as neat::nn::TransformerLM
(token + position embedding, pre-norm RMSNorm blocks, causal attention wq/wk/wv/wo, GELU MLP,
lm_head), float32. Measures training tokens/s (forward + backward + AdamW) and incremental
decoding tokens/s at batch 1 with a KV cache. Prints one JSON line. Exit code 3 when torch is
not importable.

Usage: python3 bench/torch_reference.py --threads N [--dim 256 --layers 4 --heads 4 --ctx 256
       --batch 16 --vocab 512 --steps 3 --decode 255]
"""
import argparse
import json
import os
import sys
import time

try:
    import torch
except ImportError:
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print(json.dumps({"available": False}))
    sys.exit(3)

import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension (neat::nn::RMSNorm).
    Also imported by bench/blt/torch_stream.py."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        D = C // self.heads
        q, k, v = (w(x).view(B, T, self.heads, D).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        Tk = k.shape[2]
        s = q @ k.transpose(-2, -1) / D ** 0.5
        if T > 1:
            mask = torch.ones(T, Tk, dtype=torch.bool).tril(Tk - T)
            s = s.masked_fill(~mask, float("-inf"))
        o = torch.softmax(s, dim=-1) @ v
        return self.wo(o.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x, cache=None):
        x = x + self.attn(self.norm1(x), cache)
        return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))


class LM(nn.Module):
    def __init__(self, vocab, dim, layers, heads, hidden, ctx):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, dim)
        self.pos_emb = nn.Embedding(ctx, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(layers))
        self.norm_f = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens, start=0, caches=None):
        T = tokens.shape[1]
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(start, start + T))
        for i, b in enumerate(self.blocks):
            x = b(x, None if caches is None else caches[i])
        return self.lm_head(self.norm_f(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--decode", type=int, default=255)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = LM(a.vocab, a.dim, a.layers, a.heads, 4 * a.dim, a.ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randint(0, a.vocab, (a.batch, a.ctx))
    y = torch.randint(0, a.vocab, (a.batch, a.ctx))

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, a.vocab), y.reshape(-1))
        loss.backward()
        opt.step()

    train_step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        train_step()
    train_s = time.perf_counter() - t0

    model.eval()
    with torch.no_grad():
        caches = [dict() for _ in range(a.layers)]
        tok = torch.zeros(1, 1, dtype=torch.long)
        model(tok, 0, caches)
        t0 = time.perf_counter()
        for pos in range(1, a.decode + 1):
            logits = model(tok, pos, caches)
            tok = logits[:, -1].argmax(-1, keepdim=True)
        decode_s = time.perf_counter() - t0
    print(json.dumps({
        "available": True,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_tokens_per_s": a.steps * a.batch * a.ctx / train_s,
        "decode_tokens_per_s": a.decode / decode_s,
    }))


if __name__ == "__main__":
    main()
