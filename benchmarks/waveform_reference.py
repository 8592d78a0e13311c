"""The reference side of the waveform benchmarks: the original Tortoise code (tortoise-tts 3.0.0, torch).

`prepare` draws the original models' weights (original state-dict keys) and the inputs into a folder as .npz;
`run_reference` times one case on them. bench_waveform.py runs each in its own process.

The original's `arch_util` imports torchaudio (only `TorchMelSpectrogram`, unused here, touches it) and its
`xtransformers` imports einops (the diffusion decoder's relative position bias calls one `rearrange`). Neither
is needed for what is timed: when they are not installed, stand-ins go into `sys.modules` (torchaudio's
attributes raise; einops' `rearrange` does axis permutations with unit axes only and refuses anything else).
"""

from __future__ import annotations

import os
import sys
import types

from waveform_common import (
    DIFFUSION_KWARGS,
    SAMPLER_RUNS,
    TIMESTEP,
    VOCODER_KWARGS,
    L,
    best,
    best_wall_and_cpu,
    load_npz,
    make_inputs,
    peak_gib,
)


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _shim_torchaudio() -> None:
    """A stand-in `torchaudio` for `tortoise.models.arch_util`, whose import needs the name only."""
    if "torchaudio" in sys.modules or _installed("torchaudio"):
        return
    module = types.ModuleType("torchaudio")

    def missing(name: str):
        raise AttributeError(f"torchaudio.{name}: this benchmark's stand-in torchaudio has no {name} (not installed)")

    module.__getattr__ = missing
    sys.modules["torchaudio"] = module


def _rearrange(tensor, pattern: str, **sizes):
    """einops.rearrange for patterns that only permute named axes and add or drop unit axes ('i j h -> () h i j')."""
    left, right = (side.split() for side in pattern.split("->"))
    unit = ("()", "1")
    if sizes or any(not (a.isidentifier() or a in unit) for a in left + right):
        raise NotImplementedError(f"the benchmark's stand-in einops cannot do {pattern!r} (install einops)")
    names = [a for a in left if a not in unit]
    if sorted(names) != sorted(a for a in right if a not in unit) or len(left) != tensor.ndim:
        raise ValueError(f"rearrange {pattern!r} does not fit a tensor of shape {tuple(tensor.shape)}")
    squeezed = tensor.reshape([n for a, n in zip(left, tensor.shape, strict=True) if a not in unit])
    moved = squeezed.permute([names.index(a) for a in right if a not in unit])
    return moved.reshape([1 if a in unit else moved.shape[[b for b in right if b not in unit].index(a)] for a in right])


def _shim_einops() -> None:
    if "einops" in sys.modules or _installed("einops"):
        return
    module = types.ModuleType("einops")
    try:  # torch's own einops-style rearrange parses every pattern the original uses (grouped axes included)
        from functorch.einops import rearrange
    except ImportError:
        rearrange = _rearrange
    module.rearrange = rearrange

    def repeat(*args, **kwargs):
        raise NotImplementedError("the benchmark's stand-in einops has no repeat (install einops)")

    module.repeat = repeat
    sys.modules["einops"] = module


def shim() -> None:
    _shim_torchaudio()
    _shim_einops()


def seeded_state(build, seed: int) -> dict:
    """The state dict (numpy) of `build()` under torch's default init, seeded; weight matrices the original
    zero-initialises (`zero_module`: the diffusion ResBlocks' last convs and the output conv) are drawn from
    N(0, 1/fan_in) instead, or the benchmark's activations would be degenerate. (Redrawing EVERY matrix that way
    makes UnivNet ill-conditioned: the original itself then differs between float32 and float64 by ~1.)"""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    module = build()
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim >= 2 and not p.any():
                p.copy_(torch.randn(p.shape) / int(np.prod(p.shape[1:])) ** 0.5)
    return {k: v.numpy() for k, v in module.state_dict().items()}


def prepare(size: str, folder: str) -> dict:
    """Draws the original models' weights and writes them (original keys) with the inputs."""
    import numpy as np

    shim()
    from tortoise.models.diffusion_decoder import DiffusionTts
    from tortoise.models.vocoder import UnivNetGenerator

    np.savez(f"{folder}/diffusion.npz", **seeded_state(lambda: DiffusionTts(**DIFFUSION_KWARGS[size]), seed=0))
    # The weight-norm form (weight_g / weight_v), as vocoder.pth's "model_g" holds it.
    np.savez(f"{folder}/vocoder.npz", **seeded_state(lambda: UnivNetGenerator(**VOCODER_KWARGS[size]), seed=1))
    np.savez(os.path.join(folder, "inputs.npz"), **make_inputs(size))
    return {}


def _diffusion(size: str, folder: str):
    import torch
    from tortoise.models.diffusion_decoder import DiffusionTts

    model = DiffusionTts(**DIFFUSION_KWARGS[size]).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in load_npz(f"{folder}/diffusion.npz").items()})
    return model


def run_reference(size: str, runs: int, folder: str, case: str, sampler_runs: int = 1) -> dict:
    import numpy as np
    import torch

    shim()
    inputs = {k: torch.from_numpy(v) for k, v in load_npz(os.path.join(folder, "inputs.npz")).items()}
    out: dict = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    with torch.no_grad():
        if case == "step":
            model = _diffusion(size, folder)
            aligned = model.timestep_independent(inputs["latents"], inputs["cond_latent"], L, False)
            t = torch.tensor([TIMESTEP])

            def step():  # what p_sample_loop does per step with cond_free: two calls of batch 1
                cond = model(inputs["x"], t, precomputed_aligned_embeddings=aligned)
                uncond = model(inputs["x"], t, precomputed_aligned_embeddings=aligned, conditioning_free=True)
                return cond, uncond

            cond, uncond = step()  # warm-up
            out["step_s"], out["step_cpu_s"] = best_wall_and_cpu(step, runs)
            k = 2.0  # the presets' cond_free_k (the ramp's value at the last step), as the JAX side
            eps = (1 + k) * cond[:, :100] - k * uncond[:, :100]
            np.savez(f"{folder}/out_step_reference.npz", eps=eps.numpy(), var=cond[:, 100:].numpy())
        elif case == "vocoder":
            from tortoise.models.vocoder import UnivNetGenerator

            model = UnivNetGenerator(**VOCODER_KWARGS[size])
            model.load_state_dict({k: torch.from_numpy(v) for k, v in load_npz(f"{folder}/vocoder.npz").items()})
            model.eval(inference=True)  # folds weight norm, as api.py loads it
            wav = model.inference(inputs["mel"], inputs["z"])
            out["vocoder_s"] = best(lambda: model.inference(inputs["mel"], inputs["z"]), runs)
            np.savez(f"{folder}/out_vocoder_reference.npz", wav=wav.numpy())
        else:  # sampler: api.py's do_spectrogram_diffusion loop (SpacedDiffusion.p_sample_loop), x_T given
            from tortoise.utils.diffusion import SpacedDiffusion, get_named_beta_schedule, space_timesteps

            model = _diffusion(size, folder)
            aligned = model.timestep_independent(inputs["latents"], inputs["cond_latent"], L, False)
            for name, (steps, cond_free) in SAMPLER_RUNS.items():
                # load_discrete_vocoder_diffuser's construction, with the preset's values (cond_free_k 2)
                diffuser = SpacedDiffusion(
                    use_timesteps=space_timesteps(4000, [steps]),
                    model_mean_type="epsilon",
                    model_var_type="learned_range",
                    loss_type="mse",
                    betas=get_named_beta_schedule("linear", 4000),
                    conditioning_free=cond_free,
                    conditioning_free_k=2.0,
                )
                kwargs = {"precomputed_aligned_embeddings": aligned}
                loop = lambda d=diffuser, kw=kwargs: d.p_sample_loop(  # noqa: E731
                    model, tuple(inputs["x"].shape), noise=inputs["x"], model_kwargs=kw, progress=False
                )
                loop()  # warm-up, as every case has one
                out[f"{name}_s"] = best(loop, sampler_runs)
    out["peak_gib"] = {case: peak_gib()}
    return out
