"""Export of a model bundle (the one code path for the real model and the tiny random one).

Writes model.json, vocab.txt, scheduler_config.json and the TorchScript modules
text_encoder.pt, unet.pt, vae_decoder.pt, vae_encoder.pt, checking each scripted module (and each
file re-loaded with torch.jit.load) against the eager module's output.
"""
import json
import os
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

import ldm

TOLERANCE = 1e-5


@torch.no_grad()
def fit_latent_rgb(scaled_latents: torch.Tensor, images: torch.Tensor, factor: int) -> dict:
    """Least squares from the scaled latent at each latent pixel (+ bias) to the image averaged
    over the factor x factor block it covers. Gray images are replicated to the three RGB rows."""
    c = scaled_latents.size(1)
    target = torch.nn.functional.avg_pool2d(images, factor)          # [N, ic, h, w]
    x = scaled_latents.permute(0, 2, 3, 1).reshape(-1, c).double()
    x = torch.cat([x, torch.ones(x.size(0), 1, dtype=torch.float64)], dim=1)
    y = target.permute(0, 2, 3, 1).reshape(x.size(0), -1).double()   # [M, ic]
    sol = torch.linalg.lstsq(x, y).solution                           # [c+1, ic]
    pred = x @ sol
    rmse = float(((pred - y) ** 2).mean().sqrt())
    w = sol.t()                                                       # [ic, c+1]
    if w.size(0) == 1:
        w = w.repeat(3, 1)
    return {"matrix": [[round(float(v), 6) for v in row[:c]] for row in w],
            "bias": [round(float(row[c]), 6) for row in w],
            "_fit_rmse": rmse}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@torch.no_grad()
def _script_check_save(name: str, module: nn.Module, cases: List[Tuple[torch.Tensor, ...]],
                       path: str, freeze: bool = True) -> None:
    """Scripts (and freezes) module, saves it to path, and checks on every input tuple in cases
    that the scripted module and the re-loaded file both reproduce the eager output."""
    module = module.eval()
    scripted = torch.jit.script(module)
    if freeze:
        scripted = torch.jit.freeze(scripted)
    torch.jit.save(scripted, path)
    loaded = torch.jit.load(path, map_location="cpu")
    for inputs in cases:
        eager = module(*inputs)
        out = scripted(*inputs)
        out2 = loaded(*inputs)
        d1 = _max_diff(eager, out)
        d2 = _max_diff(eager, out2)
        print(f"export {name:13s} in {[tuple(i.shape) for i in inputs]} out {tuple(out.shape)} "
              f"max|script-eager| {d1:.3g} max|loaded-eager| {d2:.3g}", flush=True)
        assert out.dtype == torch.float32 and out.shape == eager.shape, name
        assert torch.isfinite(out).all(), f"{name}: non-finite output"
        assert d1 < TOLERANCE, f"{name}: scripted output differs from eager by {d1}"
        assert d2 < TOLERANCE, f"{name}: re-loaded output differs from eager by {d2}"
    print(f"export {name:13s} saved {path} ({os.path.getsize(path) / 1e6:.3f} MB)", flush=True)


@torch.no_grad()
def export_bundle(out_dir: str, cfg: dict, vocab: List[str], vae: ldm.VAE,
                  text_encoder: ldm.TextEncoder, unet: ldm.UNet, scaling_factor: float,
                  latent_rgb: dict, name: str, description: str, sched_cfg: dict,
                  defaults: dict = None, extra: dict = None, seed: int = 0) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for m in (vae, text_encoder, unet):
        m.eval()
    g = torch.Generator().manual_seed(seed + 12345)
    size = cfg["image_size"]
    ic, zc, L = cfg["image_channels"], cfg["latent_channels"], cfg["max_length"]
    f = ldm.VAE_DOWNSAMPLING
    hl = size // f

    # text encoder: a batch of two real prompts (with padding) and the empty prompt
    voc = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([ldm.tokenize("a photo of a pair of ankle boots", voc, L),
                        ldm.tokenize("dress", voc, L),
                        ldm.tokenize("", voc, L)], dtype=torch.long)
    _script_check_save("text_encoder", text_encoder, [(ids,), (ids[2:],)],
                       os.path.join(out_dir, "text_encoder.pt"))
    ctx = text_encoder(ids)
    # UNet: batch 3 at the default latent size, and batch 1 at a non-square other size
    t = torch.tensor([999.0, 500.0, 1.0])
    x1 = torch.randn(3, zc, hl, hl, generator=g)
    x2 = torch.randn(1, zc, hl + 2, hl + 4, generator=g)
    _script_check_save("unet", unet, [(x1, t, ctx), (x2, t[1:2], ctx[:1])],
                       os.path.join(out_dir, "unet.pt"))
    z = torch.randn(2, zc, hl, hl, generator=g)
    _script_check_save("vae_decoder", ldm.VAEDecoderExport(vae.decoder), [(z,), (z[:1, :, :, : hl // 2],)],
                       os.path.join(out_dir, "vae_decoder.pt"))
    img = torch.rand(2, ic, size, size, generator=g) * 2 - 1
    _script_check_save("vae_encoder", ldm.VAEEncoderExport(vae.encoder), [(img,), (img[:1, :, :, : size // 2],)],
                       os.path.join(out_dir, "vae_encoder.pt"))

    with open(os.path.join(out_dir, "vocab.txt"), "w") as fh:
        fh.write("".join(w + "\n" for w in vocab))
    with open(os.path.join(out_dir, "scheduler_config.json"), "w") as fh:
        json.dump(sched_cfg, fh, indent=2)
        fh.write("\n")
    model = {
        "format_version": 1,
        "name": name,
        "description": description,
        "image_channels": ic,
        "default_width": size,
        "default_height": size,
        "latent_channels": zc,
        "downsampling_factor": f,
        "size_multiple": f * ldm.UNET_DOWNSAMPLING,
        "scaling_factor": round(float(scaling_factor), 6),
        "text_encoder": {"context_dim": cfg["text_dim"], "max_length": L},
        "tokenizer": {"type": "word", "vocab_file": "vocab.txt", "lowercase": True},
        "defaults": defaults or {"sampler": "ddim", "steps": 30, "guidance_scale": 3.0},
        "latent_rgb": {"matrix": latent_rgb["matrix"], "bias": latent_rgb["bias"]},
    }
    if extra:
        model.update(extra)
    with open(os.path.join(out_dir, "model.json"), "w") as fh:
        json.dump(model, fh, indent=2)
        fh.write("\n")
    total = sum(os.path.getsize(os.path.join(out_dir, p)) for p in os.listdir(out_dir)
                if os.path.isfile(os.path.join(out_dir, p)))
    print(f"bundle written to {out_dir} ({total / 1e6:.2f} MB)", flush=True)
