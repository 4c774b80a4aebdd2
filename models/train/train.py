#!/usr/bin/python3
"""Trains imagegen's default model (Fashion-MNIST latent diffusion) from scratch and exports it.

    OMP_WAIT_POLICY=PASSIVE nice -n 5 /usr/bin/python3 models/train/train.py \
        --out models/fashion-mnist-ldm --seed 0

Stages: (1) KL autoencoder 32x32x1 -> 4x8x8, (2) scaling factor = 1 / std of its latents,
(3) text encoder + UNet (epsilon prediction, linear betas, EMA, 10% empty captions),
(4) latent-to-RGB preview fit, (5) export of the bundle with TorchScript checks, plus a sample grid.

Budgets are wall-clock minutes (--vae_minutes, --unet_minutes) or, for exact repeats, step counts
(--vae_steps, --unet_steps; the log's last line of each stage gives the count a timed run did).
Checkpoints go to --ckpt_dir; --resume continues from them after a crash.
"""
import argparse
import json
import math
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import export  # noqa: E402
import ldm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def lr_at(base: float, step: int, frac: float, warmup: int, final_frac: float) -> float:
    """Linear warm-up, then cosine from base to base*final_frac over the budget fraction."""
    w = min(1.0, (step + 1) / warmup)
    frac = min(max(frac, 0.0), 1.0)
    return base * w * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


class Budget:
    def __init__(self, minutes: float, steps: int, elapsed: float = 0.0):
        self.minutes, self.steps = minutes, steps
        self.start = time.time() - elapsed

    def elapsed(self) -> float:
        return time.time() - self.start

    def frac(self, step: int) -> float:
        if self.steps > 0:
            return step / self.steps
        return self.elapsed() / (60.0 * self.minutes)

    def done(self, step: int) -> bool:
        return self.frac(step) >= 1.0


def save_atomic(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------

def train_vae(args, cfg, xtr, xte):
    path_final = os.path.join(args.ckpt_dir, "vae.pt")
    path_last = os.path.join(args.ckpt_dir, "vae_last.pt")
    vae = ldm.VAE(cfg["image_channels"], cfg["vae_ch"], cfg["latent_channels"])
    if args.resume and os.path.exists(path_final):
        st = torch.load(path_final)
        vae.load_state_dict(st["model"])
        log(f"vae: loaded finished autoencoder {path_final} ({st['step']} steps)")
        return vae, st["info"]
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    gen = torch.Generator().manual_seed(args.seed + 1)
    if args.resume and os.path.exists(path_last):
        st = torch.load(path_last)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        gen.set_state(st["gen"])
        log(f"vae: resumed at step {step} ({elapsed / 60:.1f} min)")
    budget = Budget(args.vae_minutes, args.vae_steps, elapsed)
    n = xtr.size(0)
    perm, pos = torch.randperm(n, generator=gen), 0
    rec_avg = kl_avg = None
    last_ckpt = time.time()
    vae.train()
    log(f"vae: {ldm.count_params(vae)} parameters, batch {args.vae_batch}, "
        f"budget {args.vae_steps or str(args.vae_minutes) + ' min'}")
    while not budget.done(step):
        if pos + args.vae_batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        x = xtr[perm[pos:pos + args.vae_batch]]
        pos += args.vae_batch
        for g in opt.param_groups:
            g["lr"] = lr_at(args.vae_lr, step, budget.frac(step), 200, 0.05)
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
        rec = vae.decoder(z)
        mse = F.mse_loss(rec, x)
        l1 = (rec - x).abs().mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        loss = mse + 0.5 * l1 + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        rec_avg = mse.item() if rec_avg is None else 0.98 * rec_avg + 0.02 * mse.item()
        kl_avg = kl.item() if kl_avg is None else 0.98 * kl_avg + 0.02 * kl.item()
        if step % 100 == 0:
            log(f"vae step {step} mse {rec_avg:.5f} kl/elem {kl_avg:.3f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {budget.elapsed() / 60:.1f} min "
                f"{1000 * budget.elapsed() / step:.0f} ms/step(avg)")
        if time.time() - last_ckpt > 60 * args.ckpt_minutes:
            save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                         "elapsed": budget.elapsed(), "gen": gen.get_state()}, path_last)
            last_ckpt = time.time()
    vae.eval()
    train_minutes = budget.elapsed() / 60
    with torch.no_grad():
        mses = []
        for i in range(0, xte.size(0), 500):
            xb = xte[i:i + 500]
            mean, _ = vae.encode(xb)
            mses.append(((vae.decoder(mean).clamp(-1, 1) - xb) ** 2).mean(dim=(1, 2, 3)))
        mse_test = torch.cat(mses).mean().item()
    # PSNR with images in [0, 1] (peak 1): MSE on [-1, 1] is 4x that on [0, 1]
    psnr = 10 * math.log10(1.0 / (mse_test / 4.0))
    info = {"steps": step, "minutes": train_minutes, "train_mse_ema": rec_avg,
            "kl_per_elem_ema": kl_avg, "test_mse": mse_test, "test_psnr_db": psnr}
    log(f"vae: done {step} steps in {info['minutes']:.1f} min; test mse {mse_test:.5f} "
        f"PSNR {psnr:.2f} dB")
    save_atomic({"model": vae.state_dict(), "step": step, "info": info}, path_final)
    return vae, info


@torch.no_grad()
def encode_all(vae, x, batch=1000):
    means, stds = [], []
    for i in range(0, x.size(0), batch):
        m, lv = vae.encode(x[i:i + batch])
        means.append(m)
        stds.append(torch.exp(0.5 * lv))
    return torch.cat(means), torch.cat(stds)


def train_unet(args, cfg, vocab, lat_mean, lat_std, labels, sf):
    path_last = os.path.join(args.ckpt_dir, "unet_last.pt")
    path_final = os.path.join(args.ckpt_dir, "unet.pt")
    text = ldm.TextEncoder(len(vocab), cfg["text_dim"], cfg["text_layers"], cfg["text_heads"],
                           cfg["max_length"])
    unet = ldm.UNet(cfg["latent_channels"], cfg["unet_ch"], cfg["text_dim"], cfg["head_dim"])
    ema_text = ldm.TextEncoder(len(vocab), cfg["text_dim"], cfg["text_layers"],
                               cfg["text_heads"], cfg["max_length"])
    ema_unet = ldm.UNet(cfg["latent_channels"], cfg["unet_ch"], cfg["text_dim"], cfg["head_dim"])
    if args.resume and os.path.exists(path_final):
        st = torch.load(path_final)
        ema_text.load_state_dict(st["ema_text"])
        ema_unet.load_state_dict(st["ema_unet"])
        log(f"unet: loaded finished model {path_final}")
        return ema_text.eval(), ema_unet.eval(), st["info"]
    ema_text.load_state_dict(text.state_dict())
    ema_unet.load_state_dict(unet.state_dict())
    params = list(text.parameters()) + list(unet.parameters())
    ema_params = list(ema_text.parameters()) + list(ema_unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 2)
    step, elapsed, loss_hist = 0, 0.0, []
    if args.resume and os.path.exists(path_last):
        st = torch.load(path_last)
        text.load_state_dict(st["text"])
        unet.load_state_dict(st["unet"])
        ema_text.load_state_dict(st["ema_text"])
        ema_unet.load_state_dict(st["ema_unet"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, elapsed, loss_hist = st["step"], st["elapsed"], st["loss_hist"]
        log(f"unet: resumed at step {step} ({elapsed / 60:.1f} min)")
    ac = ldm.alphas_cumprod_from(ldm.scheduler_config())
    n_t = ac.numel()
    table = ldm.caption_table(vocab, cfg["max_length"])
    empty = torch.tensor(ldm.tokenize("", {}, cfg["max_length"]), dtype=torch.long)
    n = lat_mean.size(0)
    perm, pos = torch.randperm(n, generator=gen), 0
    budget = Budget(args.unet_minutes, args.unet_steps, elapsed)
    log(f"unet: text encoder {ldm.count_params(text)} + unet {ldm.count_params(unet)} "
        f"parameters, batch {args.batch}, budget "
        f"{args.unet_steps or str(args.unet_minutes) + ' min'}; "
        f"{sum(t.size(0) for t in table)} distinct captions")
    text.train()
    unet.train()
    avg = None
    last_ckpt = time.time()
    window_loss, window_n = 0.0, 0
    while not budget.done(step):
        if pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + args.batch]
        pos += args.batch
        b = idx.numel()
        x0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen)) * sf
        lab = labels[idx]
        ids = torch.stack([table[int(k)][int(torch.randint(table[int(k)].size(0), (1,),
                                                           generator=gen))] for k in lab])
        drop = torch.rand(b, generator=gen) < args.cond_drop
        ids[drop] = empty
        t = torch.randint(0, n_t, (b,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = ac[t].view(b, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = lr_at(args.unet_lr, step, budget.frac(step), 300, 0.1)
        eps = unet(xt, t.float(), text(ids))
        loss = F.mse_loss(eps, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema_params, params):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)
        lv = loss.item()
        avg = lv if avg is None else 0.99 * avg + 0.01 * lv
        window_loss += lv
        window_n += 1
        if step % 100 == 0:
            loss_hist.append((step, round(budget.elapsed() / 60, 2), window_loss / window_n))
            log(f"unet step {step} loss {window_loss / window_n:.4f} (ema {avg:.4f}) "
                f"lr {opt.param_groups[0]['lr']:.2e} {budget.elapsed() / 60:.1f} min "
                f"{1000 * budget.elapsed() / step:.0f} ms/step(avg)")
            window_loss, window_n = 0.0, 0
        if time.time() - last_ckpt > 60 * args.ckpt_minutes:
            save_atomic({"text": text.state_dict(), "unet": unet.state_dict(),
                         "ema_text": ema_text.state_dict(), "ema_unet": ema_unet.state_dict(),
                         "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
                         "elapsed": budget.elapsed(), "loss_hist": loss_hist}, path_last)
            last_ckpt = time.time()
            log(f"unet: checkpoint {path_last} at step {step}")
    last = [h[2] for h in loss_hist[-5:]]
    info = {"steps": step, "minutes": budget.elapsed() / 60,
            "final_loss": sum(last) / max(1, len(last)), "loss_hist": loss_hist}
    log(f"unet: done {step} steps in {info['minutes']:.1f} min; final loss "
        f"(mean of last 500 steps) {info['final_loss']:.4f}")
    save_atomic({"ema_text": ema_text.state_dict(), "ema_unet": ema_unet.state_dict(),
                 "info": info}, path_final)
    return ema_text.eval(), ema_unet.eval(), info


@torch.no_grad()
def sample_grid(path, text, unet, vae, vocab, cfg, sf, per_class=8, seed=0):
    from PIL import Image
    voc = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([ldm.tokenize(f"a photo of a {ldm.CLASS_NAMES[k]}", voc, cfg["max_length"])
                        for k in range(10) for _ in range(per_class)], dtype=torch.long)
    dec = ldm.VAEDecoderExport(vae.decoder).eval()
    hl = cfg["image_size"] // ldm.VAE_DOWNSAMPLING
    g = torch.Generator().manual_seed(seed)
    imgs = ldm.ddim_sample(unet, text, dec, ids, ldm.scheduler_config(), sf,
                           (cfg["latent_channels"], hl, hl), steps=30, guidance=3.0, generator=g)
    s = cfg["image_size"]
    grid = imgs.view(10, per_class, s, s).permute(0, 2, 1, 3).reshape(10 * s, per_class * s)
    arr = ((grid + 1) * 127.5).clamp(0, 255).round().byte().numpy()
    Image.fromarray(arr, mode="L").resize((per_class * s * 3, 10 * s * 3), Image.NEAREST).save(path)
    log(f"sample grid (rows = classes, 30 DDIM steps, guidance 3) -> {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description="Train and export the Fashion-MNIST LDM.")
    ap.add_argument("--out", default="models/fashion-mnist-ldm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt_dir", default=os.path.join(HERE, "ckpt"))
    ap.add_argument("--resume", action="store_true", help="continue from --ckpt_dir")
    ap.add_argument("--vae_minutes", type=float, default=8.0)
    ap.add_argument("--vae_steps", type=int, default=0, help="if > 0, overrides --vae_minutes")
    ap.add_argument("--vae_batch", type=int, default=64)
    ap.add_argument("--vae_lr", type=float, default=1e-3)
    ap.add_argument("--kl_weight", type=float, default=1e-4)
    ap.add_argument("--unet_minutes", type=float, default=38.0)
    ap.add_argument("--unet_steps", type=int, default=0, help="if > 0, overrides --unet_minutes")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--unet_lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--cond_drop", type=float, default=0.1)
    ap.add_argument("--ckpt_minutes", type=float, default=3.0)
    ap.add_argument("--limit_train", type=int, default=0, help="use only N training images")
    args = ap.parse_args()

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    log(f"args {vars(args)}; torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    cfg = dict(ldm.REAL_CONFIG)
    vocab = ldm.build_vocab()
    xtr, ytr = ldm.load_fashion_mnist("train")
    xte, _ = ldm.load_fashion_mnist("test")
    if args.limit_train:
        xtr, ytr = xtr[:args.limit_train], ytr[:args.limit_train]
    log(f"data: train {tuple(xtr.shape)}, test {tuple(xte.shape)}; vocab {len(vocab)} tokens")

    vae, vae_info = train_vae(args, cfg, xtr, xte)
    t0 = time.time()
    lat_mean, lat_std = encode_all(vae, xtr)
    gen = torch.Generator().manual_seed(args.seed + 3)
    z = lat_mean + lat_std * torch.randn(lat_mean.shape, generator=gen)
    sf = 1.0 / float(z.std())
    log(f"latents: mean {float(z.mean()):.3f} std {float(z.std()):.4f} -> scaling_factor "
        f"{sf:.4f}; mean posterior std {float(lat_std.mean()):.4f} ({time.time() - t0:.0f} s)")

    text, unet, unet_info = train_unet(args, cfg, vocab, lat_mean, lat_std, ytr, sf)

    nfit = min(10000, xtr.size(0))
    latent_rgb = export.fit_latent_rgb(lat_mean[:nfit] * sf, xtr[:nfit], ldm.VAE_DOWNSAMPLING)
    log(f"latent_rgb fit rmse {latent_rgb['_fit_rmse']:.4f} (image range [-1, 1])")

    export.export_bundle(
        args.out, cfg, vocab, vae, text, unet, sf, latent_rgb,
        name="fashion-mnist-ldm",
        description="Text-to-image latent diffusion model trained on Fashion-MNIST "
                    "(32x32 grayscale clothing, shoes and bags).",
        sched_cfg=ldm.scheduler_config(), seed=args.seed)
    runs = args.ckpt_dir  # summary, loss history and sample grid go beside the checkpoints
    sample_grid(os.path.join(runs, "samples.png"), text, unet, vae, vocab, cfg, sf, seed=args.seed)
    summary = {
        "seed": args.seed, "threads": args.threads, "total_minutes": (time.time() - t_start) / 60,
        "params": {"vae_encoder": ldm.count_params(vae.encoder),
                   "vae_decoder": ldm.count_params(vae.decoder),
                   "text_encoder": ldm.count_params(text), "unet": ldm.count_params(unet)},
        "scaling_factor": sf, "latent_rgb_fit_rmse": latent_rgb["_fit_rmse"],
        "vae": vae_info, "unet": {k: v for k, v in unet_info.items() if k != "loss_hist"},
        "args": vars(args),
    }
    with open(os.path.join(runs, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    with open(os.path.join(runs, "unet_loss_hist.json"), "w") as fh:
        json.dump(unet_info.get("loss_hist", []), fh)
    log(f"summary: {json.dumps(summary)}")
    log(f"all done in {(time.time() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
