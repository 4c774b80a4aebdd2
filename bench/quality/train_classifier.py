#!/usr/bin/python3
"""Trains the judge of bench/quality: a small CNN on the real Fashion-MNIST training images.

    OMP_WAIT_POLICY=PASSIVE nice -n 5 /usr/bin/python3 bench/quality/train_classifier.py \
        [--out bench/quality/classifier.pt] [--seed 0] [--epochs 5] [--threads 1]

Saves TorchScript (forward(x [B, 1, 32, 32] in [-1, 1]) -> logits [B, 10];
features(x) -> penultimate features [B, 128]) and prints its accuracy on the real test images.
"""
import argparse
import json
import math
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


class Classifier(nn.Module):
    def __init__(self, feat: int = 128):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(
            block(1, 32), nn.MaxPool2d(2),      # 16x16
            block(32, 64), nn.MaxPool2d(2),     # 8x8
            block(64, 128), nn.MaxPool2d(2),    # 4x4
        )
        self.fc = nn.Linear(128 * 16, feat)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(feat, 10)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.body(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a shift of up to 2 pixels (background fill -1)."""
    b = x.size(0)
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    pad = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dx, dy = torch.randint(0, 5, (2,), generator=g).tolist()
    return pad[:, :, dy:dy + 32, dx:dx + 32]


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    for i in range(0, x.size(0), batch):
        correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / x.size(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "classifier.pt"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    xtr, ytr = (torch.from_numpy(a) for a in common.load_fashion_mnist("train"))
    xte, yte = (torch.from_numpy(a) for a in common.load_fashion_mnist("test"))
    model = Classifier()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = xtr.size(0) // args.batch
    total = int(args.epochs * steps_per_epoch)
    print(f"classifier: {n_params} parameters, {total} steps of batch {args.batch}", flush=True)
    step = 0
    while step < total:
        perm = torch.randperm(xtr.size(0), generator=g)
        model.train()
        run_loss, run_n = 0.0, 0
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[i * args.batch:(i + 1) * args.batch]
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for pg in opt.param_groups:
                pg["lr"] = lr
            loss = F.cross_entropy(model(augment(xtr[idx], g)), ytr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_loss += loss.item()
            run_n += 1
            if step % 200 == 0:
                print(f"step {step}/{total} loss {run_loss / run_n:.4f} "
                      f"{time.time() - start:.0f} s", flush=True)
                run_loss, run_n = 0.0, 0
        print(f"epoch done at step {step}: test accuracy {evaluate(model, xte, yte):.4f}",
              flush=True)
    model.eval()
    acc = evaluate(model, xte, yte)
    scripted = torch.jit.script(model)
    scripted.save(args.out)
    loaded = torch.jit.load(args.out)
    with torch.no_grad():
        d = (loaded(xte[:256]) - model(xte[:256])).abs().max().item()
        fd = (loaded.features(xte[:256]) - model.features(xte[:256])).abs().max().item()
    assert d < 1e-4 and fd < 1e-4, (d, fd)
    acc_loaded = evaluate(loaded, xte, yte)
    info = {"test_accuracy": acc_loaded, "params": n_params, "steps": step,
            "epochs": args.epochs, "seed": args.seed, "threads": args.threads,
            "seconds": round(time.time() - start, 1),
            "size_bytes": os.path.getsize(args.out)}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
        json.dump(info, fh, indent=2)
        fh.write("\n")
    print(f"saved {args.out}: test accuracy {acc_loaded:.4f} (eager {acc:.4f}), "
          f"{info['size_bytes'] / 1e6:.2f} MB, {info['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
