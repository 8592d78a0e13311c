"""Tortoise's waveform stage: the diffusion decoder (AR latents -> 100-bin mel), its sampler, the UnivNet vocoder
(mel -> 24 kHz audio), the CVVP speaker-consistency scorer and the api_fast HiFiGAN decoder (AR latents -> audio).

Axis letters: see the package legend in `clvp_jax/__init__.py` (channels-first: a mel [B, F, N], audio [B, 1, A], a conv
stack [B, W, T]; M AR latent frames, one per speech code; U sampler steps).
"""
