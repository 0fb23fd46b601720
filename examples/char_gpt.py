"""A tiny character-level GPT, written as a PyTorch script: token and position
Embeddings, causal self-attention (nn.MultiheadAttention with a bool mask), LayerNorm,
GELU MLP, AdamW, gradient clipping and a warm-up + cosine learning-rate schedule.

The framework imports between the markers are the only lines that differ from the same
script in PyTorch (tests/test_examples_ports.py swaps them for torch's and compares).

    python examples/char_gpt.py --steps 300      # trains on a built-in text, then samples
    python examples/char_gpt.py --tiny
"""
import argparse

import numpy as np

# >>> framework imports
import engine as torch
from engine import nn, optim
from engine.nn import functional as F
from engine.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR
from engine.ops import tril
# <<< framework imports

TEXT = """To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them. To die: to sleep;
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to, 'tis a consummation
Devoutly to be wish'd. To die, to sleep;
"""


class Block(nn.Module):
    def __init__(self, d, heads, block_size, dropout):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d), nn.Dropout(dropout))
        # True above the diagonal: positions a token may not attend to
        self.register_buffer("mask", tril(torch.ones(block_size, block_size)) == 0)

    def forward(self, x):
        T = x.shape[1]
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=self.mask[:T, :T], need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab, d=32, heads=4, layers=2, block_size=32, dropout=0.1):
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block_size, d)
        self.blocks = nn.ModuleList([Block(d, heads, block_size, dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(T))
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss


def batches(data, block_size, batch_size, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ix = rng.integers(0, len(data) - block_size - 1, size=batch_size)
        x = np.stack([data[i:i + block_size] for i in ix])
        y = np.stack([data[i + 1:i + block_size + 1] for i in ix])
        yield torch.tensor(x), torch.tensor(y)


def run(steps=200, d=32, heads=4, layers=2, block_size=32, batch_size=16, lr=3e-3, warmup=20, dropout=0.1,
        init_state=None, seed=0):
    """Train; returns (model, per-step losses, learning rates, encode, decode)."""
    torch.manual_seed(seed)
    chars = sorted(set(TEXT))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in TEXT], dtype=np.int64)
    model = GPT(len(chars), d, heads, layers, block_size, dropout)
    if init_state is not None:
        model.load_state_dict({k: torch.tensor(v) for k, v in init_state.items()})
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    sched = SequentialLR(opt, [LinearLR(opt, start_factor=0.1, total_iters=warmup),
                               CosineAnnealingLR(opt, T_max=max(steps - warmup, 1))], milestones=[warmup])
    losses, lrs = [], []
    model.train()
    for xb, yb in batches(data, block_size, batch_size, steps, seed):
        _, loss = model(xb, yb)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(opt.param_groups[0]["lr"])
    return model, losses, lrs, stoi, chars


def sample(model, stoi, chars, prompt="To be", n=60):
    model.eval()
    idx = [stoi[c] for c in prompt]
    with torch.no_grad():
        for _ in range(n):
            ctx = torch.tensor(np.array([idx[-model.block_size:]]))
            logits, _ = model(ctx)
            idx.append(int(logits[0, -1].argmax().item()))
    return "".join(chars[i] for i in idx)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--tiny", action="store_true", help="a 1-layer model, 3 steps")
    a = p.parse_args(argv)
    if a.tiny:
        model, losses, _, stoi, chars = run(steps=3, d=16, heads=2, layers=1, block_size=8, batch_size=4, warmup=1)
    else:
        model, losses, _, stoi, chars = run(steps=a.steps)
    print(f"{len(losses)} steps, first loss {losses[0]:.4f}, last loss {losses[-1]:.4f}")
    print(repr(sample(model, stoi, chars, n=20 if a.tiny else 80)))


if __name__ == "__main__":
    main()
