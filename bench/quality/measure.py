#!/usr/bin/python3
"""Quality of a served text-to-image model, measured through the real serving path.

Asks an imagegen server over gRPC (GenerateImages) for --per_class images of each Fashion-MNIST
class with the prompt "a photo of a {class name}", decodes the PNGs and judges them with the
classifier trained on real training images (bench/quality/classifier.pt, see
train_classifier.py). Reports:
  - the classifier's accuracy on the real test images (how far the judge can be trusted),
  - conditional accuracy of the generated images, overall and per class,
  - the Frechet distance (FD) between generated and real test images in the classifier's
    penultimate feature space, with two real-vs-real references: two disjoint halves of the
    test set, and a real subset of the same size as the generated set against the rest,
  - diversity: per class, the mean pairwise feature distance of the generated images divided by
    that of as many real test images of the class (about 1 = as varied as real data; well
    below 1 = sameness).

    /usr/bin/python3 bench/quality/measure.py --server localhost:50051 --per_class 50 \
        [--steps N --guidance S --sampler NAME --seed N --model NAME] \
        [--grid samples.png] [--json out.json]

--bundle DIR instead of --server samples in-process with a Python reference DDIM sampler
(models/train/ldm.py) on the bundle's TorchScript files: a cross-check of the engine, not the
serving path.
"""
import argparse
import concurrent.futures
import io
import json
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import common  # noqa: E402

PROMPT_NAMES = [n.lower() for n in common.CLASS_NAMES]  # "t-shirt/top", ..., "ankle boot"


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

def load_stubs(proto_root: str):
    """Generates the Python gRPC stubs of proto/imagegen/v1/imagegen.proto into a temp dir."""
    out = tempfile.mkdtemp(prefix="imagegen_stubs_")
    cmd = ["protoc", "-I", proto_root, f"--python_out={out}", f"--grpc_out={out}",
           "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
           os.path.join(proto_root, "imagegen", "v1", "imagegen.proto")]
    subprocess.run(cmd, check=True)
    sys.path.insert(0, out)
    from imagegen.v1 import imagegen_pb2, imagegen_pb2_grpc  # noqa: E402
    return imagegen_pb2, imagegen_pb2_grpc


def decode_png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.load()
    if img.mode != "L":
        img = img.convert("L")
    if img.size != (32, 32):
        img = img.resize((32, 32), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def generate_server(args, prompts):
    """Returns {class: uint8 [n, 32, 32]} and a dict describing what ran."""
    import grpc
    pb2, pb2_grpc = load_stubs(args.proto_root)
    channel = grpc.insecure_channel(args.server)
    grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
    stub = pb2_grpc.ImageGeneratorStub(channel)
    models = stub.ListModels(pb2.ListModelsRequest(), timeout=30)
    model_info = [{"name": m.name, "default_sampler": m.default_sampler,
                   "default_steps": m.default_steps,
                   "default_guidance_scale": m.default_guidance_scale,
                   "is_default": m.is_default} for m in models.models]

    jobs = []  # (class, first index, count)
    for k in range(10):
        i = 0
        while i < args.per_class:
            n = min(args.batch, args.per_class - i)
            jobs.append((k, i, n))
            i += n

    def run(job):
        k, first, n = job
        req = pb2.GenerateRequest(model=args.model, prompt=prompts[k], steps=args.steps,
                                  guidance_scale=args.guidance, sampler=args.sampler,
                                  seed=args.seed + 100000 * k + first, num_images=n)
        t0 = time.time()
        resp = stub.GenerateImages(req, timeout=args.request_timeout)
        return job, resp, time.time() - t0

    out = {k: [None] * args.per_class for k in range(10)}
    ran = {}
    latencies = []
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        for (k, first, n), resp, dt in pool.map(run, jobs):
            latencies.append(dt)
            assert len(resp.images) == n, f"asked for {n} images, got {len(resp.images)}"
            for j, im in enumerate(resp.images):
                out[k][first + j] = decode_png(im.data)
            ran = {"model": resp.model, "sampler": resp.sampler, "steps": resp.steps,
                   "guidance_scale": round(float(resp.guidance_scale), 4)}
    wall = time.time() - start
    info = {"mode": "server", "server": args.server, "ran": ran, "models": model_info,
            "requests": len(jobs), "images_per_request": args.batch,
            "concurrency": args.concurrency, "wall_seconds": round(wall, 2),
            "images_per_second": round(10 * args.per_class / wall, 2),
            "request_latency_p50_s": round(float(np.median(latencies)), 3)}
    return {k: np.stack(v) for k, v in out.items()}, info


def generate_bundle(args, prompts):
    """Python reference sampler on a bundle's TorchScript files (not the serving path)."""
    sys.path.insert(0, os.path.join(ROOT, "models", "train"))
    import ldm  # noqa: E402
    d = args.bundle
    with open(os.path.join(d, "model.json")) as fh:
        mj = json.load(fh)
    with open(os.path.join(d, "scheduler_config.json")) as fh:
        sc = json.load(fh)
    with open(os.path.join(d, mj["tokenizer"]["vocab_file"])) as fh:
        vocab = {w: i for i, w in enumerate(fh.read().split("\n")[:-1])}
    text = torch.jit.load(os.path.join(d, "text_encoder.pt"))
    unet = torch.jit.load(os.path.join(d, "unet.pt"))
    dec = torch.jit.load(os.path.join(d, "vae_decoder.pt"))
    steps = args.steps or mj["defaults"]["steps"]
    guidance = args.guidance or mj["defaults"]["guidance_scale"]
    if args.sampler not in ("", "ddim"):
        raise SystemExit("--bundle mode has only the ddim sampler")
    L = mj["text_encoder"]["max_length"]
    f = mj["downsampling_factor"]
    shape = (mj["latent_channels"], mj["default_height"] // f, mj["default_width"] // f)
    out = {}
    start = time.time()
    for k in range(10):
        ids = torch.tensor([ldm.tokenize(prompts[k], vocab, L)] * args.per_class)
        g = torch.Generator().manual_seed(args.seed + 100000 * k)
        imgs = ldm.ddim_sample(unet, text, dec, ids, sc, mj["scaling_factor"], shape,
                               steps=steps, guidance=guidance, generator=g)
        # the same quantisation as a PNG of the image
        out[k] = ((imgs[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    wall = time.time() - start
    info = {"mode": "bundle (python reference DDIM, not the serving path)", "bundle": d,
            "ran": {"model": mj["name"], "sampler": "ddim", "steps": steps,
                    "guidance_scale": guidance},
            "wall_seconds": round(wall, 2),
            "images_per_second": round(10 * args.per_class / wall, 2)}
    return out, info


# ---------------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def classify(model, x: np.ndarray, batch: int = 1000):
    logits, feats = [], []
    for i in range(0, x.shape[0], batch):
        xb = torch.from_numpy(x[i:i + batch])
        feats.append(model.features(xb))
        logits.append(model(xb))
    return torch.cat(logits).argmax(1).numpy(), torch.cat(feats).numpy()


def write_grid(path: str, gen: dict, cols: int = 8, scale: int = 4) -> None:
    s, gap = 32, 2
    h = 10 * s + 11 * gap
    w = cols * s + (cols + 1) * gap
    canvas = np.full((h, w), 96, dtype=np.uint8)
    for k in range(10):
        for j in range(min(cols, gen[k].shape[0])):
            y = gap + k * (s + gap)
            x = gap + j * (s + gap)
            canvas[y:y + s, x:x + s] = gen[k][j]
    Image.fromarray(canvas, mode="L").resize((w * scale, h * scale), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description="Quality of generated Fashion-MNIST images.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--server", help="HOST:PORT of an imagegen server")
    src.add_argument("--bundle", help="bundle folder: Python reference sampler (not serving)")
    ap.add_argument("--per_class", type=int, default=50)
    ap.add_argument("--steps", type=int, default=0, help="0: the model's default")
    ap.add_argument("--guidance", type=float, default=0.0, help="0: the model's default")
    ap.add_argument("--sampler", default="", help="empty: the model's default")
    ap.add_argument("--model", default="", help="empty: the server's default model")
    ap.add_argument("--seed", type=int, default=1234, help="class k, image i: seed+100000k+i")
    ap.add_argument("--prompt_template", default="a photo of a {}")
    ap.add_argument("--batch", type=int, default=8, help="images per request (server's max 8)")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ap.add_argument("--request_timeout", type=float, default=600)
    ap.add_argument("--connect_timeout", type=float, default=30)
    ap.add_argument("--classifier", default=os.path.join(HERE, "classifier.pt"))
    ap.add_argument("--proto_root", default=os.path.join(ROOT, "proto"))
    ap.add_argument("--grid", help="write a sample grid PNG (10 rows = classes x 8)")
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for judging")
    ap.add_argument("--min_accuracy", type=float, default=0.0,
                    help="exit with status 1 when the conditional accuracy is below this")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    prompts = [args.prompt_template.format(n) for n in PROMPT_NAMES]
    if args.server:
        gen, info = generate_server(args, prompts)
    else:
        gen, info = generate_bundle(args, prompts)
    if args.grid:
        write_grid(args.grid, gen, cols=min(8, args.per_class))

    clf = torch.jit.load(args.classifier)
    clf.eval()
    xte, yte = common.load_fashion_mnist("test")
    pred_real, feat_real = classify(clf, xte)
    real_acc = float((pred_real == yte).mean())

    xg = np.concatenate([common.uint8_to_model(gen[k]) for k in range(10)])
    yg = np.concatenate([np.full(gen[k].shape[0], k) for k in range(10)])
    pred_gen, feat_gen = classify(clf, xg)
    acc = float((pred_gen == yg).mean())

    rng = np.random.default_rng(0)
    perm = rng.permutation(len(yte))
    fd_halves = common.frechet_distance(feat_real[perm[:5000]], feat_real[perm[5000:]])
    # a real subset of the generated set's size (same per-class counts) against the rest
    sub = np.concatenate([rng.permutation(np.nonzero(yte == k)[0])[:gen[k].shape[0]]
                          for k in range(10)])
    rest = np.setdiff1d(np.arange(len(yte)), sub)
    fd_subset = common.frechet_distance(feat_real[sub], feat_real[rest])
    fd = common.frechet_distance(feat_gen, feat_real)

    per_class = []
    for k in range(10):
        m = yg == k
        wrong = pred_gen[m][pred_gen[m] != k]
        top_wrong = ""
        if wrong.size:
            vals, cnt = np.unique(wrong, return_counts=True)
            top_wrong = f"{common.CLASS_NAMES[vals[cnt.argmax()]]} ({cnt.max()})"
        real_idx = rng.permutation(np.nonzero(yte == k)[0])[:int(m.sum())]
        div_gen = common.mean_pairwise_distance(feat_gen[m])
        div_real = common.mean_pairwise_distance(feat_real[real_idx])
        per_class.append({
            "class": common.CLASS_NAMES[k], "prompt": prompts[k], "n": int(m.sum()),
            "accuracy": float((pred_gen[m] == k).mean()),
            "real_test_accuracy": float((pred_real[yte == k] == k).mean()),
            "most_common_error": top_wrong,
            "fd_vs_real_class": common.frechet_distance(feat_gen[m], feat_real[yte == k]),
            "diversity_ratio": div_gen / div_real if div_real > 0 else 0.0,
        })

    results = {
        "generation": info,
        "per_class_requested": args.per_class,
        "classifier": os.path.relpath(args.classifier, ROOT),
        "classifier_real_test_accuracy": real_acc,
        "conditional_accuracy": acc,
        "fd_generated_vs_real_test": fd,
        "fd_real_half_vs_half": fd_halves,
        "fd_real_subset_vs_rest": fd_subset,
        "mean_diversity_ratio": float(np.mean([c["diversity_ratio"] for c in per_class])),
        "per_class": per_class,
    }
    ran = info["ran"]
    print(f"generation: {info['mode']}; model {ran.get('model')}, sampler {ran.get('sampler')}, "
          f"steps {ran.get('steps')}, guidance {ran.get('guidance_scale')}; "
          f"{10 * args.per_class} images in {info['wall_seconds']} s "
          f"({info['images_per_second']} images/s)")
    print(f"classifier accuracy on real test images: {real_acc:.4f}")
    print(f"conditional accuracy (generated, {10 * args.per_class} images): {acc:.4f}")
    print(f"FD generated vs real test:          {fd:8.3f}")
    print(f"FD real subset (same n) vs rest:    {fd_subset:8.3f}   (reference floor at this n)")
    print(f"FD real half vs half (5000/5000):   {fd_halves:8.3f}")
    print(f"mean diversity ratio (gen/real):    {results['mean_diversity_ratio']:8.3f}")
    print(f"{'class':12s} {'acc':>6s} {'real':>6s} {'FD':>8s} {'div':>6s}  most common error")
    for c in per_class:
        print(f"{c['class']:12s} {c['accuracy']:6.3f} {c['real_test_accuracy']:6.3f} "
              f"{c['fd_vs_real_class']:8.3f} {c['diversity_ratio']:6.3f}  {c['most_common_error']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
            fh.write("\n")
    if acc < args.min_accuracy:
        print(f"FAIL: conditional accuracy {acc:.4f} is below --min_accuracy {args.min_accuracy}")
        sys.exit(1)


if __name__ == "__main__":
    main()
