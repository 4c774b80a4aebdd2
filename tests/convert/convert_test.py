#!/usr/bin/env python3
"""models/convert/convert_sd.py against the Stable Diffusion reference data.

  convert_test.py [--out DIR]

Converts tests/data/stable-diffusion/sd1-tiny, sd2-tiny and single-file/sd1-tiny.safetensors
(--config sd1-tiny) into DIR/sd1-tiny, DIR/sd2-tiny and DIR/sd1-tiny-single (the bundles the
serving tests load; CTest fixture test_bundle), then checks:
  - each bundle's TorchScript modules, loaded with torch.jit.load, against expected.safetensors
    (what diffusers computes): |x - ref| / max(1, |ref|) <= 1e-4;
  - model.json's fields, the scheduler config copied as is, the tokenizer files;
  - diffusers-folder weights load into sd_modules with load_state_dict(strict=True);
  - an SD 2.x original-layout file (OpenCLIP text encoder, fused in_proj) written from sd2-tiny,
    and the bare sd1 single file with its architecture inferred;
  - malformed inputs fail with exit status 1 and a message naming the key or file, and leave no
    OUT_DIR (nor a temporary folder), and a failed conversion leaves an existing bundle intact.
Exits non-zero on the first failure.
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "stable-diffusion")
CONVERTER = os.path.join(ROOT, "models", "convert", "convert_sd.py")
sys.path.insert(0, os.path.join(ROOT, "models", "convert"))

import convert_sd  # noqa: E402
import sd_modules as M  # noqa: E402
import safetensors_io as S  # noqa: E402

TOLERANCE = 1e-4
torch.set_num_threads(min(2, torch.get_num_threads()))


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    check(tuple(x.shape) == tuple(ref.shape), f"shape {tuple(x.shape)} != reference {tuple(ref.shape)}")
    return float(((x.double() - ref.double()).abs() / ref.double().abs().clamp(min=1.0)).max())


def run_converter(argv, expect_ok=True):
    """convert_sd.main in this process (one torch import for the whole test); returns (rc, stderr)."""
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = convert_sd.main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code
    if expect_ok and rc != 0:
        sys.stdout.write(out.getvalue())
        raise AssertionError(f"convert_sd {' '.join(map(str, argv))} failed: {err.getvalue()}")
    return rc, err.getvalue(), out.getvalue()


@torch.no_grad()
def compare_bundle(bundle: str, variant: str, only=None) -> dict:
    exp = S.load_all(os.path.join(DATA, variant, "expected.safetensors"))
    model = json.load(open(os.path.join(bundle, "model.json")))
    sf = model["scaling_factor"]

    def load(name):
        return torch.jit.load(os.path.join(bundle, name + ".pt"), map_location="cpu").eval()

    errs = {}
    cases = {
        "text_encoder": lambda: rel(load("text_encoder")(exp["text_encoder.input_ids"]),
                                    exp["text_encoder.last_hidden_state"]),
        "unet": lambda: rel(load("unet")(exp["unet.sample"], exp["unet.timestep"].float(),
                                         exp["unet.encoder_hidden_states"]), exp["unet.out"]),
        "vae_decoder": lambda: rel(load("vae_decoder")(exp["vae_decoder.scaled_latent"] / sf),
                                   exp["vae_decoder.image"]),
        "vae_encoder": lambda: rel(load("vae_encoder")(exp["vae_encoder.image"]),
                                   exp["vae_encoder.latent_mean"]),
    }
    for name, fn in cases.items():
        if only is not None and name not in only:
            continue
        errs[name] = fn()
        check(errs[name] <= TOLERANCE, f"{bundle}: {name} differs from diffusers' output by "
                                       f"{errs[name]:.3g} > {TOLERANCE}")
    print(f"  {os.path.basename(bundle):22s} vs {variant}/expected.safetensors: " +
          ", ".join(f"{k} {v:.2g}" for k, v in errs.items()), flush=True)
    return errs


def check_model_json(bundle: str, name: str, tokenizer_files, scheduler_src) -> None:
    m = json.load(open(os.path.join(bundle, "model.json")))
    keys = ["format_version", "name", "description", "image_channels", "default_width",
            "default_height", "latent_channels", "downsampling_factor", "size_multiple",
            "scaling_factor", "text_encoder", "tokenizer", "defaults", "latent_rgb", "exported_with"]
    check(list(m) == keys, f"{bundle}/model.json keys {list(m)}")
    want = {"format_version": 1, "name": name, "image_channels": 3, "default_width": 64,
            "default_height": 64, "latent_channels": 4, "downsampling_factor": 8,
            "size_multiple": 64, "scaling_factor": 0.18215,
            "text_encoder": {"context_dim": 16, "max_length": 77}, "tokenizer": {"type": "clip_bpe"},
            "defaults": {"sampler": "dpmpp_2m_karras", "steps": 25, "guidance_scale": 7.5},
            "exported_with": {"torch": torch.__version__}}
    for k, v in want.items():
        check(m[k] == v, f"{bundle}/model.json: {k} = {m[k]!r}, want {v!r}")
    check(isinstance(m["description"], str) and m["description"], "description")
    rgb = m["latent_rgb"]
    check(len(rgb["matrix"]) == 3 and all(len(r) == 4 for r in rgb["matrix"]) and len(rgb["bias"]) == 3,
          f"{bundle}: latent_rgb shape")
    check(all(isinstance(v, float) and abs(v) < 10 for r in rgb["matrix"] for v in r), "latent_rgb values")
    for f in tokenizer_files:
        check(os.path.isfile(os.path.join(bundle, f)), f"{bundle}: tokenizer file {f} missing")
    with open(os.path.join(bundle, "scheduler_config.json"), "rb") as a, open(scheduler_src, "rb") as b:
        check(a.read() == b.read(), f"{bundle}/scheduler_config.json is not {scheduler_src} as is")
    for f in ("text_encoder.pt", "unet.pt", "vae_decoder.pt", "vae_encoder.pt"):
        check(os.path.isfile(os.path.join(bundle, f)), f"{bundle}: {f} missing")
    print(f"  {os.path.basename(bundle):22s} model.json, scheduler_config.json, tokenizer "
          f"({', '.join(tokenizer_files)}) as expected", flush=True)


def check_strict_load() -> None:
    for variant in ("sd1-tiny", "sd2-tiny"):
        d = os.path.join(DATA, variant)
        unet = M.UNet2DConditionModel(M.unet_arch(json.load(open(os.path.join(d, "unet", "config.json")))))
        unet.load_state_dict(S.load_all(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors")), strict=True)
        vae = M.AutoencoderKL(M.vae_arch(json.load(open(os.path.join(d, "vae", "config.json")))))
        vae.load_state_dict(S.load_all(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors")), strict=True)
        te = M.CLIPTextModel(M.text_arch(json.load(open(os.path.join(d, "text_encoder", "config.json")))))
        sd = {k if k.startswith("text_model.") else "text_model." + k: v
              for k, v in S.load_all(os.path.join(d, "text_encoder", "model.safetensors")).items()
              if not k.endswith("position_ids")}
        te.load_state_dict(sd, strict=True)
    print("  sd1-tiny, sd2-tiny: unet, vae, text encoder weights load with load_state_dict(strict=True)",
          flush=True)


def make_sd2_single_file(path: str) -> None:
    """sd2-tiny in the original SD 2.x layout: UNet/VAE under the CompVis names (rules validated by
    the real sd1 single file), the text encoder as OpenCLIP (q/k/v fused into in_proj, one more
    resblock than the penultimate-layer output uses, projection head and logit scale)."""
    d = os.path.join(DATA, "sd2-tiny")
    ua = M.unet_arch(json.load(open(os.path.join(d, "unet", "config.json"))))
    va = M.vae_arch(json.load(open(os.path.join(d, "vae", "config.json"))))
    out = {}
    for k, v in S.load_all(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors")).items():
        out[convert_sd.unet_original_name(k, ua)] = v
    for k, v in S.load_all(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors")).items():
        if ".mid_block.attentions.0.to_" in k and k.endswith("weight"):
            v = v[:, :, None, None]  # the original VAE attention uses 1x1 convs
        out[convert_sd.vae_original_name(k, va)] = v
    te = S.load_all(os.path.join(d, "text_encoder", "model.safetensors"))
    p = "cond_stage_model.model."
    out[p + "token_embedding.weight"] = te["embeddings.token_embedding.weight"]
    out[p + "positional_embedding"] = te["embeddings.position_embedding.weight"]
    out[p + "ln_final.weight"] = te["final_layer_norm.weight"]
    out[p + "ln_final.bias"] = te["final_layer_norm.bias"]
    width = te["final_layer_norm.weight"].shape[0]
    for i in range(3):  # layer 2 is the unused last layer
        src = i if i < 2 else 1
        L = f"encoder.layers.{src}."
        b = f"{p}transformer.resblocks.{i}."
        g = (lambda t: t) if i < 2 else (lambda t: t + 1.0)
        for w in ("weight", "bias"):
            out[b + f"attn.in_proj_{w}"] = g(torch.cat([te[L + f"self_attn.{q}_proj.{w}"]
                                                        for q in ("q", "k", "v")], 0))
            out[b + f"attn.out_proj.{w}"] = g(te[L + f"self_attn.out_proj.{w}"])
            out[b + f"ln_1.{w}"] = g(te[L + f"layer_norm1.{w}"])
            out[b + f"ln_2.{w}"] = g(te[L + f"layer_norm2.{w}"])
            out[b + f"mlp.c_fc.{w}"] = g(te[L + f"mlp.fc1.{w}"])
            out[b + f"mlp.c_proj.{w}"] = g(te[L + f"mlp.fc2.{w}"])
    out[p + "text_projection"] = torch.randn(width, width)
    out[p + "logit_scale"] = torch.tensor(4.6)
    out["alphas_cumprod"] = torch.linspace(0.99, 0.01, 1000)
    S.save(path, out)


def folder_copy(tmp: str, variant: str, name: str) -> str:
    """A copy of a reference folder made of symlinks, to be broken one file at a time."""
    dst = os.path.join(tmp, name)
    src = os.path.join(DATA, variant)
    for sub in sorted(os.listdir(src)):
        s = os.path.join(src, sub)
        if os.path.isdir(s):
            os.makedirs(os.path.join(dst, sub))
            for f in os.listdir(s):
                os.symlink(os.path.join(s, f), os.path.join(dst, sub, f))
        else:
            os.makedirs(dst, exist_ok=True)
            os.symlink(s, os.path.join(dst, sub))
    return dst


def replace_file(path: str) -> None:
    os.unlink(path)


def expect_failure(argv, must_contain, out_dir: str) -> None:
    rc, err, _ = run_converter(argv + [out_dir], expect_ok=False)
    check(rc == 1, f"convert_sd {argv}: exit status {rc}, want 1 (stderr: {err})")
    for s in must_contain:
        check(s in err, f"convert_sd {argv}: message {err.strip()!r} does not name {s!r}")
    check(not os.path.exists(out_dir), f"{out_dir} exists after a failed conversion")
    parent = os.path.dirname(out_dir)
    left = [f for f in os.listdir(parent) if f.startswith("." + os.path.basename(out_dir))]
    check(not left, f"temporary folders left behind: {left}")
    print(f"  fails as it should: {err.strip()[len('convert_sd: error: '):][:150]}", flush=True)


def error_cases(tmp: str, bundles: str) -> None:
    outs = os.path.join(tmp, "outs")
    os.makedirs(outs)
    sd1 = os.path.join(DATA, "sd1-tiny")

    # A missing tensor (diffusers folder).
    d = folder_copy(tmp, "sd1-tiny", "missing")
    f = os.path.join(d, "unet", "diffusion_pytorch_model.safetensors")
    t = S.load_all(os.path.join(sd1, "unet", "diffusion_pytorch_model.safetensors"))
    del t["down_blocks.1.attentions.0.proj_in.weight"]
    replace_file(f)
    S.save(f, t)
    expect_failure([d], ["down_blocks.1.attentions.0.proj_in.weight", f, "missing"],
                   os.path.join(outs, "missing"))

    # A wrong shape.
    d = folder_copy(tmp, "sd1-tiny", "shape")
    f = os.path.join(d, "vae", "diffusion_pytorch_model.safetensors")
    t = S.load_all(os.path.join(sd1, "vae", "diffusion_pytorch_model.safetensors"))
    t["decoder.conv_in.weight"] = torch.zeros(32, 4, 1, 1)
    replace_file(f)
    S.save(f, t)
    expect_failure([d], ["decoder.conv_in.weight", f, "[32, 4, 1, 1]", "[32, 4, 3, 3]"],
                   os.path.join(outs, "shape"))

    # An unknown block type, and a config value outside what the modules implement.
    for name, key, value, needle in (
            ("block", "down_block_types",
             ["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             "SimpleCrossAttnDownBlock2D"),
            ("classemb", "class_embed_type", "timestep", "timestep"),
            ("layers", "transformer_layers_per_block", 2, "2")):
        d = folder_copy(tmp, "sd1-tiny", name)
        f = os.path.join(d, "unet", "config.json")
        cfg = json.load(open(f))
        cfg[key] = value
        replace_file(f)
        json.dump(cfg, open(f, "w"))
        expect_failure([d], [f, f"'{key}'", needle], os.path.join(outs, name))

    # A truncated safetensors header.
    d = folder_copy(tmp, "sd1-tiny", "truncated")
    f = os.path.join(d, "text_encoder", "model.safetensors")
    data = open(os.path.join(sd1, "text_encoder", "model.safetensors"), "rb").read(600)
    replace_file(f)
    open(f, "wb").write(data)
    expect_failure([d], [f, "truncated"], os.path.join(outs, "truncated"))

    # Single file: a tensor left over, and one missing (named in the original layout).
    single = os.path.join(DATA, "single-file", "sd1-tiny.safetensors")
    t = S.load_all(single)
    t["model.diffusion_model.extra_block.weight"] = torch.zeros(3)
    f = os.path.join(tmp, "leftover.safetensors")
    S.save(f, t)
    expect_failure([f, "--config", sd1], [f, "model.diffusion_model.extra_block.weight", "left over"],
                   os.path.join(outs, "leftover"))
    del t["model.diffusion_model.extra_block.weight"]
    del t["first_stage_model.decoder.up.1.upsample.conv.weight"]
    f = os.path.join(tmp, "missing1.safetensors")
    S.save(f, t)
    expect_failure([f, "--config", sd1], [f, "first_stage_model.decoder.up.1.upsample.conv.weight", "missing"],
                   os.path.join(outs, "missing1"))

    # A failed conversion leaves an existing bundle as it was.
    good = os.path.join(outs, "existing")
    shutil.copytree(os.path.join(bundles, "sd2-tiny"), good)
    before = {f: os.path.getmtime(os.path.join(good, f)) for f in os.listdir(good)}
    rc, err, _ = run_converter([f, "--config", sd1, good], expect_ok=False)
    check(rc == 1 and "missing" in err, "failure over an existing bundle")
    after = {f: os.path.getmtime(os.path.join(good, f)) for f in os.listdir(good)}
    check(before == after, "a failed conversion changed the existing bundle")
    check(sorted(os.listdir(outs)) == ["existing"], f"left behind: {sorted(os.listdir(outs))}")
    print("  a failed conversion leaves the existing bundle intact and nothing else behind", flush=True)

    # The command line itself (exit status and stderr of the script).
    p = subprocess.run([sys.executable, CONVERTER, os.path.join(tmp, "nonexistent"), os.path.join(outs, "x")],
                       capture_output=True, text=True)
    check(p.returncode == 1 and "nonexistent" in p.stderr and "error" in p.stderr,
          f"CLI on a missing source: rc {p.returncode}, stderr {p.stderr!r}")
    print("  the command line exits 1 with the message on stderr", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="where the three bundles go (default: a temporary folder)")
    args = ap.parse_args()
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="convert_test.")
    out = args.out or os.path.join(tmp, "bundles")
    try:
        sd1 = os.path.join(DATA, "sd1-tiny")
        sd2 = os.path.join(DATA, "sd2-tiny")
        single = os.path.join(DATA, "single-file", "sd1-tiny.safetensors")
        print("converting the reference checkpoints", flush=True)
        run_converter([sd1, os.path.join(out, "sd1-tiny")])
        run_converter([sd2, os.path.join(out, "sd2-tiny")])
        run_converter([single, os.path.join(out, "sd1-tiny-single"), "--config", sd1, "--name", "sd1-tiny-single"])
        print(f"TorchScript modules vs diffusers (rel error <= {TOLERANCE})", flush=True)
        compare_bundle(os.path.join(out, "sd1-tiny"), "sd1-tiny")
        compare_bundle(os.path.join(out, "sd2-tiny"), "sd2-tiny")
        compare_bundle(os.path.join(out, "sd1-tiny-single"), "sd1-tiny")
        print("bundle files", flush=True)
        sd1_tok = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]
        check_model_json(os.path.join(out, "sd1-tiny"), "sd1-tiny", sd1_tok,
                         os.path.join(sd1, "scheduler", "scheduler_config.json"))
        check_model_json(os.path.join(out, "sd2-tiny"), "sd2-tiny", ["tokenizer.json", "tokenizer_config.json"],
                         os.path.join(sd2, "scheduler", "scheduler_config.json"))
        check_model_json(os.path.join(out, "sd1-tiny-single"), "sd1-tiny-single", sd1_tok,
                         os.path.join(sd1, "scheduler", "scheduler_config.json"))
        print("parameter names", flush=True)
        check_strict_load()

        print("original-layout variants", flush=True)
        f = os.path.join(tmp, "sd2-tiny-original.safetensors")
        make_sd2_single_file(f)
        b = os.path.join(tmp, "sd2-single")
        run_converter([f, b, "--config", sd2])
        compare_bundle(b, "sd2-tiny")
        # No --config: the architecture is inferred (SD 1.x: 8 heads, which sd1-tiny's UNet has;
        # its 16-wide text encoder has 2 heads where the SD rule width/64 gives 1, so only the
        # UNet and VAE can match), with the built-in tokenizer and SD 1.5's scheduler.
        b = os.path.join(tmp, "sd1-bare")
        run_converter([single, b])
        compare_bundle(b, "sd1-tiny", only=("unet", "vae_decoder", "vae_encoder"))
        m = json.load(open(os.path.join(b, "model.json")))
        sch = json.load(open(os.path.join(b, "scheduler_config.json")))
        check(m["default_width"] == 512 and m["name"] == "sd1-tiny", f"bare single file model.json {m}")
        check(sch["_class_name"] == "PNDMScheduler" and sch["prediction_type"] == "epsilon", f"scheduler {sch}")
        check(all(os.path.isfile(os.path.join(b, x)) for x in ("vocab.json", "merges.txt")), "built-in tokenizer")

        print("malformed inputs", flush=True)
        error_cases(tmp, out)
    except AssertionError as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"PASS ({time.time() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
