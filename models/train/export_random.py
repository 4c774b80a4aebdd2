#!/usr/bin/python3
"""Writes a TINY model bundle with random weights, for tests of the export-and-load path.

Same module classes and the same export code (export.export_bundle, with its TorchScript checks)
as the real model, only very small widths and no training. Takes a few seconds; files < 1 MB.

    /usr/bin/python3 models/train/export_random.py --out DIR [--seed N] [--fault]

--fault writes "tiny-faulty" instead: the same model, whose modules fail on inputs a request
chooses (for the engine's fault tests, tests/server/fault_test.cc). A request selects a fault by
its image size or prompt, which the scheduler never batches with a normal 32x32 request:

    width 64 (latent 16)      the UNet raises RuntimeError
    height 64 (latent 16)     the UNet allocates FAULT_ALLOC_BYTES, more than any machine can map
    width 48 (latent 12)      the VAE encoder (image to image) and the VAE decoder raise
    the word FAULT_WORD       the text encoder raises
"""
import argparse
import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean when tests run this
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import export  # noqa: E402
import ldm  # noqa: E402

FAULT_THROW_WIDTH = 64
FAULT_ALLOC_HEIGHT = 64
FAULT_VAE_WIDTH = 48
FAULT_WORD = "sandal"
# 1 PiB: past the 47-bit user address space of x86-64 and arm64 Linux, so the allocation fails
# even where memory overcommit would grant any size that fits.
FAULT_ALLOC_BYTES = 2 ** 50


class FaultyTextEncoder(torch.nn.Module):
    """The text encoder, raising when any prompt holds the token `word_id`."""

    def __init__(self, inner: torch.nn.Module, word_id: int):
        super().__init__()
        self.inner = inner
        self.word_id = word_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if bool((ids == self.word_id).any()):
            raise RuntimeError("tiny-faulty text encoder: a prompt holds the word that always fails")
        return self.inner(ids)


class FaultyUNet(torch.nn.Module):
    """The UNet, raising at latent width `throw_width` and allocating `alloc_bytes` at latent
    height `alloc_height`."""

    def __init__(self, inner: torch.nn.Module, throw_width: int, alloc_height: int, alloc_bytes: int):
        super().__init__()
        self.inner = inner
        self.throw_width = throw_width
        self.alloc_height = alloc_height
        self.alloc_bytes = alloc_bytes

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if x.size(3) == self.throw_width:
            raise RuntimeError("tiny-faulty UNet: this latent width always fails")
        if x.size(2) == self.alloc_height:
            # new_empty of the input (not torch.empty) so that freezing cannot fold it into a
            # constant, and the result is used so that dead-code elimination keeps it.
            waste = x.new_empty([self.alloc_bytes], dtype=torch.uint8)
            x = x + waste[:1].to(x.dtype) * 0.0
        return self.inner(x, t, context)


class FaultyWidth(torch.nn.Module):
    """A VAE half, raising at input width `width`."""

    def __init__(self, inner: torch.nn.Module, width: int):
        super().__init__()
        self.inner = inner
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(3) == self.width:
            raise RuntimeError("tiny-faulty VAE: this width always fails")
        return self.inner(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="bundle folder to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fault", action="store_true",
                    help='write the "tiny-faulty" bundle, whose modules fail on chosen inputs')
    args = ap.parse_args()

    start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = dict(ldm.TINY_CONFIG)
    vocab = ldm.build_vocab()
    vae, text, unet = ldm.build_models(cfg, len(vocab))
    # The real model zero-initialises its output layers; here nothing is trained, so give every
    # all-zero parameter small random values so that each module's output depends on its inputs.
    with torch.no_grad():
        for m in (vae, text, unet):
            for p in m.parameters():
                if not p.any():
                    p.normal_(0.0, 0.05)
    for m in (vae, text, unet):
        m.eval()

    # scaling factor and latent preview fit, as for the real model, on smooth random images
    g = torch.Generator().manual_seed(args.seed)
    size = cfg["image_size"]
    imgs = torch.tanh(2 * F.interpolate(torch.randn(64, cfg["image_channels"], 8, 8, generator=g),
                                        size=(size, size), mode="bilinear", align_corners=False))
    with torch.no_grad():
        mean, _ = vae.encode(imgs)
    scaling_factor = 1.0 / float(mean.std())
    latent_rgb = export.fit_latent_rgb(mean * scaling_factor, imgs, ldm.VAE_DOWNSAMPLING)

    name = "tiny-random"
    description = "Tiny latent diffusion model with random weights, for tests; it generates noise-like images."
    n = {k: ldm.count_params(m) for k, m in
         (("vae", vae), ("text_encoder", text), ("unet", unet))}
    if args.fault:
        # Wrapped after the fit above; export_bundle's checks use none of the faulty inputs.
        name = "tiny-faulty"
        description = ("tiny-random with faults for tests: width 64 fails the UNet, height 64 "
                       f"exhausts memory, width 48 fails the VAE, the word \"{FAULT_WORD}\" fails "
                       "the text encoder.")
        text = FaultyTextEncoder(text, vocab.index(FAULT_WORD))
        unet = FaultyUNet(unet, FAULT_THROW_WIDTH // ldm.VAE_DOWNSAMPLING,
                          FAULT_ALLOC_HEIGHT // ldm.VAE_DOWNSAMPLING, FAULT_ALLOC_BYTES)
        vae.encoder = FaultyWidth(vae.encoder, FAULT_VAE_WIDTH)
        vae.decoder = FaultyWidth(vae.decoder, FAULT_VAE_WIDTH // ldm.VAE_DOWNSAMPLING)

    export.export_bundle(
        args.out, cfg, vocab, vae, text, unet, scaling_factor, latent_rgb,
        name=name, description=description, sched_cfg=ldm.scheduler_config(), seed=args.seed)
    print(f"{name} parameters {n}, scaling_factor {scaling_factor:.4f}, "
          f"{time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
