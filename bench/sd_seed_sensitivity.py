#!/usr/bin/env python3
"""How sensitive the seeded Stable Diffusion reference cases are to float32 rounding.

  /usr/bin/python3 bench/sd_seed_sensitivity.py [BUILD_DIR]

Runs each case of tests/data/stable-diffusion/seeded/seeded_public.json that uses DDIM with the
converted bundle's TorchScript modules (BUILD_DIR/test_bundles, made by the convert_sd test) and
DDIM written out as diffusers computes it, then again with the initial latents changed by a
relative 1e-6 (about what separates the float32 kernels of two torch versions). It prints, in
8-bit levels, how far each run is from the reference image and how far the perturbation moves
it: a case whose pixels move by more than the test's tolerance (2 levels) under such a
perturbation cannot be held to that tolerance by any implementation that is not bit-identical to
the one that made the reference (tests/server/sd_serving_test.cc).
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
SEEDED = os.path.join(ROOT, "tests", "data", "stable-diffusion", "seeded")


def token_ids(bundle, texts):
    out = subprocess.run([os.path.join(BUILD, "core", "imagegen-tokenize"), bundle],
                         input="".join(json.dumps(t) + "\n" for t in texts),
                         capture_output=True, text=True, check=True).stdout
    return torch.tensor([json.loads(line) for line in out.splitlines()])


def ddim(bundle, case, latents):
    """diffusers' StableDiffusionPipeline with its DDIMScheduler (eta 0), on the bundle's modules."""
    config = json.load(open(os.path.join(bundle, "scheduler_config.json")))
    scaling = json.load(open(os.path.join(bundle, "model.json")))["scaling_factor"]
    n, steps, g = config["num_train_timesteps"], case["steps"], case["guidance_scale"]
    betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=torch.float32) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    if config.get("timestep_spacing") == "trailing":
        timesteps = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
    else:
        timesteps = (np.arange(0, steps) * (n // steps))[::-1] + config.get("steps_offset", 0)
    text = torch.jit.load(os.path.join(bundle, "text_encoder.pt"))
    unet = torch.jit.load(os.path.join(bundle, "unet.pt"))
    decoder = torch.jit.load(os.path.join(bundle, "vae_decoder.pt"))
    with torch.no_grad():
        context = text(token_ids(bundle, [case["prompt"], case["negative_prompt"]]))
        x = latents
        for t in timesteps:
            out = unet(torch.cat([x, x]), torch.full((2,), float(t)), context)
            pred = out[1:2] + g * (out[0:1] - out[1:2])
            a = alphas[t]
            prev = t - n // steps
            a_prev = alphas[prev] if prev >= 0 else (torch.tensor(1.0) if config.get("set_alpha_to_one") else alphas[0])
            if config.get("prediction_type") == "v_prediction":
                x0, eps = a.sqrt() * x - (1 - a).sqrt() * pred, a.sqrt() * pred + (1 - a).sqrt() * x
            else:
                eps, x0 = pred, (x - (1 - a).sqrt() * pred) / a.sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        image = decoder(x / scaling)
    return ((image / 2 + 0.5).clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy().astype(int)


def main():
    cases = json.load(open(os.path.join(SEEDED, "seeded_public.json")))
    print("| case | vs reference: max / mean levels | 1e-6 perturbation moves it: max / mean |")
    print("| --- | --- | --- |")
    for case in cases:
        if case["sampler"] != "ddim":
            continue
        bundle = os.path.join(BUILD, "test_bundles", case["model"])
        for i, name in enumerate(case["images"]):
            latents = torch.randn((1, 4, case["height"] // 8, case["width"] // 8),
                                  generator=torch.Generator().manual_seed(case["seed"] + i))
            reference = np.array(Image.open(os.path.join(SEEDED, name))).astype(int)
            ours = ddim(bundle, case, latents)
            torch.manual_seed(0)
            moved = ddim(bundle, case, latents * (1 + 1e-6 * torch.randn_like(latents)))
            d, p = np.abs(ours - reference), np.abs(moved - ours)
            print(f"| {name} | {d.max()} / {d.mean():.2f} | {p.max()} / {p.mean():.2f} |")


if __name__ == "__main__":
    main()
