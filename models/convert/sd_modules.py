"""Stable Diffusion 1.x/2.x modules in plain PyTorch (scriptable with torch 1.13).

The CLIP text transformer (as transformers' CLIPTextModel), the conditional UNet (as diffusers'
UNet2DConditionModel with the SD 1.x/2.x block types) and the KL autoencoder (as diffusers'
AutoencoderKL). Parameter names are those of the diffusers / transformers state dicts, so a
diffusers folder's weights load with load_state_dict(strict=True).

Architectures come from the config.json files of a diffusers folder, read by
`unet_arch`, `vae_arch` and `text_arch`: they accept exactly the configurations these modules
implement and raise ConfigError naming the key and value for anything else.
"""
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConfigError(ValueError):
    """A config.json value outside what these modules implement."""


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

def _per_level(value: Any, n: int, key: str, where: str) -> List[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(f"{where}: '{key}' = {list(value)} has {len(value)} entries; "
                              f"the model has {n} levels")
        return list(value)
    return [value] * n


def _require(cfg: Dict[str, Any], key: str, allowed: List[Any], where: str,
             default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{where}: '{key}' = {json_repr(value)} is not supported "
                          f"(supported: {', '.join(json_repr(a) for a in allowed)})")
    return value


def json_repr(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def _int(cfg: Dict[str, Any], key: str, where: str, default: Any = None, minimum: int = 1) -> int:
    v = cfg.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(f"{where}: '{key}' = {json_repr(v)} must be an integer >= {minimum}")
    return v


def _int_list(cfg: Dict[str, Any], key: str, where: str, default: Any = None) -> List[int]:
    v = cfg.get(key, default)
    if (not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
        raise ConfigError(f"{where}: '{key}' = {json_repr(v)} must be a list of positive integers")
    return list(v)


UNET_DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UNET_UP_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")


def unet_arch(cfg: Dict[str, Any], where: str = "unet/config.json") -> Dict[str, Any]:
    """Validates a diffusers UNet2DConditionModel config; returns the normalised architecture."""
    _require(cfg, "_class_name", ["UNet2DConditionModel"], where, "UNet2DConditionModel")
    # Everything that would add modules or change the computation must be at its SD default.
    for key, allowed, default in [
            ("act_fn", ["silu"], "silu"),
            ("addition_embed_type", [None], None),
            ("addition_time_embed_dim", [None], None),
            ("class_embed_type", [None], None),
            ("num_class_embeds", [None], None),
            ("projection_class_embeddings_input_dim", [None], None),
            ("class_embeddings_concat", [False], False),
            ("encoder_hid_dim", [None], None),
            ("encoder_hid_dim_type", [None], None),
            ("time_embedding_type", ["positional"], "positional"),
            ("time_embedding_dim", [None], None),
            ("time_embedding_act_fn", [None], None),
            ("timestep_post_act", [None], None),
            ("time_cond_proj_dim", [None], None),
            ("resnet_time_scale_shift", ["default"], "default"),
            ("resnet_skip_time_act", [False], False),
            ("cross_attention_norm", [None], None),
            ("dual_cross_attention", [False], False),
            ("only_cross_attention", [False], False),
            ("mid_block_only_cross_attention", [None, False], None),
            ("mid_block_type", ["UNetMidBlock2DCrossAttn"], "UNetMidBlock2DCrossAttn"),
            ("attention_type", ["default"], "default"),
            ("reverse_transformer_layers_per_block", [None], None),
            ("transformer_layers_per_block", [1, [1, 1, 1, 1], [1, 1, 1], [1, 1], [1]], 1),
            ("use_linear_projection", [True, False], False),
            ("upcast_attention", [True, False], False),
            ("center_input_sample", [True, False], False),
            ("flip_sin_to_cos", [True, False], True),
    ]:
        _require(cfg, key, allowed, where, default)
    if "transformer_layers_per_block" in cfg and isinstance(cfg["transformer_layers_per_block"], list):
        pass  # all ones: checked above
    down = cfg.get("down_block_types", list(("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)))
    up = cfg.get("up_block_types", list(("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3))
    if not isinstance(down, list) or not down:
        raise ConfigError(f"{where}: 'down_block_types' = {json_repr(down)} must be a list")
    if not isinstance(up, list) or len(up) != len(down):
        raise ConfigError(f"{where}: 'up_block_types' = {json_repr(up)} must be a list as long as "
                          f"'down_block_types'")
    for key, types, allowed in (("down_block_types", down, UNET_DOWN_TYPES),
                                ("up_block_types", up, UNET_UP_TYPES)):
        for t in types:
            if t not in allowed:
                raise ConfigError(f"{where}: '{key}' holds {json_repr(t)}, which is not supported "
                                  f"(supported: {', '.join(allowed)})")
    n = len(down)
    boc = _int_list(cfg, "block_out_channels", where, [320, 640, 1280, 1280])
    if len(boc) != n:
        raise ConfigError(f"{where}: 'block_out_channels' = {boc} has {len(boc)} entries; "
                          f"'down_block_types' has {n}")
    layers = _per_level(cfg.get("layers_per_block", 2), n, "layers_per_block", where)
    for v in layers:
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: 'layers_per_block' = {json_repr(cfg.get('layers_per_block'))} "
                              f"must be a positive integer (or a list of them)")
    # SD 1.x meaning: without num_attention_heads, attention_head_dim is the number of heads.
    heads_src = "num_attention_heads" if cfg.get("num_attention_heads") is not None else "attention_head_dim"
    heads = _per_level(cfg.get(heads_src, 8), n, heads_src, where)
    for h, c in zip(heads, boc):
        if not isinstance(h, int) or h < 1 or c % h:
            raise ConfigError(f"{where}: '{heads_src}' = {json_repr(cfg.get(heads_src))}: {json_repr(h)} heads "
                              f"do not divide {c} channels")
    cross = _per_level(cfg.get("cross_attention_dim", 1280), n, "cross_attention_dim", where)
    if len(set(cross)) != 1 or not isinstance(cross[0], int) or cross[0] < 1:
        raise ConfigError(f"{where}: 'cross_attention_dim' = {json_repr(cfg.get('cross_attention_dim'))} "
                          f"must be one positive integer")
    for key in ("conv_in_kernel", "conv_out_kernel"):
        k = _int(cfg, key, where, 3)
        if k % 2 != 1:
            raise ConfigError(f"{where}: '{key}' = {k} must be odd")
    groups = _int(cfg, "norm_num_groups", where, 32)
    for c in boc:
        if c % groups:
            raise ConfigError(f"{where}: 'norm_num_groups' = {groups} does not divide "
                              f"'block_out_channels' entry {c}")
    if cfg.get("norm_num_groups", 32) is None:
        raise ConfigError(f"{where}: 'norm_num_groups' = null is not supported")
    in_ch = _int(cfg, "in_channels", where, 4)
    out_ch = _int(cfg, "out_channels", where, 4)
    freq_shift = cfg.get("freq_shift", 0)
    if not isinstance(freq_shift, (int, float)) or isinstance(freq_shift, bool):
        raise ConfigError(f"{where}: 'freq_shift' = {json_repr(freq_shift)} must be a number")
    return {
        "in_channels": in_ch,
        "out_channels": out_ch,
        "down_block_types": list(down),
        "up_block_types": list(up),
        "block_out_channels": boc,
        "layers_per_block": layers,
        "heads": heads,
        "cross_attention_dim": cross[0],
        "use_linear_projection": bool(cfg.get("use_linear_projection", False)),
        "upcast_attention": bool(cfg.get("upcast_attention", False)),
        "norm_num_groups": groups,
        "norm_eps": float(cfg.get("norm_eps", 1e-5)),
        "flip_sin_to_cos": bool(cfg.get("flip_sin_to_cos", True)),
        "freq_shift": float(freq_shift),
        "downsample_padding": _int(cfg, "downsample_padding", where, 1, minimum=0),
        "mid_block_scale_factor": float(cfg.get("mid_block_scale_factor", 1.0)),
        "resnet_out_scale_factor": float(cfg.get("resnet_out_scale_factor", 1.0)),
        "conv_in_kernel": cfg.get("conv_in_kernel", 3),
        "conv_out_kernel": cfg.get("conv_out_kernel", 3),
        "center_input_sample": bool(cfg.get("center_input_sample", False)),
        "sample_size": _int(cfg, "sample_size", where, 64),
    }


def vae_arch(cfg: Dict[str, Any], where: str = "vae/config.json") -> Dict[str, Any]:
    """Validates a diffusers AutoencoderKL config; returns the normalised architecture."""
    _require(cfg, "_class_name", ["AutoencoderKL"], where, "AutoencoderKL")
    for key, allowed, default in [
            ("act_fn", ["silu"], "silu"),
            ("latents_mean", [None], None),
            ("latents_std", [None], None),
            ("shift_factor", [None, 0, 0.0], None),
            ("mid_block_add_attention", [True, False], True),
            ("use_quant_conv", [True, False], True),
            ("use_post_quant_conv", [True, False], True),
            ("in_channels", [3], 3),
            ("out_channels", [3], 3),
    ]:
        _require(cfg, key, allowed, where, default)
    boc = _int_list(cfg, "block_out_channels", where, [64])
    n = len(boc)
    down = cfg.get("down_block_types", ["DownEncoderBlock2D"] * n)
    up = cfg.get("up_block_types", ["UpDecoderBlock2D"] * n)
    for key, types, allowed in (("down_block_types", down, "DownEncoderBlock2D"),
                                ("up_block_types", up, "UpDecoderBlock2D")):
        if not isinstance(types, list) or len(types) != n:
            raise ConfigError(f"{where}: '{key}' = {json_repr(types)} must list {n} block types "
                              f"(one per 'block_out_channels' entry)")
        for t in types:
            if t != allowed:
                raise ConfigError(f"{where}: '{key}' holds {json_repr(t)}, which is not supported "
                                  f"(supported: {allowed})")
    groups = _int(cfg, "norm_num_groups", where, 32)
    for c in boc:
        if c % groups:
            raise ConfigError(f"{where}: 'norm_num_groups' = {groups} does not divide "
                              f"'block_out_channels' entry {c}")
    sf = cfg.get("scaling_factor", 0.18215)
    if not isinstance(sf, (int, float)) or isinstance(sf, bool) or sf <= 0:
        raise ConfigError(f"{where}: 'scaling_factor' = {json_repr(sf)} must be a positive number")
    return {
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": boc,
        "layers_per_block": _int(cfg, "layers_per_block", where, 1),
        "latent_channels": _int(cfg, "latent_channels", where, 4),
        "norm_num_groups": groups,
        "mid_block_add_attention": bool(cfg.get("mid_block_add_attention", True)),
        "use_quant_conv": bool(cfg.get("use_quant_conv", True)),
        "use_post_quant_conv": bool(cfg.get("use_post_quant_conv", True)),
        "scaling_factor": float(sf),
        "sample_size": cfg.get("sample_size", 512),
    }


def text_arch(cfg: Dict[str, Any], where: str = "text_encoder/config.json") -> Dict[str, Any]:
    """Validates a transformers CLIPTextModel config; returns the normalised architecture."""
    archs = cfg.get("architectures") or ["CLIPTextModel"]
    if archs != ["CLIPTextModel"]:
        raise ConfigError(f"{where}: 'architectures' = {json_repr(archs)} is not supported "
                          f"(supported: [\"CLIPTextModel\"])")
    _require(cfg, "model_type", ["clip_text_model"], where, "clip_text_model")
    act = _require(cfg, "hidden_act", ["quick_gelu", "gelu"], where, "quick_gelu")
    d = _int(cfg, "hidden_size", where, 512)
    h = _int(cfg, "num_attention_heads", where, 8)
    if d % h:
        raise ConfigError(f"{where}: 'num_attention_heads' = {h} does not divide 'hidden_size' = {d}")
    return {
        "vocab_size": _int(cfg, "vocab_size", where, 49408),
        "hidden_size": d,
        "intermediate_size": _int(cfg, "intermediate_size", where, 2048),
        "num_hidden_layers": _int(cfg, "num_hidden_layers", where, 12),
        "num_attention_heads": h,
        "max_position_embeddings": _int(cfg, "max_position_embeddings", where, 77),
        "hidden_act": act,
        "layer_norm_eps": float(cfg.get("layer_norm_eps", 1e-5)),
    }


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------

def _attention_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float,
                        upcast: bool, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Multi-head scaled dot-product attention on [B, N, H*D] inputs, by hand (torch 1.13 has no
    F.scaled_dot_product_attention). Scores and softmax in float32 when upcast (or already float32)."""
    b, n, inner = q.shape
    m = k.shape[1]
    d = inner // heads
    q = q.reshape(b, n, heads, d).permute(0, 2, 1, 3)
    k = k.reshape(b, m, heads, d).permute(0, 2, 3, 1)
    v = v.reshape(b, m, heads, d).permute(0, 2, 1, 3)
    if upcast:
        scores = torch.matmul(q.float() * scale, k.float())
    else:
        scores = torch.matmul(q * scale, k)
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    out = torch.matmul(probs, v)
    return out.permute(0, 2, 1, 3).reshape(b, n, inner)


def _attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float,
                    upcast: bool, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The same through F.scaled_dot_product_attention (torch >= 2.0), whose fused kernels keep
    the scores in float32 on their own (diffusers' AttnProcessor2_0 ignores upcast_attention the
    same way). Its scale is 1/sqrt(D), as every caller's here; any other takes the explicit path
    (torch 2.0's has no scale argument)."""
    b, n, inner = q.shape
    m = k.shape[1]
    d = inner // heads
    if abs(scale * math.sqrt(d) - 1.0) > 1e-6:
        return _attention_explicit(q, k, v, heads, scale, upcast, mask)
    q = q.reshape(b, n, heads, d).permute(0, 2, 1, 3)
    k = k.reshape(b, m, heads, d).permute(0, 2, 1, 3)
    v = v.reshape(b, m, heads, d).permute(0, 2, 1, 3)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.permute(0, 2, 1, 3).reshape(b, n, inner)


# Chosen once, by the exporting torch: TorchScript compiles only the function a module calls, so
# torch 1.13 never sees the F.scaled_dot_product_attention call.
attention = _attention_sdpa if hasattr(F, "scaled_dot_product_attention") else _attention_explicit


# --------------------------------------------------------------------------------------------
# CLIP text transformer (transformers' CLIPTextModel, output last_hidden_state)
# --------------------------------------------------------------------------------------------

class CLIPEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, dim: int, max_positions: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_positions, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        return self.token_embedding(ids) + self.position_embedding(pos)


class CLIPAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, self.scale,
                        False, mask)
        return self.out_proj(out)


class CLIPMLP(nn.Module):
    def __init__(self, dim: int, inner: int, act: str):
        super().__init__()
        self.quick = act == "quick_gelu"
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.quick:
            x = x * torch.sigmoid(1.702 * x)
        else:
            x = F.gelu(x)
        return self.fc2(x)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int, act: str, eps: float):
        super().__init__()
        self.self_attn = CLIPAttention(dim, heads)
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = CLIPMLP(dim, inner, act)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, a: Dict[str, Any]):
        super().__init__()
        self.layers = nn.ModuleList([
            CLIPEncoderLayer(a["hidden_size"], a["num_attention_heads"], a["intermediate_size"],
                             a["hidden_act"], a["layer_norm_eps"])
            for _ in range(a["num_hidden_layers"])])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class CLIPTextTransformer(nn.Module):
    def __init__(self, a: Dict[str, Any]):
        super().__init__()
        self.embeddings = CLIPEmbeddings(a["vocab_size"], a["hidden_size"], a["max_position_embeddings"])
        self.encoder = CLIPEncoder(a)
        self.final_layer_norm = nn.LayerNorm(a["hidden_size"], eps=a["layer_norm_eps"])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        n = ids.shape[1]
        # Causal mask: token i sees tokens 0..i (as CLIP was trained).
        mask = torch.full((n, n), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        x = self.encoder(x, mask)
        return self.final_layer_norm(x)


class CLIPTextModel(nn.Module):
    """ids int64 [B, L] -> last_hidden_state [B, L, D]. Keys: text_model.*"""

    def __init__(self, a: Dict[str, Any]):
        super().__init__()
        self.text_model = CLIPTextTransformer(a)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_model(ids)


# --------------------------------------------------------------------------------------------
# ResNet, up/down sampling (shared by the UNet and the autoencoder)
# --------------------------------------------------------------------------------------------

class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv twice, the timestep embedding added in between when temb_channels > 0;
    1x1 conv shortcut when the channel count changes; (x + h) / output_scale_factor."""

    def __init__(self, cin: int, cout: int, temb_channels: int, groups: int, eps: float,
                 output_scale_factor: float = 1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.time_emb_proj = nn.Linear(temb_channels, cout) if temb_channels > 0 else nn.Identity()
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1, 1, 0) if cin != cout else nn.Identity()
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        out = self.conv_shortcut(x) + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample2D(nn.Module):
    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.pad = padding == 0
        self.conv = nn.Conv2d(channels, channels, 3, 2, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, [0, 1, 0, 1])
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour upsampling to `size` (twice the input unless the UNet forwards the size
    of the matching skip, as diffusers does for sizes that are not multiples), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, size: List[int]) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


# --------------------------------------------------------------------------------------------
# UNet attention: Transformer2DModel with BasicTransformerBlocks
# --------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """diffusers' Attention as the UNet uses it: bias-free q/k/v, to_out = [Linear, Dropout]."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int, upcast: bool):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.upcast = upcast
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        ctx = x if context is None else context
        out = attention(self.to_q(x), self.to_k(ctx), self.to_v(ctx), self.heads, self.scale,
                        self.upcast, None)
        for m in self.to_out:
            out = m(out)
        return out


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, upcast: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, dim, heads, dim_head, upcast)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.attn2 = Attention(dim, context_dim, heads, dim_head, upcast)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x), None) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    def __init__(self, channels: int, heads: int, context_dim: int, groups: int,
                 linear_projection: bool, upcast: bool):
        super().__init__()
        dim_head = channels // heads
        inner = heads * dim_head
        self.linear = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        if linear_projection:
            self.proj_in = nn.Linear(channels, inner)
            self.proj_out = nn.Linear(inner, channels)
        else:
            self.proj_in = nn.Conv2d(channels, inner, 1, 1, 0)
            self.proj_out = nn.Conv2d(inner, channels, 1, 1, 0)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim, upcast)])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        residual = x
        x = self.norm(x)
        if self.linear:
            x = self.proj_in(x.permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            x = self.proj_in(x)
            x = x.permute(0, 2, 3, 1).reshape(b, h * w, x.shape[1])
        for blk in self.transformer_blocks:
            x = blk(x, context)
        inner = x.shape[2]
        if self.linear:
            x = self.proj_out(x)
            x = x.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        else:
            x = x.reshape(b, h, w, inner).permute(0, 3, 1, 2).contiguous()
            x = self.proj_out(x)
        return x + residual


class NoAttention(nn.Module):
    """Placeholder where a block has no attention (keeps ModuleLists scriptable and key-free)."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return x


# --------------------------------------------------------------------------------------------
# UNet blocks (one forward signature per direction, so the block lists script)
# --------------------------------------------------------------------------------------------

class CrossAttnDownBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, layers: int, a: Dict[str, Any],
                 heads: int, add_downsample: bool, cross_attention: bool = True):
        super().__init__()
        g, eps = a["norm_num_groups"], a["norm_eps"]
        self.resnets = nn.ModuleList([
            ResnetBlock2D(cin if i == 0 else cout, cout, temb, g, eps, a["resnet_out_scale_factor"])
            for i in range(layers)])
        if cross_attention:
            self.attentions = nn.ModuleList([
                Transformer2DModel(cout, heads, a["cross_attention_dim"], g,
                                   a["use_linear_projection"], a["upcast_attention"])
                for _ in range(layers)])
        else:
            self.attentions = nn.ModuleList([NoAttention() for _ in range(layers)])
        self.downsamplers = nn.ModuleList(
            [Downsample2D(cout, a["downsample_padding"])] if add_downsample else [])

    def forward(self, x: torch.Tensor, temb: torch.Tensor,
                context: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        outs: List[torch.Tensor] = []
        for resnet, attn in zip(self.resnets, self.attentions):
            x = resnet(x, temb)
            x = attn(x, context)
            outs.append(x)
        for down in self.downsamplers:
            x = down(x)
            outs.append(x)
        return x, outs


class DownBlock2D(CrossAttnDownBlock2D):
    """The same block without attention (its `attentions` list holds key-free placeholders;
    diffusers' DownBlock2D has no such attribute, and neither has this state dict)."""

    def __init__(self, cin: int, cout: int, temb: int, layers: int, a: Dict[str, Any],
                 heads: int, add_downsample: bool):
        super().__init__(cin, cout, temb, layers, a, heads, add_downsample, cross_attention=False)


class CrossAttnUpBlock2D(nn.Module):
    def __init__(self, cin: int, prev: int, cout: int, temb: int, layers: int, a: Dict[str, Any],
                 heads: int, add_upsample: bool, cross_attention: bool = True):
        super().__init__()
        g, eps = a["norm_num_groups"], a["norm_eps"]
        resnets = []
        for i in range(layers):
            skip = cin if i == layers - 1 else cout
            rin = prev if i == 0 else cout
            resnets.append(ResnetBlock2D(rin + skip, cout, temb, g, eps, a["resnet_out_scale_factor"]))
        self.resnets = nn.ModuleList(resnets)
        if cross_attention:
            self.attentions = nn.ModuleList([
                Transformer2DModel(cout, heads, a["cross_attention_dim"], g,
                                   a["use_linear_projection"], a["upcast_attention"])
                for _ in range(layers)])
        else:
            self.attentions = nn.ModuleList([NoAttention() for _ in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)] if add_upsample else [])
        self.num_skips = layers

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor], temb: torch.Tensor,
                context: torch.Tensor, upsample_size: List[int]) -> torch.Tensor:
        i = len(skips) - 1
        for resnet, attn in zip(self.resnets, self.attentions):
            x = torch.cat([x, skips[i]], dim=1)
            i -= 1
            x = resnet(x, temb)
            x = attn(x, context)
        for up in self.upsamplers:
            x = up(x, upsample_size)
        return x


class UpBlock2D(CrossAttnUpBlock2D):
    def __init__(self, cin: int, prev: int, cout: int, temb: int, layers: int, a: Dict[str, Any],
                 heads: int, add_upsample: bool):
        super().__init__(cin, prev, cout, temb, layers, a, heads, add_upsample, cross_attention=False)


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, channels: int, temb: int, a: Dict[str, Any], heads: int):
        super().__init__()
        g, eps, s = a["norm_num_groups"], a["norm_eps"], a["mid_block_scale_factor"]
        self.attentions = nn.ModuleList([
            Transformer2DModel(channels, heads, a["cross_attention_dim"], g,
                               a["use_linear_projection"], a["upcast_attention"])])
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, g, eps, s)
                                      for _ in range(2)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        first = True
        for resnet in self.resnets:
            if not first:
                for attn in self.attentions:
                    x = attn(x, context)
            x = resnet(x, temb)
            first = False
        return x


class Timesteps(nn.Module):
    """Sinusoidal timestep embedding (diffusers' get_timestep_embedding) of FLOAT timesteps."""

    def __init__(self, channels: int, flip_sin_to_cos: bool, freq_shift: float):
        super().__init__()
        self.channels = channels
        self.half = channels // 2
        self.flip = flip_sin_to_cos
        self.neg_log_period = -math.log(10000.0)
        self.denominator = float(self.half - freq_shift)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # The same operations in the same order as diffusers, so that float32 rounding agrees
        # (at t ~ 1000 one ulp in a frequency moves the sine by ~1e-4).
        exponent = self.neg_log_period * torch.arange(0, self.half, dtype=torch.float32, device=t.device)
        exponent = exponent / self.denominator
        emb = t[:, None].float() * torch.exp(exponent)[None, :]
        if self.flip:
            emb = torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)
        else:
            emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        if self.channels % 2 == 1:
            emb = F.pad(emb, [0, 1, 0, 0])
        return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class UNet2DConditionModel(nn.Module):
    """(sample [B, C, h, w], timesteps float [B] (or [1]), context [B, L, D]) -> [B, C_out, h, w]."""

    def __init__(self, a: Dict[str, Any]):
        super().__init__()
        boc = a["block_out_channels"]
        n = len(boc)
        temb = boc[0] * 4
        self.center_input_sample = a["center_input_sample"]
        self.conv_in = nn.Conv2d(a["in_channels"], boc[0], a["conv_in_kernel"], 1,
                                 (a["conv_in_kernel"] - 1) // 2)
        self.time_proj = Timesteps(boc[0], a["flip_sin_to_cos"], a["freq_shift"])
        self.time_embedding = TimestepEmbedding(boc[0], temb)
        heads, layers = a["heads"], a["layers_per_block"]
        down = []
        cout = boc[0]
        for i, t in enumerate(a["down_block_types"]):
            cin, cout = cout, boc[i]
            cls = CrossAttnDownBlock2D if t == "CrossAttnDownBlock2D" else DownBlock2D
            down.append(cls(cin, cout, temb, layers[i], a, heads[i], i < n - 1))
        self.down_blocks = nn.ModuleList(down)
        self.mid_block = UNetMidBlock2DCrossAttn(boc[-1], temb, a, heads[-1])
        rboc, rheads, rlayers = boc[::-1], heads[::-1], layers[::-1]
        up = []
        cout = rboc[0]
        for i, t in enumerate(a["up_block_types"]):
            prev, cout = cout, rboc[i]
            cin = rboc[min(i + 1, n - 1)]
            cls = CrossAttnUpBlock2D if t == "CrossAttnUpBlock2D" else UpBlock2D
            up.append(cls(cin, prev, cout, temb, rlayers[i] + 1, a, rheads[i], i < n - 1))
        self.up_blocks = nn.ModuleList(up)
        self.conv_norm_out = nn.GroupNorm(a["norm_num_groups"], boc[0], eps=a["norm_eps"])
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(boc[0], a["out_channels"], a["conv_out_kernel"], 1,
                                  (a["conv_out_kernel"] - 1) // 2)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        if self.center_input_sample:
            sample = 2 * sample - 1.0
        t = timesteps.reshape(-1).expand(sample.shape[0])
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        x = self.conv_in(sample)
        skips: List[torch.Tensor] = [x]
        for block in self.down_blocks:
            x, outs = block(x, emb, encoder_hidden_states)
            skips.extend(outs)
        x = self.mid_block(x, emb, encoder_hidden_states)
        for block in self.up_blocks:
            n = block.num_skips
            mine = skips[len(skips) - n:]
            skips = skips[:len(skips) - n]
            # Upsample to the size of the next skip (diffusers forwards it when a size is not a
            # multiple of 2^downsamplers; otherwise it is exactly twice the input).
            if len(skips) > 0:
                size = [skips[-1].shape[2], skips[-1].shape[3]]
            else:
                size = [x.shape[2] * 2, x.shape[3] * 2]
            x = block(x, mine, emb, encoder_hidden_states, size)
        x = self.conv_act(self.conv_norm_out(x))
        return self.conv_out(x)


# --------------------------------------------------------------------------------------------
# KL autoencoder
# --------------------------------------------------------------------------------------------

class VAEAttention(nn.Module):
    """The autoencoder's single-head spatial self-attention (diffusers' Attention with group_norm,
    biases and a residual connection)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.scale = channels ** -0.5
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)
        out = attention(self.to_q(y), self.to_k(y), self.to_v(y), 1, self.scale, True, None)
        for m in self.to_out:
            out = m(out)
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class UNetMidBlock2D(nn.Module):
    def __init__(self, channels: int, groups: int, add_attention: bool):
        super().__init__()
        self.attentions = nn.ModuleList(
            [VAEAttention(channels, groups) if add_attention else NoAttention()])
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, 0, groups, 1e-6)
                                      for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = True
        for resnet in self.resnets:
            if not first:
                for attn in self.attentions:
                    x = attn(x, x)
            x = resnet(x, None)
            first = False
        return x


class DownEncoderBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, add_downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, 0, groups, 1e-6)
                                      for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout, 0)] if add_downsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, None)
        for down in self.downsamplers:
            x = down(x)
        return x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, add_upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, 0, groups, 1e-6)
                                      for i in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)] if add_upsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, None)
        for up in self.upsamplers:
            x = up(x, [x.shape[2] * 2, x.shape[3] * 2])
        return x


class Encoder(nn.Module):
    def __init__(self, a: Dict[str, Any]):
        super().__init__()
        boc, g = a["block_out_channels"], a["norm_num_groups"]
        self.conv_in = nn.Conv2d(a["in_channels"], boc[0], 3, 1, 1)
        blocks = []
        cout = boc[0]
        for i in range(len(boc)):
            cin, cout = cout, boc[i]
            blocks.append(DownEncoderBlock2D(cin, cout, a["layers_per_block"], g, i < len(boc) - 1))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = UNetMidBlock2D(boc[-1], g, a["mid_block_add_attention"])
        self.conv_norm_out = nn.GroupNorm(g, boc[-1], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(boc[-1], 2 * a["latent_channels"], 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, a: Dict[str, Any]):
        super().__init__()
        boc, g = a["block_out_channels"], a["norm_num_groups"]
        rboc = boc[::-1]
        self.conv_in = nn.Conv2d(a["latent_channels"], boc[-1], 3, 1, 1)
        self.mid_block = UNetMidBlock2D(boc[-1], g, a["mid_block_add_attention"])
        blocks = []
        cout = rboc[0]
        for i in range(len(boc)):
            prev, cout = cout, rboc[i]
            blocks.append(UpDecoderBlock2D(prev, cout, a["layers_per_block"] + 1, g, i < len(boc) - 1))
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(g, boc[0], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(boc[0], a["out_channels"], 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    """Keys encoder.*, decoder.*, quant_conv.*, post_quant_conv.* (diffusers' AutoencoderKL)."""

    def __init__(self, a: Dict[str, Any]):
        super().__init__()
        z = a["latent_channels"]
        self.latent_channels = z
        self.encoder = Encoder(a)
        self.decoder = Decoder(a)
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1) if a["use_quant_conv"] else nn.Identity()
        self.post_quant_conv = nn.Conv2d(z, z, 1) if a["use_post_quant_conv"] else nn.Identity()


# --------------------------------------------------------------------------------------------
# Export wrappers (the bundle's conventions, docs/MODEL_BUNDLE.md)
# --------------------------------------------------------------------------------------------

class VAEDecoderExport(nn.Module):
    """latents already divided by scaling_factor [B, C, h, w] -> image [B, 3, 8h, 8w] in [-1, 1]."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


class VAEEncoderExport(nn.Module):
    """image [-1, 1] -> the mean of the latent distribution, unscaled."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv
        self.latent_channels = vae.latent_channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(image))[:, : self.latent_channels]
