"""skinsynth.pipeline: the tiny offline pipeline has Stable Diffusion's latent geometry."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_tiny_pipeline_downsamples_8x_like_stable_diffusion(tiny_pipeline_dir):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 4
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64  # its default image size
    with torch.no_grad():
        latents = pipe.vae.encode(torch.zeros(1, 3, 512, 512)).latent_dist.mean
    assert latents.shape == (1, 4, 64, 64)  # SD 1.5's latents at 512 px, not 256x256
