#!/usr/bin/env python3
"""Stable Diffusion 1.x/2.x checkpoints to imagegen model bundles (docs/MODEL_BUNDLE.md).

  convert_sd.py SOURCE OUT_DIR [--name NAME] [--config DIR]
  convert_sd.py --random-weights --preset sd15|sd21 OUT_DIR [--name NAME]

SOURCE is a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/, weights as .safetensors) or one original-layout .safetensors file
(model.diffusion_model.*, first_stage_model.*, and cond_stage_model.transformer.* (SD 1.x, CLIP)
or cond_stage_model.model.* (SD 2.x, OpenCLIP)). A single file takes its architecture, tokenizer
and scheduler from --config DIR (a diffusers folder), or infers the standard SD 1.x/2.x
architecture from the tensor names and shapes (then the built-in CLIP tokenizer and SD's published
scheduler defaults are used).

The weights go into the project's own modules (sd_modules.py), which are scripted, frozen, saved
as text_encoder.pt, unet.pt, vae_decoder.pt and vae_encoder.pt, re-loaded and checked against the
eager modules. Everything is written to a temporary sibling of OUT_DIR that replaces OUT_DIR only
when all of it succeeded. Errors name the file and the key (tensor or config field) at fault.
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sd_modules as M  # noqa: E402
from safetensors_io import SafetensorsError, SafetensorsFile  # noqa: E402

TOLERANCE = 1e-5          # exported module vs eager module: |x - ref| / max(1, |ref|)
MAX_LENGTH = 77
BUILTIN_TOKENIZER = os.path.join(HERE, "clip_tokenizer")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "special_tokens_map.json",
                   "tokenizer_config.json")


class ConvertError(Exception):
    """A source the converter cannot turn into a bundle; the message names the file and key."""


def log(msg: str) -> None:
    print(f"convert_sd: {msg}", flush=True)


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConvertError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise ConvertError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: is not a JSON object")
    return data


# --------------------------------------------------------------------------------------------
# SD's published defaults (a bare single file, --random-weights)
# --------------------------------------------------------------------------------------------

def scheduler_defaults(family: str, prediction_type: str) -> Dict[str, Any]:
    """stable-diffusion-v1-5 and stable-diffusion-2-1 scheduler/scheduler_config.json."""
    return {
        "_class_name": "PNDMScheduler" if family == "sd1" else "DDIMScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "prediction_type": prediction_type,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    }


def preset_configs(preset: str) -> Dict[str, Dict[str, Any]]:
    """diffusers configs of SD 1.5 and SD 2.1 (768, v-prediction)."""
    unet = {"_class_name": "UNet2DConditionModel", "act_fn": "silu",
            "block_out_channels": [320, 640, 1280, 1280],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "norm_eps": 1e-5, "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1}
    vae = {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
           "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
           "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
           "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215}
    text = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408,
            "max_position_embeddings": 77, "layer_norm_eps": 1e-5}
    if preset == "sd15":
        unet.update(attention_head_dim=8, cross_attention_dim=768, sample_size=64,
                    use_linear_projection=False, upcast_attention=False)
        text.update(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, hidden_act="quick_gelu")
        return {"unet": unet, "vae": vae, "text": text,
                "scheduler": scheduler_defaults("sd1", "epsilon"), "family": "sd1"}
    if preset == "sd21":
        unet.update(attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, sample_size=96,
                    use_linear_projection=True, upcast_attention=True)
        text.update(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                    num_attention_heads=16, hidden_act="gelu")
        return {"unet": unet, "vae": vae, "text": text,
                "scheduler": scheduler_defaults("sd2", "v_prediction"), "family": "sd2"}
    raise ConvertError(f"--preset {preset}: unknown (sd15, sd21)")


# --------------------------------------------------------------------------------------------
# Weight plans: for every parameter of a module, where its tensor is
# --------------------------------------------------------------------------------------------

Slice = Optional[Tuple[int, int]]


class WeightRef:
    """One parameter's source: a tensor in a file, optionally rows [a, b) of it (OpenCLIP's fused
    in_proj), optionally reshaped between a 1x1 conv and a linear weight (original layout)."""

    def __init__(self, f: SafetensorsFile, key: str, rows: Slice = None, adapt: bool = False):
        self.f, self.key, self.rows, self.adapt = f, key, rows, adapt

    def shape(self) -> List[int]:
        s = self.f.shape(self.key)
        if self.rows is not None and s:
            s = [self.rows[1] - self.rows[0]] + s[1:]
        return s

    def where(self) -> str:
        rows = f" rows {self.rows[0]}:{self.rows[1]}" if self.rows else ""
        return f"{self.f.path}: tensor '{self.key}'{rows}"


def _compatible(src: List[int], dst: List[int], adapt: bool) -> bool:
    if src == dst:
        return True
    # A 1x1 conv weight [O, I, 1, 1] and a linear weight [O, I] hold the same numbers.
    return adapt and (src == dst + [1, 1] or dst == src + [1, 1])


class WeightPlan:
    """Maps each parameter name of a module to a WeightRef; check() validates keys and shapes from
    the headers alone, load() copies tensors one at a time into the module."""

    def __init__(self, component: str, config_where: str):
        self.component = component
        self.config_where = config_where
        self.refs: Dict[str, WeightRef] = {}
        self.missing: List[Tuple[str, str]] = []   # (parameter, where it was looked for)
        self.leftover: List[Tuple[str, str]] = []  # (file, key)

    def check(self, module: nn.Module) -> None:
        params = module.state_dict()
        for name in params:
            if name not in self.refs and not any(name == m[0] for m in self.missing):
                raise ConvertError(f"{self.component}: no source for parameter '{name}'")
        if self.missing:
            name, where = self.missing[0]
            more = f" (and {len(self.missing) - 1} more)" if len(self.missing) > 1 else ""
            raise ConvertError(f"{where}: missing tensor{more}; {self.component} parameter "
                               f"'{name}' is required by {self.config_where}")
        extra = [k for k in self.refs if k not in params]
        if extra:
            r = self.refs[extra[0]]
            raise ConvertError(f"{r.where()}: left over: {self.config_where} describes no "
                               f"{self.component} parameter '{extra[0]}'")
        if self.leftover:
            path, key = self.leftover[0]
            names = ", ".join(f"'{k}'" for _, k in self.leftover[:5])
            more = f" and {len(self.leftover) - 5} more" if len(self.leftover) > 5 else ""
            raise ConvertError(f"{path}: {len(self.leftover)} tensor(s) left over that no parameter "
                               f"of the architecture takes: {names}{more}")
        for name, p in params.items():
            r = self.refs[name]
            if r.f.dtype(r.key) not in ("F32", "F16", "BF16", "F64"):
                raise ConvertError(f"{r.where()}: dtype {r.f.dtype(r.key)}; a float type is "
                                   f"needed for {self.component} parameter '{name}'")
            if not _compatible(r.shape(), list(p.shape), r.adapt):
                raise ConvertError(f"{r.where()}: shape {r.shape()}, but {self.config_where} "
                                   f"needs {list(p.shape)} for {self.component} parameter '{name}'")

    @torch.no_grad()
    def load(self, module: nn.Module) -> None:
        self.check(module)
        for name, p in module.state_dict().items():
            r = self.refs[name]
            t = r.f.get(r.key)
            if r.rows is not None:
                t = t[r.rows[0]:r.rows[1]]
            p.copy_(t.reshape(p.shape))
            del t


@contextlib.contextmanager
def no_init():
    """Skips the random initialisation of modules whose every parameter is loaded afterwards
    (seconds and a full pass over memory for an 860M-parameter UNet)."""
    names = ("kaiming_uniform_", "uniform_", "normal_", "zeros_", "ones_", "xavier_uniform_")
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda t, *a, **k: t)
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


# --------------------------------------------------------------------------------------------
# Diffusers folders
# --------------------------------------------------------------------------------------------

def open_component_weights(folder: str, stem: str) -> List[SafetensorsFile]:
    """The .safetensors file(s) of one component folder (plain, .fp16, or sharded with an index)."""
    for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return [SafetensorsFile(p)]
    for name in (f"{stem}.safetensors.index.json", f"{stem}.safetensors.index.fp16.json"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            wm = read_json(p).get("weight_map")
            if not isinstance(wm, dict):
                raise ConvertError(f"{p}: 'weight_map' missing")
            return [SafetensorsFile(os.path.join(folder, f)) for f in sorted(set(wm.values()))]
    others = [f for f in sorted(os.listdir(folder)) if f.endswith((".bin", ".ckpt", ".pt", ".pth"))] \
        if os.path.isdir(folder) else []
    if others:
        raise ConvertError(f"{folder}: weights only as {others[0]}; the converter reads .safetensors "
                           f"(pickle files can run code when loaded)")
    raise ConvertError(f"{os.path.join(folder, stem + '.safetensors')}: missing")


def plan_from_folder(files: List[SafetensorsFile], component: str, config_where: str,
                     rename: Callable[[str], Optional[str]]) -> WeightPlan:
    plan = WeightPlan(component, config_where)
    for f in files:
        for key in f.keys():
            name = rename(key)
            if name is None:
                continue
            if name in plan.refs:
                raise ConvertError(f"{f.path}: tensor '{key}' duplicates '{plan.refs[name].key}' "
                                   f"of {plan.refs[name].f.path}")
            plan.refs[name] = WeightRef(f, key)
    return plan


_DEPRECATED_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_rename_folder(key: str) -> Optional[str]:
    """Folders saved by diffusers before 0.14 (stable-diffusion-v1-5 among them) name the VAE's
    mid-block attention query/key/value/proj_attn; diffusers renames them when loading."""
    m = re.match(r"((?:en|de)coder\.mid_block\.attentions\.0\.)(query|key|value|proj_attn)(\..*)$", key)
    if m:
        return m.group(1) + _DEPRECATED_VAE_ATTENTION[m.group(2)] + m.group(3)
    return key


def text_rename_folder(key: str) -> Optional[str]:
    if key.endswith("position_ids"):
        return None  # a buffer of older transformers versions, not a weight
    return key if key.startswith("text_model.") else "text_model." + key


# --------------------------------------------------------------------------------------------
# The original (CompVis / Stability) single-file layout
# --------------------------------------------------------------------------------------------

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def unet_original_name(name: str, a: Dict[str, Any]) -> str:
    """diffusers UNet2DConditionModel key -> model.diffusion_model.* key (the inverse of
    diffusers' convert_ldm_unet_checkpoint)."""
    p = name.split(".")
    layers = a["layers_per_block"]
    rlayers = [x + 1 for x in layers[::-1]]

    def res(rest: List[str]) -> str:
        return ".".join([_RESNET[rest[0]]] + rest[1:])

    if p[0] == "conv_in":
        o = "input_blocks.0.0." + ".".join(p[1:])
    elif p[0] == "time_embedding":
        o = {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[p[1]] + "." + ".".join(p[2:])
    elif p[0] == "conv_norm_out":
        o = "out.0." + ".".join(p[1:])
    elif p[0] == "conv_out":
        o = "out.2." + ".".join(p[1:])
    elif p[0] == "down_blocks":
        i, kind = int(p[1]), p[2]
        start = 1 + sum(layers[l] + 1 for l in range(i))
        if kind == "resnets":
            o = f"input_blocks.{start + int(p[3])}.0." + res(p[4:])
        elif kind == "attentions":
            o = f"input_blocks.{start + int(p[3])}.1." + ".".join(p[4:])
        else:  # downsamplers.0.conv.*
            o = f"input_blocks.{start + layers[i]}.0.op." + ".".join(p[5:])
    elif p[0] == "mid_block":
        if p[1] == "attentions":
            o = "middle_block.1." + ".".join(p[3:])
        else:
            o = f"middle_block.{0 if p[2] == '0' else 2}." + res(p[3:])
    elif p[0] == "up_blocks":
        i, kind = int(p[1]), p[2]
        start = sum(rlayers[l] for l in range(i))
        if kind == "resnets":
            o = f"output_blocks.{start + int(p[3])}.0." + res(p[4:])
        elif kind == "attentions":
            o = f"output_blocks.{start + int(p[3])}.1." + ".".join(p[4:])
        else:
            slot = 2 if a["up_block_types"][i] == "CrossAttnUpBlock2D" else 1
            o = f"output_blocks.{start + rlayers[i] - 1}.{slot}.conv." + ".".join(p[5:])
    else:
        raise ConvertError(f"unet parameter '{name}' has no original-layout name")
    return "model.diffusion_model." + o


def vae_original_name(name: str, a: Dict[str, Any]) -> str:
    """diffusers AutoencoderKL key -> first_stage_model.* key."""
    p = name.split(".")
    n = len(a["block_out_channels"])
    if p[0] in ("quant_conv", "post_quant_conv"):
        return "first_stage_model." + name
    side, rest = p[0], p[1:]

    def res(r: List[str]) -> str:
        return ".".join([{"conv_shortcut": "nin_shortcut"}.get(r[0], r[0])] + r[1:])

    if rest[0] in ("conv_in", "conv_out"):
        o = ".".join(rest)
    elif rest[0] == "conv_norm_out":
        o = "norm_out." + ".".join(rest[1:])
    elif rest[0] == "mid_block":
        if rest[1] == "resnets":
            o = f"mid.block_{int(rest[2]) + 1}." + res(rest[3:])
        else:
            sub = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v"}.get(rest[3])
            if rest[3] == "to_out":
                o = "mid.attn_1.proj_out." + ".".join(rest[5:])
            else:
                o = f"mid.attn_1.{sub}." + ".".join(rest[4:])
    elif rest[0] == "down_blocks":
        i = int(rest[1])
        if rest[2] == "resnets":
            o = f"down.{i}.block.{rest[3]}." + res(rest[4:])
        else:
            o = f"down.{i}.downsample.conv." + ".".join(rest[5:])
    elif rest[0] == "up_blocks":
        i = n - 1 - int(rest[1])
        if rest[2] == "resnets":
            o = f"up.{i}.block.{rest[3]}." + res(rest[4:])
        else:
            o = f"up.{i}.upsample.conv." + ".".join(rest[5:])
    else:
        raise ConvertError(f"vae parameter '{name}' has no original-layout name")
    return f"first_stage_model.{side}.{o}"


_OPENCLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "fc1": "c_fc", "fc2": "c_proj"}


def openclip_ref(f: SafetensorsFile, name: str, width: int) -> WeightRef:
    """CLIPTextModel key -> cond_stage_model.model.* (OpenCLIP, SD 2.x): q/k/v are row blocks of
    the fused in_proj weight and bias."""
    pre = "cond_stage_model.model."
    p = name.split(".")[1:]  # drop text_model.
    if p[0] == "embeddings":
        key = pre + ("token_embedding.weight" if p[1] == "token_embedding" else "positional_embedding")
        return WeightRef(f, key)
    if p[0] == "final_layer_norm":
        return WeightRef(f, pre + "ln_final." + p[1])
    i = p[2]
    blk = f"{pre}transformer.resblocks.{i}."
    if p[3] == "self_attn":
        if p[4] == "out_proj":
            return WeightRef(f, blk + "attn.out_proj." + p[5])
        j = {"q_proj": 0, "k_proj": 1, "v_proj": 2}[p[4]]
        return WeightRef(f, blk + f"attn.in_proj_{p[5]}", rows=(j * width, (j + 1) * width))
    if p[3] == "mlp":
        return WeightRef(f, blk + f"mlp.{_OPENCLIP[p[4]]}.{p[5]}")
    return WeightRef(f, blk + f"{_OPENCLIP[p[3]]}.{p[4]}")


# Tensors an original checkpoint carries besides the three models: the training noise schedule
# (top-level buffers), EMA copies, OpenCLIP's projection head and text-side buffers, the VAE's loss.
def _ignorable(key: str) -> bool:
    return ("." not in key or key.startswith(("model_ema.", "first_stage_model.loss."))
            or key.endswith("position_ids")
            or key in ("cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale",
                       "cond_stage_model.model.attn_mask"))


def single_file_family(f: SafetensorsFile) -> str:
    keys = f.keys()
    if any(k.startswith("conditioner.embedders.") for k in keys):
        raise ConvertError(f"{f.path}: an SDXL checkpoint (conditioner.embedders.*); only SD 1.x/2.x "
                           f"are supported")
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise ConvertError(f"{f.path}: no 'model.diffusion_model.*' tensors: not an original-layout "
                           f"Stable Diffusion checkpoint")
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    raise ConvertError(f"{f.path}: no text encoder tensors (cond_stage_model.transformer.* for SD 1.x, "
                       f"cond_stage_model.model.* for SD 2.x)")


def infer_single_file_configs(f: SafetensorsFile, family: str, prediction_type: Optional[str],
                              image_size: Optional[int]) -> Dict[str, Any]:
    """The standard SD 1.x/2.x architecture, with widths, depths and levels read from shapes."""
    def shape(key: str) -> List[int]:
        if key not in f:
            raise ConvertError(f"{f.path}: missing tensor '{key}' (needed to infer the architecture; "
                               f"or pass --config DIR)")
        return f.shape(key)

    keys = f.keys()
    u = "model.diffusion_model."
    cin = shape(u + "input_blocks.0.0.weight")
    n_in = 1 + max(int(m.group(1)) for k in keys for m in [re.match(re.escape(u) + r"input_blocks\.(\d+)\.", k)] if m)
    ops = sorted(int(m.group(1)) for k in keys
                 for m in [re.match(re.escape(u) + r"input_blocks\.(\d+)\.0\.op\.weight$", k)] if m)
    if not ops:
        raise ConvertError(f"{f.path}: no downsampling input blocks: unknown UNet layout")
    layers = ops[0] - 1
    levels = (n_in - 1) // (layers + 1) + (1 if (n_in - 1) % (layers + 1) else 0)
    boc, down, up = [], [], []
    for i in range(levels):
        first = 1 + i * (layers + 1)
        boc.append(shape(f"{u}input_blocks.{first}.0.out_layers.3.weight")[0])
        down.append("CrossAttnDownBlock2D" if f"{u}input_blocks.{first}.1.proj_in.weight" in f
                    else "DownBlock2D")
    for i in range(levels):
        first = i * (layers + 1)
        up.append("CrossAttnUpBlock2D" if f"{u}output_blocks.{first}.1.proj_in.weight" in f
                  else "UpBlock2D")
    attn0 = next((f"{u}input_blocks.{1 + i * (layers + 1)}.1." for i in range(levels)
                  if down[i] == "CrossAttnDownBlock2D"), None)
    if attn0 is None:
        raise ConvertError(f"{f.path}: no cross-attention blocks in the UNet")
    context = shape(attn0 + "transformer_blocks.0.attn2.to_k.weight")[1]
    linear = len(shape(attn0 + "proj_in.weight")) == 2
    if family == "sd1":
        heads: Any = 8
    else:
        heads = [max(1, c // 64) for c in boc]
    pt = prediction_type or ("epsilon" if family == "sd1" else "v_prediction")
    size = image_size or (512 if family == "sd1" or pt == "epsilon" else 768)
    unet = {"_class_name": "UNet2DConditionModel", "in_channels": cin[1], "out_channels": shape(u + "out.2.weight")[0],
            "block_out_channels": boc, "layers_per_block": layers, "down_block_types": down,
            "up_block_types": up, "attention_head_dim": heads, "cross_attention_dim": context,
            "use_linear_projection": linear, "upcast_attention": family == "sd2" and pt == "v_prediction",
            "sample_size": size // 8, "norm_num_groups": 32}

    v = "first_stage_model."
    vlevels = 1 + max(int(m.group(1)) for k in keys for m in [re.match(re.escape(v) + r"encoder\.down\.(\d+)\.", k)] if m)
    vlayers = 1 + max(int(m.group(1)) for k in keys for m in [re.match(re.escape(v) + r"encoder\.down\.0\.block\.(\d+)\.", k)] if m)
    vae = {"_class_name": "AutoencoderKL",
           "block_out_channels": [shape(f"{v}encoder.down.{i}.block.0.conv1.weight")[0] for i in range(vlevels)],
           "down_block_types": ["DownEncoderBlock2D"] * vlevels, "up_block_types": ["UpDecoderBlock2D"] * vlevels,
           "latent_channels": shape(v + "decoder.conv_in.weight")[1], "layers_per_block": vlayers,
           "norm_num_groups": 32, "sample_size": size, "scaling_factor": 0.18215}

    if family == "sd1":
        t = ("cond_stage_model.transformer.text_model."
             if any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
             else "cond_stage_model.transformer.")
        emb = shape(t + "embeddings.token_embedding.weight")
        nl = 1 + max(int(m.group(1)) for k in keys for m in [re.match(re.escape(t) + r"encoder\.layers\.(\d+)\.", k)] if m)
        text = {"vocab_size": emb[0], "hidden_size": emb[1], "num_hidden_layers": nl,
                "num_attention_heads": max(1, emb[1] // 64), "hidden_act": "quick_gelu",
                "intermediate_size": shape(t + "encoder.layers.0.mlp.fc1.weight")[0],
                "max_position_embeddings": shape(t + "embeddings.position_embedding.weight")[0]}
    else:
        t = "cond_stage_model.model."
        emb = shape(t + "token_embedding.weight")
        nl = 1 + max(int(m.group(1)) for k in keys for m in [re.match(re.escape(t) + r"transformer\.resblocks\.(\d+)\.", k)] if m)
        # SD 2.x conditions on the penultimate layer: the last resblock is not used.
        text = {"vocab_size": emb[0], "hidden_size": emb[1], "num_hidden_layers": nl - 1,
                "num_attention_heads": max(1, emb[1] // 64), "hidden_act": "gelu",
                "intermediate_size": shape(t + "transformer.resblocks.0.mlp.c_fc.weight")[0],
                "max_position_embeddings": shape(t + "positional_embedding")[0]}
    return {"unet": unet, "vae": vae, "text": text,
            "scheduler": scheduler_defaults(family, pt)}


def single_file_plans(f: SafetensorsFile, family: str, unet: nn.Module, ua: Dict[str, Any],
                      vae: nn.Module, va: Dict[str, Any], text: nn.Module, ta: Dict[str, Any],
                      config_where: Dict[str, str]) -> List[WeightPlan]:
    claimed = set()
    plans = []
    keys = f.keys()
    sd1_prefix = ("cond_stage_model.transformer."
                  if not any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
                  else "cond_stage_model.transformer.text_model.")

    def text_ref(name: str) -> WeightRef:
        if family == "sd1":
            return WeightRef(f, sd1_prefix + name[len("text_model."):])
        return openclip_ref(f, name, ta["hidden_size"])

    for comp, module, where, ref in (
            ("unet", unet, config_where["unet"], lambda n: WeightRef(f, unet_original_name(n, ua), adapt=True)),
            ("vae", vae, config_where["vae"], lambda n: WeightRef(f, vae_original_name(n, va), adapt=True)),
            ("text_encoder", text, config_where["text"], text_ref)):
        plan = WeightPlan(comp, where)
        for name in module.state_dict():
            r = ref(name)
            claimed.add(r.key)
            if r.key in f:
                plan.refs[name] = r
            else:
                plan.missing.append((name, f"{f.path}: tensor '{r.key}'"))
        plans.append(plan)
    # SD 2.x: OpenCLIP layers past the ones the text encoder uses (the penultimate-layer output).
    deeper = re.compile(r"cond_stage_model\.model\.transformer\.resblocks\.(\d+)\.")
    leftover = []
    for k in keys:
        if k in claimed or _ignorable(k):
            continue
        m = deeper.match(k)
        if family == "sd2" and m and int(m.group(1)) >= ta["num_hidden_layers"]:
            continue
        leftover.append((f.path, k))
    if leftover:
        plans[0].leftover = leftover
    return plans


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((x.double() - ref.double()).abs() / ref.double().abs().clamp(min=1.0)).max())


@torch.no_grad()
def export_checked(name: str, module: nn.Module, cases: Sequence[Tuple[torch.Tensor, ...]],
                   path: str) -> float:
    """Scripts and freezes module, saves it, re-loads it and checks both against the eager module
    on every case. Returns the largest relative error; raises ConvertError past TOLERANCE."""
    module = module.eval()
    t0 = time.time()
    eager = [module(*c) for c in cases]
    frozen = torch.jit.freeze(torch.jit.script(module))
    # The graph as saved, without the profiling executor's warm-up runs (seconds per call).
    with torch.jit.optimized_execution(False):
        scripted = [frozen(*c) for c in cases]
    torch.jit.save(frozen, path)
    del frozen
    loaded = torch.jit.load(path, map_location="cpu")
    worst = 0.0
    for c, e, s in zip(cases, eager, scripted):
        with torch.jit.optimized_execution(False):
            out = loaded(*c)
        if out.shape != e.shape or out.dtype != torch.float32:
            raise ConvertError(f"{name}: the saved module gives {out.dtype} {list(out.shape)}; the eager "
                               f"module {e.dtype} {list(e.shape)}")
        if not bool(torch.isfinite(e).all()):
            raise ConvertError(f"{name}: the eager module gives non-finite values on "
                               f"{[list(x.shape) for x in c]}")
        err = max(rel_error(s, e), rel_error(out, e))
        worst = max(worst, err)
        if err > TOLERANCE:
            raise ConvertError(f"{name}: the saved TorchScript module differs from the eager module "
                               f"by {err:.3g} (> {TOLERANCE}) on inputs {[list(x.shape) for x in c]}")
    del loaded
    log(f"{name:12s} {os.path.getsize(path) / 1e6:9.2f} MB, max rel error vs eager {worst:.2g} "
        f"on {len(cases)} inputs ({time.time() - t0:.1f} s)")
    return worst


@torch.no_grad()
def fit_latent_rgb(vae: M.AutoencoderKL, scaling_factor: float, latent_channels: int,
                   size: int, count: int = 4) -> Dict[str, List]:
    """Least squares from the scaled latent (+1) to the decoded image averaged over the pixels each
    latent pixel covers, on `count` random latents."""
    g = torch.Generator().manual_seed(1234)
    z = torch.randn(count, latent_channels, size, size, generator=g)
    img = M.VAEDecoderExport(vae)(z / scaling_factor).clamp(-1, 1)
    factor = img.shape[-1] // size
    target = torch.nn.functional.avg_pool2d(img, factor)
    x = z.permute(0, 2, 3, 1).reshape(-1, latent_channels).double()
    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    y = target.permute(0, 2, 3, 1).reshape(x.shape[0], -1).double()
    sol = torch.linalg.lstsq(x, y).solution.t()  # [3, c + 1]
    return {"matrix": [[round(float(v), 6) for v in row[:latent_channels]] for row in sol],
            "bias": [round(float(row[latent_channels]), 6) for row in sol]}


# --------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------

class Job:
    """Everything resolved from the command line before any module is built."""
    name: str
    description: str
    unet_cfg: Dict[str, Any]
    vae_cfg: Dict[str, Any]
    text_cfg: Dict[str, Any]
    where: Dict[str, str]
    scheduler: Dict[str, Any]
    tokenizer_dir: str
    pad_token: Optional[str] = None       # overrides the tokenizer's (built-in tokenizer for SD 2.x)
    scheduler_path: Optional[str] = None  # copied as is (unless --prediction-type overrides it)
    kind: str                             # folder | single | random
    folder: str = ""
    single: Optional[SafetensorsFile] = None
    family: str = ""


def resolve(args: argparse.Namespace) -> Job:
    job = Job()
    if args.random_weights:
        if not args.preset:
            raise ConvertError("--random-weights needs --preset sd15|sd21")
        p = preset_configs(args.preset)
        job.kind, job.family = "random", p["family"]
        job.unet_cfg, job.vae_cfg, job.text_cfg, job.scheduler = p["unet"], p["vae"], p["text"], p["scheduler"]
        job.where = {"unet": f"--preset {args.preset} (unet)", "vae": f"--preset {args.preset} (vae)",
                     "text": f"--preset {args.preset} (text encoder)"}
        job.tokenizer_dir = BUILTIN_TOKENIZER
        job.pad_token = "!" if p["family"] == "sd2" else None
        job.name = args.name or f"{args.preset}-random"
        job.description = (f"Stable Diffusion {'1.5' if args.preset == 'sd15' else '2.1'} architecture "
                           f"with random weights (for speed and memory benchmarks)")
        return job
    if args.preset:
        raise ConvertError("--preset applies to --random-weights only")
    src = args.source
    if src is None:
        raise ConvertError("SOURCE is required (a diffusers folder or a .safetensors file)")
    src = os.path.normpath(src)
    if os.path.isdir(src):
        if args.config:
            raise ConvertError("--config applies to a single-file SOURCE; a diffusers folder has its own")
        job.kind, job.folder = "folder", src
        read_json(os.path.join(src, "model_index.json"))
        job.where = {c: os.path.join(src, c, "config.json") for c in ("unet", "vae")}
        job.where["text"] = os.path.join(src, "text_encoder", "config.json")
        job.unet_cfg = read_json(job.where["unet"])
        job.vae_cfg = read_json(job.where["vae"])
        job.text_cfg = read_json(job.where["text"])
        job.scheduler_path = os.path.join(src, "scheduler", "scheduler_config.json")
        job.scheduler = read_json(job.scheduler_path)
        job.tokenizer_dir = os.path.join(src, "tokenizer")
        stem = os.path.basename(src)
        origin = "diffusers folder"
    elif os.path.isfile(src):
        if not src.endswith(".safetensors"):
            raise ConvertError(f"{src}: not a .safetensors file (pickle checkpoints such as .ckpt are "
                               f"not read: they can run code when loaded)")
        job.kind = "single"
        job.single = SafetensorsFile(src)
        job.family = single_file_family(job.single)
        stem = os.path.basename(src)[: -len(".safetensors")]
        origin = "single-file checkpoint"
        if args.config:
            cdir = os.path.normpath(args.config)
            job.where = {"unet": os.path.join(cdir, "unet", "config.json"),
                         "vae": os.path.join(cdir, "vae", "config.json"),
                         "text": os.path.join(cdir, "text_encoder", "config.json")}
            job.unet_cfg = read_json(job.where["unet"])
            job.vae_cfg = read_json(job.where["vae"])
            job.text_cfg = read_json(job.where["text"])
            sched = os.path.join(cdir, "scheduler", "scheduler_config.json")
            if os.path.isfile(sched):
                job.scheduler_path = sched
                job.scheduler = read_json(sched)
            else:
                log(f"{sched} missing: using SD's published scheduler defaults")
                job.scheduler = scheduler_defaults(job.family, args.prediction_type or "epsilon")
            tok = os.path.join(cdir, "tokenizer")
            job.tokenizer_dir = tok if os.path.isdir(tok) else BUILTIN_TOKENIZER
            if not os.path.isdir(tok):
                log(f"{tok} missing: using the built-in CLIP tokenizer")
                job.pad_token = "!" if job.family == "sd2" else None
        else:
            inferred = infer_single_file_configs(job.single, job.family, args.prediction_type, args.image_size)
            job.unet_cfg, job.vae_cfg, job.text_cfg = inferred["unet"], inferred["vae"], inferred["text"]
            job.scheduler = inferred["scheduler"]
            what = f"inferred from {src} (standard SD {'1.x' if job.family == 'sd1' else '2.x'})"
            job.where = {"unet": f"the unet {what}", "vae": f"the vae {what}",
                         "text": f"the text encoder {what}"}
            job.tokenizer_dir = BUILTIN_TOKENIZER
            job.pad_token = "!" if job.family == "sd2" else None
            log(f"architecture {what}: unet {json.dumps(job.unet_cfg)}")
    else:
        raise ConvertError(f"{src}: no such file or folder")
    if args.prediction_type and job.kind != "random":
        job.scheduler = dict(job.scheduler, prediction_type=args.prediction_type)
        job.scheduler_path = None
    job.name = args.name or stem
    pt = job.scheduler.get("prediction_type", "epsilon")
    # OpenAI CLIP (SD 1.x) uses quick_gelu; OpenCLIP (SD 2.x) gelu.
    family = "2.x" if job.text_cfg.get("hidden_act") == "gelu" else "1.x"
    job.description = f"Stable Diffusion {family} ({pt}) converted from the {origin} {os.path.basename(src)}"
    return job


def tokenizer_files(job: Job) -> Dict[str, str]:
    d = job.tokenizer_dir
    if not os.path.isdir(d):
        raise ConvertError(f"{d}: missing (the CLIP tokenizer: tokenizer.json or vocab.json + merges.txt)")
    files = {f: os.path.join(d, f) for f in TOKENIZER_FILES if os.path.isfile(os.path.join(d, f))}
    if "tokenizer.json" not in files and not ("vocab.json" in files and "merges.txt" in files):
        raise ConvertError(f"{d}: holds neither tokenizer.json nor vocab.json + merges.txt")
    for f, p in files.items():
        if f.endswith(".json"):
            read_json(p)
    return files


def write_json(path: str, data: Dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


def sample_token_ids(vocab: int, batch: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    bos, eos = min(49406, vocab - 2), min(49407, vocab - 1)
    ids = torch.full((batch, length), eos, dtype=torch.long)
    for b in range(batch):
        n = (b * 11) % (length - 2)
        ids[b, 0] = bos
        ids[b, 1:1 + n] = torch.randint(0, vocab - 2, (n,), generator=g)
    return ids


def convert(args: argparse.Namespace) -> str:
    t_start = time.time()
    job = resolve(args)
    ua = M.unet_arch(job.unet_cfg, job.where["unet"])
    va = M.vae_arch(job.vae_cfg, job.where["vae"])
    ta = M.text_arch(job.text_cfg, job.where["text"])
    if ta["hidden_size"] != ua["cross_attention_dim"]:
        raise ConvertError(f"{job.where['text']}: 'hidden_size' = {ta['hidden_size']} but "
                           f"{job.where['unet']} has 'cross_attention_dim' = {ua['cross_attention_dim']}")
    if ua["in_channels"] != va["latent_channels"] or ua["out_channels"] != va["latent_channels"]:
        raise ConvertError(f"{job.where['unet']}: 'in_channels' = {ua['in_channels']}, 'out_channels' = "
                           f"{ua['out_channels']}; the VAE has 'latent_channels' = {va['latent_channels']} "
                           f"(inpainting and other extra-input UNets are not supported)")
    if ta["max_position_embeddings"] < MAX_LENGTH:
        raise ConvertError(f"{job.where['text']}: 'max_position_embeddings' = "
                           f"{ta['max_position_embeddings']}; {MAX_LENGTH} tokens are needed")
    tok = tokenizer_files(job)

    out = os.path.abspath(args.out_dir)
    parent = os.path.dirname(out)
    if os.path.exists(out) and (not os.path.isdir(out) or
                                (os.listdir(out) and not os.path.isfile(os.path.join(out, "model.json")))):
        raise ConvertError(f"{out}: exists and is not a bundle; not replacing it")

    # Modules, and a check of every key and shape against the file headers before any work.
    init = contextlib.nullcontext() if job.kind == "random" else no_init()
    with init:
        text = M.CLIPTextModel(ta).eval()
        unet = M.UNet2DConditionModel(ua).eval()
        vae = M.AutoencoderKL(va).eval()
    plans: Dict[str, WeightPlan] = {}
    if job.kind == "folder":
        specs = (("text_encoder", text, "text_encoder", "model", text_rename_folder, job.where["text"]),
                 ("unet", unet, "unet", "diffusion_pytorch_model", lambda k: k, job.where["unet"]),
                 ("vae", vae, "vae", "diffusion_pytorch_model", vae_rename_folder, job.where["vae"]))
        for comp, module, sub, stem, rename, where in specs:
            files = open_component_weights(os.path.join(job.folder, sub), stem)
            plan = plan_from_folder(files, comp, where, rename)
            prefix_free = comp == "text_encoder" and not any(
                k.startswith("text_model.") for f in files for k in f.keys())
            for name in module.state_dict():
                if name not in plan.refs:
                    shown = name[len("text_model."):] if prefix_free else name
                    plan.missing.append((name, f"{files[0].path}: tensor '{shown}'"))
            plans[comp] = plan
    elif job.kind == "single":
        p = single_file_plans(job.single, job.family, unet, ua, vae, va, text, ta, job.where)
        plans = {"unet": p[0], "vae": p[1], "text_encoder": p[2]}
    for comp in ("text_encoder", "unet", "vae"):
        if comp in plans:
            plans[comp].check({"text_encoder": text, "unet": unet, "vae": vae}[comp])
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in
                (("text_encoder", text), ("unet", unet), ("vae", vae))}
    log(f"source checked: every tensor present with its shape ({', '.join(f'{k} {v / 1e6:.2f}M' for k, v in n_params.items())} parameters)")

    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        factor = 2 ** (len(va["block_out_channels"]) - 1)
        downs = len(ua["block_out_channels"]) - 1
        multiple_latent = 2 ** downs
        # Check sizes: the default latent size, capped (a real UNet at 64x64 takes long on a CPU).
        hl = min(ua["sample_size"], 2 * multiple_latent)
        hl = max(multiple_latent, hl - hl % multiple_latent)
        zc = va["latent_channels"]
        errors = {}

        if job.kind != "random":
            plans["text_encoder"].load(text)
        ids = sample_token_ids(ta["vocab_size"], 2, MAX_LENGTH)
        errors["text_encoder"] = export_checked("text_encoder", text, [(ids,), (ids[1:],)],
                                                os.path.join(tmp, "text_encoder.pt"))
        with torch.no_grad():
            ctx = text(ids)
        del text

        if job.kind != "random":
            plans["unet"].load(unet)
        g = torch.Generator().manual_seed(0)
        x1 = torch.randn(2, zc, hl, hl, generator=g)
        x2 = torch.randn(1, zc, multiple_latent, 2 * multiple_latent, generator=g)
        t = torch.tensor([999.0, 1.5])
        errors["unet"] = export_checked("unet", unet, [(x1, t, ctx), (x2, t[:1], ctx[:1])],
                                        os.path.join(tmp, "unet.pt"))
        del unet

        if job.kind != "random":
            plans["vae"].load(vae)
        z = torch.randn(2, zc, hl, hl, generator=g)
        errors["vae_decoder"] = export_checked("vae_decoder", M.VAEDecoderExport(vae),
                                               [(z,), (z[:1, :, :, : max(1, hl // 2)],)],
                                               os.path.join(tmp, "vae_decoder.pt"))
        img = torch.rand(1, 3, hl * factor, hl * factor, generator=g) * 2 - 1
        errors["vae_encoder"] = export_checked("vae_encoder", M.VAEEncoderExport(vae),
                                               [(img,), (img[:, :, :, : hl * factor // 2],)],
                                               os.path.join(tmp, "vae_encoder.pt"))
        latent_rgb = fit_latent_rgb(vae, va["scaling_factor"], zc, hl)
        del vae

        for f, p in tok.items():
            shutil.copyfile(p, os.path.join(tmp, f))
        if job.pad_token is not None:
            for f in ("special_tokens_map.json", "tokenizer_config.json"):
                path = os.path.join(tmp, f)
                if os.path.isfile(path):
                    data = read_json(path)
                    data["pad_token"] = job.pad_token
                    write_json(path, data)
        if job.scheduler_path:
            shutil.copyfile(job.scheduler_path, os.path.join(tmp, "scheduler_config.json"))
        else:
            write_json(os.path.join(tmp, "scheduler_config.json"), job.scheduler)
        model = {
            "format_version": 1,
            "name": job.name,
            "description": job.description,
            "image_channels": 3,
            "default_width": ua["sample_size"] * factor,
            "default_height": ua["sample_size"] * factor,
            "latent_channels": zc,
            "downsampling_factor": factor,
            "size_multiple": factor * multiple_latent,
            "scaling_factor": va["scaling_factor"],
            "text_encoder": {"context_dim": ta["hidden_size"], "max_length": MAX_LENGTH},
            "tokenizer": {"type": "clip_bpe"},
            "defaults": {"sampler": "dpmpp_2m_karras", "steps": 25, "guidance_scale": 7.5},
            "latent_rgb": latent_rgb,
            "exported_with": {"torch": torch.__version__},
        }
        write_json(os.path.join(tmp, "model.json"), model)
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "b"))
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(os.path.join(old, "b"), out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"bundle '{job.name}' written to {out} in {time.time() - t_start:.1f} s "
        f"(max rel errors vs eager: {', '.join(f'{k} {v:.2g}' for k, v in errors.items())})")
    return out


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="convert_sd.py",
        usage="%(prog)s SOURCE OUT_DIR [--name NAME] [--config DIR] [--prediction-type T] "
              "[--image-size PX]\n       %(prog)s --random-weights --preset {sd15,sd21} OUT_DIR [--name NAME]",
        description="Convert a Stable Diffusion 1.x/2.x checkpoint (diffusers folder or original "
                    ".safetensors file) to an imagegen model bundle.")
    ap.add_argument("paths", nargs="+", metavar="PATH",
                    help="SOURCE and OUT_DIR (only OUT_DIR with --random-weights)")
    ap.add_argument("--name", help="the bundle's name (default: the source folder or file stem)")
    ap.add_argument("--config", metavar="DIR", help="for a single file: a diffusers folder whose unet/, vae/, "
                                     "text_encoder/ config.json, tokenizer/ and scheduler/ apply")
    ap.add_argument("--random-weights", action="store_true",
                    help="no checkpoint: the --preset architecture with random weights")
    ap.add_argument("--preset", choices=["sd15", "sd21"], help="with --random-weights")
    ap.add_argument("--prediction-type", choices=["epsilon", "v_prediction", "sample"],
                    help="override the scheduler's prediction_type (a bare SD 2.x file defaults to "
                         "v_prediction, 768 px)")
    ap.add_argument("--image-size", type=int, help="a bare single file's default image size "
                                                   "(512 for SD 1.x; 768 for SD 2.x v_prediction)")
    args = ap.parse_intermixed_args(argv)
    if args.random_weights:
        if len(args.paths) != 1:
            ap.error("--random-weights takes OUT_DIR only")
        args.source, args.out_dir = None, args.paths[0]
    else:
        if len(args.paths) != 2:
            ap.error("SOURCE and OUT_DIR are required")
        args.source, args.out_dir = args.paths
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        convert(args)
    except (ConvertError, M.ConfigError, SafetensorsError) as e:
        print(f"convert_sd: error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
