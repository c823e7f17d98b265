"""A toy backbone with the Backbone interface, σ-style trainable vectors and text dropout: small enough that
subprocess tests (resume after SIGKILL, 2-process DDP) cost a second each, and random enough (dropout,
augmentation noise) that a resume which mishandled RNG state would diverge."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset


class ToyBackbone(nn.Module):
    name = "toy"
    family = "toy"
    image_size = 8
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    logit_bias = None  # a CLIP-style head: no bias (SigLIP backbones carry one)

    def __init__(self, dim: int = 16, vocab: int = 64, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        U, S, Vh = torch.linalg.svd(torch.randn(dim, 3 * 8 * 8, generator=g), full_matrices=False)
        self.register_buffer("img_U", U)
        self.register_buffer("img_Vh", Vh)
        self.img_sigma = nn.Parameter(S.clone())
        self.emb = nn.Embedding(vocab, dim)
        nn.init.normal_(self.emb.weight, generator=g)
        self.emb.weight.requires_grad_(False)
        U2, S2, Vh2 = torch.linalg.svd(torch.randn(dim, dim, generator=g))
        self.register_buffer("txt_U", U2)
        self.register_buffer("txt_Vh", Vh2)
        self.txt_sigma = nn.Parameter(S2.clone())
        self.dropout = nn.Dropout(0.2)
        self.vocab = vocab

    def fingerprint(self) -> str:
        return "toy"

    @property
    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(10.0)

    def logits(self, image_features, text_features):
        return self.logit_scale * image_features @ text_features.to(image_features.dtype).T

    def tokenize(self, texts):
        ids = [[sum(map(ord, w)) % self.vocab for w in t.split()] for t in texts]
        n = max(map(len, ids))
        return torch.tensor([x + [0] * (n - len(x)) for x in ids])

    def encode_image(self, x):
        h = x.flatten(1) @ self.img_Vh.T * self.img_sigma @ self.img_U.T
        return F.normalize(h, dim=-1)

    def encode_text(self, tokens):
        h = self.dropout(self.emb(tokens).mean(1))
        h = h @ self.txt_Vh.T * self.txt_sigma @ self.txt_U.T
        return F.normalize(h, dim=-1)

    def trainable(self) -> dict:
        return {"img_sigma": self.img_sigma, "txt_sigma": self.txt_sigma}


class ToyImages(Dataset):
    """Class c = a fixed random pattern + per-draw noise (the "augmentation", drawn from the global RNG as
    torchvision transforms do). Optional sleep per item to make a run slow enough to kill mid-way."""

    def __init__(self, n_per_class: int = 6, n_classes: int = 3, seed: int = 0, sleep: float = 0.0, size: int = 8):
        g = torch.Generator().manual_seed(seed)
        self.protos = torch.randn(n_classes, 3, size, size, generator=g)
        self.labels = [c for c in range(n_classes) for _ in range(n_per_class)]
        self.sleep = sleep

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.sleep:
            import time

            time.sleep(self.sleep)
        y = self.labels[i]
        return self.protos[y] + 0.5 * torch.randn_like(self.protos[y]), y
