#!/usr/bin/python3
"""Writes a TINY model bundle with random weights, for tests of the export-and-load path.

Same module classes and the same export code (export.export_bundle, with its TorchScript checks)
as the real model, only very small widths and no training. Takes a few seconds; files < 1 MB.

    /usr/bin/python3 models/train/export_random.py --out DIR [--seed N]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="bundle folder to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
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

    export.export_bundle(
        args.out, cfg, vocab, vae, text, unet, scaling_factor, latent_rgb,
        name="tiny-random",
        description="Tiny latent diffusion model with random weights, for tests; "
                    "it generates noise-like images.",
        sched_cfg=ldm.scheduler_config(), seed=args.seed)
    n = {k: ldm.count_params(m) for k, m in
         (("vae", vae), ("text_encoder", text), ("unet", unet))}
    print(f"tiny-random parameters {n}, scaling_factor {scaling_factor:.4f}, "
          f"{time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
