"""Measure the diffusers backend on whatever accelerator is here, with SDXL-sized pipelines of random weights.

Nothing is downloaded: the pipelines are built from the real SDXL (UNet, VAE, both CLIP text encoders) and
Stable Diffusion 1.5 InstructPix2Pix configs written below, at `--scale` of their width (1.0: the real sizes), saved
with `save_pretrained` and loaded back through a registry file, as a hub model would load. `--tiny` builds the same
architectures a few channels wide, so the whole script runs on a CPU in well under a minute (the test suite runs it).

It measures, and writes to one JSON file (and prints):
  experts     per expert: cold load (a `from_pipe` derivation for experts sharing weights), first and warm call
              latency, peak accelerator memory (`torch.cuda.max_memory_allocated`; null without CUDA)
  residency   the residency manager under a byte cap: loads, derivations, evictions, resident bytes after each call
  cache       the output cache: an uncached and a cached call of the same arguments, the speed-up
  sharing     `from_pipe`: extra memory of img2img derived from the resident SDXL vs loaded on its own
  offload     none / model / sequential: load and call time, peak memory (on a CPU: the recorded reason for the skip)
  episode     one ImagePoserEnv episode with these experts (default shapes critic): per step expert, seconds, error

Usage: tools/gpu_check.sh [--tiny] [--scale 0.5] [--steps 4] [--size 512] OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

from image_poser.backends import diffusers as lib  # noqa: E402
from image_poser.experts import call_expert, load_registry  # noqa: E402

# ---------------------------------------------------------------- the real configs (stabilityai/stable-diffusion-xl-base-1.0)

SDXL_UNET = dict(
    act_fn="silu",
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    attention_head_dim=(5, 10, 20),
    block_out_channels=(320, 640, 1280),
    center_input_sample=False,
    cross_attention_dim=2048,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    projection_class_embeddings_input_dim=2816,
    sample_size=128,
    transformer_layers_per_block=(1, 2, 10),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    use_linear_projection=True,
)
SDXL_VAE = dict(
    act_fn="silu",
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)
CLIP_L = dict(  # text_encoder (CLIP ViT-L/14's text tower)
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    vocab_size=49408,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
CLIP_G = dict(  # text_encoder_2 (OpenCLIP ViT-bigG/14's text tower, with projection)
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    vocab_size=49408,
    hidden_act="gelu",
    projection_dim=1280,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
SDXL_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
)
# timbrooks/instruct-pix2pix: Stable Diffusion 1.5's UNet with 8 input channels (noise + the input image's latents)
SD15_UNET = dict(
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    in_channels=8,
    out_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=64,
)


# ---------------------------------------------------------------- scaling the configs


def _width(c: int, scale: float, unit: int, tiny_value: int | None, tiny: bool) -> int:
    if tiny:
        return tiny_value
    return max(unit, int(round(c * scale / unit)) * unit)


def scaled(scale: float, tiny: bool) -> dict:
    "The configs at `scale` of their width and depth (`tiny`: a few channels, same architectures)."
    te1 = dict(CLIP_L) | (
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32, vocab_size=1000)
        if tiny
        else {}
    )
    te2 = dict(CLIP_G) | (
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32, vocab_size=1000)
        if tiny
        else {}
    )
    if not tiny and scale != 1.0:
        for te in (te1, te2):
            te["hidden_size"] = _width(te["hidden_size"], scale, 64, None, False)
            te["num_attention_heads"] = te["hidden_size"] // 64
            te["intermediate_size"] = 4 * te["hidden_size"]
            te["projection_dim"] = te["hidden_size"]
            te["num_hidden_layers"] = max(1, round(te["num_hidden_layers"] * scale))
    unet = dict(SDXL_UNET)
    blocks = [_width(c, scale, 64, t, tiny) for c, t in zip(SDXL_UNET["block_out_channels"], (32, 64, 64))]
    unet |= dict(
        block_out_channels=tuple(blocks),
        attention_head_dim=tuple(max(1, c // 64) if not tiny else 2 for c in blocks),
        transformer_layers_per_block=tuple(1 if tiny else max(1, round(n * scale)) for n in SDXL_UNET["transformer_layers_per_block"]),
        layers_per_block=1 if tiny else 2,
        cross_attention_dim=te1["hidden_size"] + te2["hidden_size"],
        addition_time_embed_dim=8 if tiny else 256,
        projection_class_embeddings_input_dim=(8 if tiny else 256) * 6 + te2["projection_dim"],
        sample_size=8 if tiny else 128,
    )
    vae = dict(SDXL_VAE) | dict(
        block_out_channels=tuple(_width(c, scale, 32, 32, tiny) for c in SDXL_VAE["block_out_channels"][: 2 if tiny else 4]),
        down_block_types=("DownEncoderBlock2D",) * (2 if tiny else 4),
        up_block_types=("UpDecoderBlock2D",) * (2 if tiny else 4),
        layers_per_block=1 if tiny else 2,
        sample_size=32 if tiny else 1024,
    )
    sd15 = dict(SD15_UNET)
    blocks15 = [_width(c, scale, 64, t, tiny) for c, t in zip(SD15_UNET["block_out_channels"], (32, 32, 64, 64))]
    sd15 |= dict(
        block_out_channels=tuple(blocks15),
        attention_head_dim=2 if tiny else 8,
        cross_attention_dim=te1["hidden_size"],
        layers_per_block=1 if tiny else 2,
        sample_size=8 if tiny else 64,
    )
    return {"unet": unet, "vae": vae, "te1": te1, "te2": te2, "sd15_unet": sd15}


# ---------------------------------------------------------------- building and saving the pipelines


WORDS = "a an the red blue green yellow circle square triangle star small large make remove add then background left right of".split()


def _tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2} | {w + "</w>": 3 + i for i, w in enumerate(WORDS)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_pipelines(root: Path, cfg: dict, device: str, dtype) -> dict:
    "Random-weight SDXL and InstructPix2Pix pipelines, built on `device` in `dtype` and saved under `root`; seconds taken."
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # initialise on the accelerator: SDXL's 2.6 B UNet parameters take minutes on a CPU
        sdxl = StableDiffusionXLPipeline(
            vae=AutoencoderKL(**cfg["vae"]),
            text_encoder=CLIPTextModel(CLIPTextConfig(**cfg["te1"])),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg["te2"])),
            tokenizer=_tokenizer(),
            tokenizer_2=_tokenizer(),
            unet=UNet2DConditionModel(**cfg["unet"]),
            scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        )
        ip2p = StableDiffusionInstructPix2PixPipeline(
            vae=AutoencoderKL(**(cfg["vae"] | {"scaling_factor": 0.18215, "force_upcast": False})),
            text_encoder=CLIPTextModel(CLIPTextConfig(**cfg["te1"])),
            tokenizer=_tokenizer(),
            unet=UNet2DConditionModel(**cfg["sd15_unet"]),
            scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    built = time.perf_counter() - t0
    params = {"sdxl": _params(sdxl), "ip2p": _params(ip2p)}
    t0 = time.perf_counter()
    for name, pipe in (("sdxl", sdxl), ("ip2p", ip2p)):
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
        pipe.save_pretrained(root / name)
    saved = time.perf_counter() - t0
    del sdxl, ip2p
    _free()
    return {"build_s": round(built, 3), "save_s": round(saved, 3), "params": params}


def _params(pipe) -> dict:
    return {k: sum(p.numel() for p in m.parameters()) for k, m in pipe.components.items() if isinstance(m, torch.nn.Module)}


def write_registry(root: Path, steps: int, size: int, dtype: str) -> Path:
    "The registry of the check: SDXL text-to-image, img2img and inpainting (one set of weights) and InstructPix2Pix."
    common = f'steps = {steps}\ndtype = "{dtype}"\ncache_dir = "{root / "cache"}"\ncache_max_bytes = 200_000_000\n'
    entries = [
        ("sdxl", "sdxl", "text2image", f"height = {size}\nwidth = {size}\nguidance_scale = 5.0\ncost = 3.0\n"),
        ("sdxl-img2img", "sdxl", "img2img", "strength = 0.5\ncost = 2.5\n"),
        ("sdxl-inpaint", "sdxl", "inpaint", 'strength = 0.9\nlocator = "image_poser.shapes.experts.edit_targets"\ncost = 3.0\n'),
        ("instruct-pix2pix", "ip2p", "instruct_pix2pix", "image_guidance_scale = 1.5\ncost = 1.5\n"),
    ]
    text = "".join(
        f'[[experts]]\nname = "{n}"\nclass = "diffusers"\nmodel = "{root / folder}"\npipeline = "{p}"\n{common}{extra}\n'
        for n, folder, p, extra in entries
    )
    path = root / "gpu_check.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- measuring


def _cuda() -> bool:
    return torch.cuda.is_available()


def _sync():
    if _cuda():
        torch.cuda.synchronize()


def _free():
    import gc

    gc.collect()
    if _cuda():
        torch.cuda.empty_cache()


def _reset_peak():
    if _cuda():
        torch.cuda.reset_peak_memory_stats()


def _peak() -> int | None:
    return int(torch.cuda.max_memory_allocated()) if _cuda() else None


def _allocated() -> int | None:
    return int(torch.cuda.memory_allocated()) if _cuda() else None


def timed(fn):
    _sync()
    t0 = time.perf_counter()
    out = fn()
    _sync()
    return out, round(time.perf_counter() - t0, 4)


def measure_experts(reg, base_image, repeats: int) -> list[dict]:
    "Cold load, first and warm call, peak memory of each expert (the shared ones derived from a resident SDXL)."
    rows = []
    for e in reg:
        lib.RESIDENCY.clear()
        _free()
        shared = e.name in ("sdxl-img2img", "sdxl-inpaint")
        if shared:
            reg[reg.index("sdxl")].load()  # the base is resident, as it is after the first call of an episode
        _reset_peak()
        loads, derived = lib.RESIDENCY.loads, lib.RESIDENCY.shared
        _, load_s = timed(e.load)
        img = None if e.kind == "t2i" else base_image
        first, first_s = timed(lambda: call_expert(e, "a red circle left of a blue square", img, seed=0))
        warm = [timed(lambda k=k: call_expert(e, "make the circle green", img, seed=100 + k))[1] for k in range(repeats)]
        rows.append(
            {
                "name": e.name,
                "pipeline": e.pipeline,
                "cold_load_s": load_s,
                "derived_with_from_pipe": lib.RESIDENCY.shared > derived and lib.RESIDENCY.loads == loads,
                "first_call_s": first_s,
                "warm_call_s": round(statistics.median(warm), 4),
                "ok": first.ok,
                "error": first.error,
                "peak_gpu_bytes": _peak(),
                "resident_bytes": lib.RESIDENCY.resident_bytes,
            }
        )
    lib.RESIDENCY.clear()
    return rows


def measure_residency(reg, base_image) -> dict:
    "The residency manager with a byte cap of 1.2 SDXL pipelines: what loads, what is derived, what is evicted."
    lib.RESIDENCY.clear()
    sdxl, ip2p, img2img = (reg[reg.index(n)] for n in ("sdxl", "instruct-pix2pix", "sdxl-img2img"))
    sdxl.load()
    cap = int(lib.RESIDENCY.resident_bytes * 1.2)
    lib.RESIDENCY.clear()
    old = (lib.RESIDENCY.max_loaded, lib.RESIDENCY.max_bytes)
    lib.RESIDENCY.max_loaded, lib.RESIDENCY.max_bytes = 8, cap
    before = lib.RESIDENCY.stats()
    trace = []
    try:
        for e in (sdxl, img2img, ip2p, sdxl, img2img):
            e.load()
            trace.append({"expert": e.name, "resident": len(lib.RESIDENCY.resident), "resident_bytes": lib.RESIDENCY.resident_bytes})
        after = lib.RESIDENCY.stats()
    finally:
        lib.RESIDENCY.max_loaded, lib.RESIDENCY.max_bytes = old
        lib.RESIDENCY.clear()
    return {
        "cap_bytes": cap,
        "trace": trace,
        "loads": after["loads"] - before["loads"],
        "derived": after["shared"] - before["shared"],
        "evictions": after["evictions"] - before["evictions"],
        "max_resident_bytes": max(t["resident_bytes"] for t in trace),
    }


def measure_cache(reg) -> dict:
    "The same call twice with the output cache: computed, then read from disk."
    e = reg[reg.index("sdxl")]
    lib.RESIDENCY.clear()
    e.load()
    _, computed = timed(lambda: e("a cache check: two green stars", seed=7))
    _, cached = timed(lambda: e("a cache check: two green stars", seed=7))
    lib.RESIDENCY.clear()
    return {"computed_s": computed, "cached_s": cached, "speedup": round(computed / max(cached, 1e-6), 1)}


def measure_sharing(reg) -> dict:
    "Extra memory for img2img: derived from the resident SDXL with from_pipe, then loaded on its own."
    from dataclasses import replace

    base, img2img = reg[reg.index("sdxl")], reg[reg.index("sdxl-img2img")]
    out = {}
    for label, expert in (("shared", img2img), ("separate", replace(img2img, name="img2img-separate", share_weights=False))):
        lib.RESIDENCY.clear()
        _free()
        lib.RESIDENCY.max_loaded = 4
        base.load()
        bytes0, alloc0 = lib.RESIDENCY.resident_bytes, _allocated()
        _, secs = timed(expert.load)
        alloc1 = _allocated()
        out[label] = {
            "load_s": secs,
            "extra_weight_bytes": lib.RESIDENCY.resident_bytes - bytes0,
            "extra_gpu_bytes": None if alloc0 is None else alloc1 - alloc0,
        }
    lib.RESIDENCY.clear()
    lib.RESIDENCY.max_loaded = int(os.environ.get("IMAGE_POSER_MAX_PIPELINES", 2))
    out["saved_weight_bytes"] = out["separate"]["extra_weight_bytes"] - out["shared"]["extra_weight_bytes"]
    return out


def measure_offload(reg) -> dict:
    "Load and call time and peak memory of SDXL with each offload mode."
    from dataclasses import replace

    base = reg[reg.index("sdxl")]
    out = {}
    for mode in ("none", "model", "sequential"):
        lib.RESIDENCY.clear()
        _free()
        _reset_peak()
        e = replace(base, name=f"sdxl-offload-{mode}", offload=mode, cache_dir=None)
        _, load_s = timed(e.load)
        r, call_s = timed(lambda: call_expert(e, "a red circle", seed=0))
        out[mode] = {"load_s": load_s, "call_s": call_s, "ok": r.ok, "error": r.error, "peak_gpu_bytes": _peak(), "notes": e.load_notes}
    lib.RESIDENCY.clear()
    return out


def run_episode(reg, size: int) -> dict:
    "One environment episode over the check's experts, with the default shapes critic."
    from image_poser.env import ImagePoserEnv

    lib.RESIDENCY.clear()
    env = ImagePoserEnv(registry=reg, horizon=6, image_size=size)
    env.reset(
        seed=0, options={"prompt": "a large red circle left of a small blue square on a white background, then make the circle green"}
    )
    t0 = time.perf_counter()
    for name in ("sdxl", "sdxl-img2img", "instruct-pix2pix", "sdxl-inpaint"):
        _, _, term, trunc, _ = env.step(reg.index(name))
        if term or trunc:
            break
    total = time.perf_counter() - t0
    steps = [
        {"expert": s.expert, "wall_time_s": round(s.wall_time_s, 4), "error": s.error, "reward": round(s.reward, 4)} for s in env.steps
    ]
    lib.RESIDENCY.clear()
    return {"steps": steps, "total_s": round(total, 3), "errors": sum(s["error"] is not None for s in steps)}


# ---------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="where to write the JSON report")
    ap.add_argument("--tiny", action="store_true", help="a few channels wide: runs on a CPU in well under a minute")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the real widths (and depths) of the models")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps per call (default 4; 2 with --tiny)")
    ap.add_argument("--size", type=int, default=None, help="picture side in pixels (default 512; 32 with --tiny)")
    ap.add_argument("--repeats", type=int, default=None, help="warm calls per expert, median reported (default 3; 1 with --tiny)")
    ap.add_argument("--workdir", default=None, help="where to save the pipelines (default: a temporary folder, removed)")
    a = ap.parse_args(argv)
    steps = a.steps or (2 if a.tiny else 4)
    size = a.size or (32 if a.tiny else 512)
    repeats = a.repeats or (1 if a.tiny else 3)
    device = lib.pick_device("auto")
    dtype_name = "float32" if device == "cpu" else "auto"
    dtype = lib.pick_dtype(dtype_name, device)
    root = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report = {
        "mode": "tiny" if a.tiny else f"scale {a.scale:g}",
        "device": device,
        "device_name": torch.cuda.get_device_name() if _cuda() else platform.processor() or platform.machine(),
        "dtype": str(dtype).removeprefix("torch."),
        "steps": steps,
        "size": size,
        "versions": {m: __import__(m).__version__ for m in ("torch", "diffusers", "transformers", "accelerate")},
    }
    try:
        report["build"] = build_pipelines(root, scaled(a.scale, a.tiny), device, dtype)
        reg = load_registry(write_registry(root, steps, size, dtype_name))
        base_image = call_expert(reg[reg.index("sdxl")], "a base picture", seed=1).image
        if base_image is None:
            raise RuntimeError("the SDXL expert could not make a base picture")
        report["experts"] = measure_experts(reg, base_image, repeats)
        report["residency"] = measure_residency(reg, base_image)
        report["cache"] = measure_cache(reg)
        report["sharing"] = measure_sharing(reg)
        report["offload"] = measure_offload(reg)
        report["episode"] = run_episode(reg, size)
    finally:
        if not a.workdir:
            shutil.rmtree(root, ignore_errors=True)
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report["total_s"] = round(time.perf_counter() - t_start, 2)
    text = json.dumps(report, indent=1, default=str)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
