"""Tortoise's waveform stage: the diffusion decoder (AR latents -> 100-bin mel), its sampler, the UnivNet vocoder
(mel -> 24 kHz audio), the CVVP speaker-consistency scorer and the api_fast HiFiGAN decoder (AR latents -> audio).

Axis legend of this package: B batch, C channels, L mel frames (24 kHz, hop 256), m AR latent frames (one per
speech code), K sampler steps, N samples (audio), k kernel taps.
"""
