#!/usr/bin/env python3
"""Writes tests/reference/transformer2.bin: a two-block transformer's weights, inputs, logits,
loss and parameter gradients computed by PyTorch (Debian's python3-torch), for the C++ test
tests/nn/reference_test.cpp (which reads the file and needs no torch).

The model mirrors neat::nn::TransformerLM: token + learned position embedding, pre-norm blocks
(RMSNorm -> causal multi-head attention with wq/wk/wv/wo, no bias -> residual; RMSNorm -> MLP
up/GELU(tanh)/down with bias -> residual), final RMSNorm, lm_head without bias, mean
cross-entropy with ignore_index -100. Computed in float64, stored as float32.

File format (little-endian): b"NEATREF1", uint32 count, then count records of
uint32 name_len, name (utf-8), uint32 dtype (0 = float32, 1 = int32), uint32 ndim,
int64 dims[ndim], data.
Run from the repository root: python3 tests/reference/make_reference.py
"""
import os
import struct
import sys

try:
    import torch
except ImportError:
    # Debian's python3-torch lives in the system interpreter; a pyenv/venv python3 may shadow it.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.exit("make_reference.py: PyTorch is not available (scripts/install-deps --reference)")

V, C, L, H, HIDDEN, MAX_T, B, T = 67, 32, 2, 4, 64, 16, 2, 12
EPS = 1e-5
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "transformer2.bin")


def param_shapes():
    shapes = [("tok_emb.weight", (V, C)), ("pos_emb.weight", (MAX_T, C))]
    for i in range(L):
        p = f"blocks.{i}."
        shapes += [(p + "norm1.weight", (C,))]
        shapes += [(p + f"attn.{w}.weight", (C, C)) for w in ("wq", "wk", "wv", "wo")]
        shapes += [(p + "norm2.weight", (C,)),
                   (p + "mlp.up.weight", (HIDDEN, C)), (p + "mlp.up.bias", (HIDDEN,)),
                   (p + "mlp.down.weight", (C, HIDDEN)), (p + "mlp.down.bias", (C,))]
    shapes += [("norm_f.weight", (C,)), ("lm_head.weight", (V, C))]
    return shapes


def rms_norm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def attention(x, P, p):
    q = x @ P[p + "attn.wq.weight"].T
    k = x @ P[p + "attn.wk.weight"].T
    v = x @ P[p + "attn.wv.weight"].T
    D = C // H
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-2, -1) / D ** 0.5
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    o = torch.softmax(s, dim=-1) @ v
    return o.transpose(1, 2).reshape(B, T, C) @ P[p + "attn.wo.weight"].T


def forward(tokens, P):
    x = P["tok_emb.weight"][tokens] + P["pos_emb.weight"][:T]
    for i in range(L):
        p = f"blocks.{i}."
        x = x + attention(rms_norm(x, P[p + "norm1.weight"]), P, p)
        h = rms_norm(x, P[p + "norm2.weight"])
        h = torch.nn.functional.gelu(h @ P[p + "mlp.up.weight"].T + P[p + "mlp.up.bias"], approximate="tanh")
        x = x + h @ P[p + "mlp.down.weight"].T + P[p + "mlp.down.bias"]
    return rms_norm(x, P["norm_f.weight"]) @ P["lm_head.weight"].T


def main():
    g = torch.Generator().manual_seed(20261124)
    P = {}
    for name, shape in param_shapes():
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm_f.weight":
            t = 1 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif name.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            t = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
        # Round to float32 first so that both sides start from identical weights.
        P[name] = t.float().double().requires_grad_(True)
    tokens = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[0, 3] = -100
    targets[1, 7] = -100
    logits = forward(tokens, P)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    loss.backward()

    records = [("config", 1, [8], [V, C, L, H, HIDDEN, MAX_T, B, T]),
               ("tokens", 1, [B * T], tokens.reshape(-1).tolist()),
               ("targets", 1, [B * T], targets.reshape(-1).tolist()),
               ("logits", 0, [B, T, V], logits.detach().reshape(-1).tolist()),
               ("loss", 0, [1], [loss.item()])]
    for name, _ in param_shapes():
        records.append(("param/" + name, 0, list(P[name].shape), P[name].detach().reshape(-1).tolist()))
        records.append(("grad/" + name, 0, list(P[name].shape), P[name].grad.reshape(-1).tolist()))
    with open(OUT, "wb") as f:
        f.write(b"NEATREF1")
        f.write(struct.pack("<I", len(records)))
        for name, dtype, dims, values in records:
            encoded = name.encode()
            f.write(struct.pack("<I", len(encoded)) + encoded)
            f.write(struct.pack("<II", dtype, len(dims)))
            f.write(struct.pack(f"<{len(dims)}q", *dims))
            f.write(struct.pack(f"<{len(values)}{'f' if dtype == 0 else 'i'}", *values))
    print(f"make_reference.py: wrote {OUT} ({os.path.getsize(OUT)} bytes), torch {torch.__version__}, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
