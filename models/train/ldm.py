"""Model classes, tokenizer, data and noise schedule of imagegen's default latent diffusion model.

Everything here is shared by train.py (the real model), export_random.py (a tiny random bundle for
the C++ tests) and export.py (TorchScript export), so the export-and-load path the tests exercise
is the one the real model goes through.

All modules are written to be scriptable with torch.jit.script on torch 1.13: no Optional
submodules, hand-written attention, explicit layer wiring in the UNet.
"""
import gzip
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Vocabulary, captions and tokenizer
# ---------------------------------------------------------------------------------------------

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>"]

# Fashion-MNIST class names as the dataset (and the GitHub issue) writes them.
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# Per class: (noun phrase, is_plural). Every word of every phrase is in the vocabulary.
CLASS_SYNONYMS: List[List[Tuple[str, bool]]] = [
    [("t-shirt", False), ("tshirt", False), ("top", False), ("tee", False), ("t-shirt/top", False)],
    [("trousers", True), ("trouser", False), ("pants", True), ("jeans", True)],
    [("pullover", False), ("sweater", False), ("jumper", False)],
    [("dress", False)],
    [("coat", False), ("jacket", False)],
    [("sandal", False), ("sandals", True)],
    [("shirt", False)],
    [("sneaker", False), ("sneakers", True), ("trainer", False), ("trainers", True)],
    [("bag", False), ("handbag", False)],
    [("ankle boot", False), ("ankle boots", True), ("boot", False), ("boots", True)],
]

TEMPLATES_SINGULAR = [
    "{w}", "a {w}", "the {w}", "a photo of a {w}", "an image of a {w}", "a picture of a {w}",
    "a photo of the {w}", "a drawing of a {w}", "a single {w}", "a grayscale photo of a {w}",
    "a product photo of a {w}", "a {w} on a black background", "a small picture of a {w}",
    "an image of the {w}",
]
TEMPLATES_PLURAL = [
    "{w}", "a pair of {w}", "the {w}", "some {w}", "a photo of {w}", "a photo of a pair of {w}",
    "a picture of some {w}", "an image of a pair of {w}", "an image of {w}", "a drawing of {w}",
    "a grayscale photo of some {w}", "a product photo of a pair of {w}",
    "a pair of {w} on a black background",
]

FILLER_WORDS = ["a", "an", "the", "of", "pair", "photo", "picture", "image", "some", "single",
                "drawing", "grayscale", "product", "on", "black", "background", "small"]

_WORD_RE = re.compile(r"[a-z0-9-]+")


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def split_words(text: str) -> List[str]:
    """The tokenizer's word rule: lowercase ASCII, a word is a maximal run of [a-z0-9-]."""
    return _WORD_RE.findall(_ascii_lower(text))


def build_vocab() -> List[str]:
    """Token list; index = id. 0 <pad>, 1 <bos>, 2 <eos>, then words (sorted, deterministic)."""
    words = set(FILLER_WORDS)
    for syns in CLASS_SYNONYMS:
        for phrase, _ in syns:
            words.update(split_words(phrase))
    return SPECIAL_TOKENS + sorted(words)


def tokenize(text: str, vocab: Dict[str, int], max_length: int) -> List[int]:
    """ids = [bos] + known word ids[:max_length-2] + [eos], padded with 0 to max_length.

    Unknown words are dropped silently. The C++ tokenizer implements exactly this rule.
    """
    ids = [vocab[w] for w in split_words(text) if w in vocab and w not in SPECIAL_TOKENS]
    ids = [BOS_ID] + ids[: max_length - 2] + [EOS_ID]
    return ids + [PAD_ID] * (max_length - len(ids))


def class_captions(label: int) -> List[str]:
    out = []
    for phrase, plural in CLASS_SYNONYMS[label]:
        for t in (TEMPLATES_PLURAL if plural else TEMPLATES_SINGULAR):
            out.append(re.sub(r"\ba (?=[aeiou])", "an ", t.format(w=phrase)))
    return sorted(set(out))


def caption_table(vocab_list: List[str], max_length: int) -> List[torch.Tensor]:
    """Per class: int64 [n_captions, max_length] of tokenized captions."""
    vocab = {w: i for i, w in enumerate(vocab_list)}
    return [torch.tensor([tokenize(c, vocab, max_length) for c in class_captions(k)],
                         dtype=torch.long) for k in range(len(CLASS_NAMES))]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str, data_dir: str = FASHION_DIR) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images float32 [N, 1, 32, 32] in [-1, 1] (28x28 padded by 2 with -1), labels int64 [N]."""
    prefix = "train" if split == "train" else "t10k"
    imgs = _read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(imgs.astype(np.float32)).div_(127.5).sub_(1.0).unsqueeze(1)
    x = F.pad(x, (2, 2, 2, 2), value=-1.0)
    return x.contiguous(), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Noise schedule (diffusers DDPMScheduler, "linear")
# ---------------------------------------------------------------------------------------------

def scheduler_config(num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                     beta_end: float = 0.02) -> dict:
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": num_train_timesteps,
        "beta_start": beta_start,
        "beta_end": beta_end,
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        # PNDM as Stable Diffusion configures it: PLMS without the Runge-Kutta warm-up.
        "skip_prk_steps": True,
        "timestep_spacing": "leading",
    }


def alphas_cumprod_from(cfg: dict) -> torch.Tensor:
    betas = torch.linspace(cfg["beta_start"], cfg["beta_end"], cfg["num_train_timesteps"],
                           dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

def norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, ch), ch, eps=1e-6)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              mask: Optional[torch.Tensor]) -> torch.Tensor:
    """q [B, Lq, C], k/v [B, Lk, C]; mask additive, broadcastable to [B, heads, Lq, Lk]."""
    b = q.size(0)
    lq = q.size(1)
    lk = k.size(1)
    c = q.size(2)
    d = c // heads
    q = q.reshape(b, lq, heads, d).transpose(1, 2)
    k = k.reshape(b, lk, heads, d).transpose(1, 2)
    v = v.reshape(b, lk, heads, d).transpose(1, 2)
    w = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
    if mask is not None:
        w = w + mask
    w = torch.softmax(w, dim=-1)
    o = torch.matmul(w, v)
    return o.transpose(1, 2).reshape(b, lq, c)


class Attention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.to_out(attention(self.to_q(x), self.to_k(context), self.to_v(context),
                                     self.heads, mask))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * mult)
        self.fc2 = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


# ---------------------------------------------------------------------------------------------
# Text encoder
# ---------------------------------------------------------------------------------------------

class TextBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, mask)
        return x + self.ff(self.ln2(x))


class TextEncoder(nn.Module):
    """ids int64 [B, L] (L <= max_length) -> context float32 [B, L, dim].

    Pad tokens (id 0) are masked as attention keys; their own output rows are still defined
    (the UNet attends to all L positions, during training as at inference).
    """

    def __init__(self, vocab_size: int, dim: int = 64, layers: int = 2, heads: int = 4,
                 max_length: int = 12):
        super().__init__()
        self.max_length = max_length
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Parameter(torch.zeros(max_length, dim))
        self.blocks = nn.ModuleList([TextBlock(dim, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.size(1)
        mask = (ids == 0).to(torch.float32) * -1e9
        mask = mask.unsqueeze(1).unsqueeze(1)  # [B, 1, 1, L]
        x = self.tok_emb(ids) + self.pos_emb[:length].unsqueeze(0)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.ln_f(x)


# ---------------------------------------------------------------------------------------------
# KL autoencoder
# ---------------------------------------------------------------------------------------------

class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VAEEncoder(nn.Module):
    """img [B, image_channels, H, W] -> moments [B, 2*z, H/4, W/4] (mean, logvar)."""

    def __init__(self, image_channels: int = 1, ch: Sequence[int] = (16, 32, 64), z: int = 4):
        super().__init__()
        c0, c1, c2 = ch
        self.conv_in = nn.Conv2d(image_channels, c0, 3, padding=1)
        self.res0 = ResBlock(c0, c0)
        self.down0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.res1 = ResBlock(c0, c1)
        self.down1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.res2 = ResBlock(c1, c2)
        self.res3 = ResBlock(c2, c2)
        self.norm_out = norm(c2)
        self.conv_out = nn.Conv2d(c2, 2 * z, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.res0(self.conv_in(x))
        h = self.res1(self.down0(h))
        h = self.res3(self.res2(self.down1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class VAEDecoder(nn.Module):
    """z [B, z, h, w] (unscaled latent) -> image [B, image_channels, 4h, 4w] (not clamped)."""

    def __init__(self, image_channels: int = 1, ch: Sequence[int] = (16, 32, 64), z: int = 4):
        super().__init__()
        c0, c1, c2 = ch
        self.conv_in = nn.Conv2d(z, c2, 3, padding=1)
        self.res0 = ResBlock(c2, c2)
        self.res1 = ResBlock(c2, c2)
        self.up0 = Upsample(c2)
        self.res2 = ResBlock(c2, c1)
        self.up1 = Upsample(c1)
        self.res3 = ResBlock(c1, c0)
        self.norm_out = norm(c0)
        self.conv_out = nn.Conv2d(c0, image_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.res1(self.res0(self.conv_in(z)))
        h = self.res2(self.up0(h))
        h = self.res3(self.up1(h))
        return self.conv_out(F.silu(self.norm_out(h)))


class VAE(nn.Module):
    def __init__(self, image_channels: int = 1, ch: Sequence[int] = (16, 32, 64), z: int = 4):
        super().__init__()
        self.z = z
        self.encoder = VAEEncoder(image_channels, ch, z)
        self.decoder = VAEDecoder(image_channels, ch, z)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = torch.chunk(self.encoder(x), 2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class VAEEncoderExport(nn.Module):
    """Bundle's vae_encoder.pt: image in [-1, 1] -> latent mean (unscaled)."""

    def __init__(self, encoder: VAEEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return torch.chunk(self.encoder(img), 2, dim=1)[0]


class VAEDecoderExport(nn.Module):
    """Bundle's vae_decoder.pt: latent (= scaled latent / scaling_factor) -> image in [-1, 1]."""

    def __init__(self, decoder: VAEDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# UNet
# ---------------------------------------------------------------------------------------------

def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of float timesteps t [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device)
                      * (-math.log(10000.0) / half))
    args = t.to(torch.float32).unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TResBlock(nn.Module):
    """ResBlock with a timestep embedding added between the convolutions."""

    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(temb, cout)
        self.norm2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb)).unsqueeze(-1).unsqueeze(-1)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SpatialTransformer(nn.Module):
    """Self-attention, cross-attention on the text context, feed-forward; residual around all."""

    def __init__(self, ch: int, context_dim: int, head_dim: int):
        super().__init__()
        heads = max(1, ch // head_dim)
        self.norm = norm(ch)
        self.proj_in = nn.Linear(ch, ch)
        self.ln1 = nn.LayerNorm(ch)
        self.attn1 = Attention(ch, ch, heads)
        self.ln2 = nn.LayerNorm(ch)
        self.attn2 = Attention(ch, context_dim, heads)
        self.ln3 = nn.LayerNorm(ch)
        self.ff = FeedForward(ch)
        self.proj_out = nn.Linear(ch, ch)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        c = x.size(1)
        hh = x.size(2)
        ww = x.size(3)
        h = self.norm(x).reshape(b, c, hh * ww).transpose(1, 2)
        h = self.proj_in(h)
        n = self.ln1(h)
        h = h + self.attn1(n, n)
        h = h + self.attn2(self.ln2(h), context)
        h = h + self.ff(self.ln3(h))
        h = self.proj_out(h)
        return x + h.transpose(1, 2).reshape(b, c, hh, ww)


class UNet(nn.Module):
    """x [B, C, h, w], t float [B], context [B, L, D] -> epsilon [B, C, h, w].

    Two levels (h x w and h/2 x w/2), so h and w must be even.
    """

    def __init__(self, in_ch: int = 4, ch: Sequence[int] = (32, 64), context_dim: int = 64,
                 head_dim: int = 16):
        super().__init__()
        c0, c1 = ch
        temb = 4 * c0
        self.c0 = c0
        self.time_fc1 = nn.Linear(c0, temb)
        self.time_fc2 = nn.Linear(temb, temb)
        self.conv_in = nn.Conv2d(in_ch, c0, 3, padding=1)
        self.down0_res = TResBlock(c0, c0, temb)
        self.down0_attn = SpatialTransformer(c0, context_dim, head_dim)
        self.down = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1_res = TResBlock(c0, c1, temb)
        self.down1_attn = SpatialTransformer(c1, context_dim, head_dim)
        self.mid_res1 = TResBlock(c1, c1, temb)
        self.mid_attn = SpatialTransformer(c1, context_dim, head_dim)
        self.mid_res2 = TResBlock(c1, c1, temb)
        self.up1_res = TResBlock(c1 + c1, c1, temb)
        self.up1_attn = SpatialTransformer(c1, context_dim, head_dim)
        self.up = Upsample(c1)
        self.up0_res = TResBlock(c1 + c0, c0, temb)
        self.up0_attn = SpatialTransformer(c0, context_dim, head_dim)
        self.up0_res2 = TResBlock(c0 + c0, c0, temb)
        self.norm_out = norm(c0)
        self.conv_out = nn.Conv2d(c0, in_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        emb = self.time_fc2(F.silu(self.time_fc1(timestep_embedding(t, self.c0))))
        hin = self.conv_in(x)
        h0 = self.down0_attn(self.down0_res(hin, emb), context)
        h = self.down(h0)
        h1 = self.down1_attn(self.down1_res(h, emb), context)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h1, emb), context), emb)
        h = self.up1_attn(self.up1_res(torch.cat([h, h1], dim=1), emb), context)
        h = self.up(h)
        h = self.up0_attn(self.up0_res(torch.cat([h, h0], dim=1), emb), context)
        h = self.up0_res2(torch.cat([h, hin], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------

REAL_CONFIG = {
    "image_channels": 1, "image_size": 32, "latent_channels": 4,
    "vae_ch": [16, 32, 64],
    "text_dim": 64, "text_layers": 2, "text_heads": 4, "max_length": 12,
    "unet_ch": [32, 64], "head_dim": 16,
}

TINY_CONFIG = {
    "image_channels": 1, "image_size": 32, "latent_channels": 4,
    "vae_ch": [4, 8, 8],
    "text_dim": 16, "text_layers": 1, "text_heads": 2, "max_length": 12,
    "unet_ch": [8, 16], "head_dim": 8,
}

# image size / latent size (two stride-2 convolutions in the VAE) and the UNet's own factor.
VAE_DOWNSAMPLING = 4
UNET_DOWNSAMPLING = 2


def build_models(cfg: dict, vocab_size: int) -> Tuple[VAE, TextEncoder, UNet]:
    vae = VAE(cfg["image_channels"], cfg["vae_ch"], cfg["latent_channels"])
    text = TextEncoder(vocab_size, cfg["text_dim"], cfg["text_layers"], cfg["text_heads"],
                       cfg["max_length"])
    unet = UNet(cfg["latent_channels"], cfg["unet_ch"], cfg["text_dim"], cfg["head_dim"])
    return vae, text, unet


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------
# DDIM sampling (Python side, for checks and previews during training; the engine has its own)
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def ddim_sample(unet, text_encoder, decoder, ids: torch.Tensor, sched_cfg: dict,
                scaling_factor: float, latent_shape: Tuple[int, int, int], steps: int = 30,
                guidance: float = 3.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Classifier-free guided DDIM (eta 0), diffusers 'leading' spacing with steps_offset 1.

    decoder maps unscaled latents to images in [-1, 1]. Returns images [B, C, H, W].
    """
    ac = alphas_cumprod_from(sched_cfg)
    n_train = sched_cfg["num_train_timesteps"]
    b = ids.size(0)
    empty = torch.zeros_like(ids)
    empty[:, 0] = BOS_ID
    empty[:, 1] = EOS_ID
    ctx = text_encoder(torch.cat([ids, empty], dim=0))
    x = torch.randn((b,) + tuple(latent_shape), generator=generator)
    ratio = n_train // steps
    ts = [i * ratio + sched_cfg.get("steps_offset", 0) for i in range(steps)][::-1]
    for t in ts:
        tt = torch.full((2 * b,), float(t))
        eps = unet(torch.cat([x, x], dim=0), tt, ctx)
        e_c, e_u = eps[:b], eps[b:]
        e = e_u + guidance * (e_c - e_u)
        a_t = ac[t]
        prev = t - ratio
        a_prev = ac[prev] if prev >= 0 else ac[0]
        x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
    return decoder(x / scaling_factor)
