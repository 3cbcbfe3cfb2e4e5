"""The training objectives: diffusers' text-to-image denoising loss, the rectified-flow loss of SD3 and Flux, and the autoencoder's reconstruction loss that
`--method scratch` trains first. Methods call them; the trainer only steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PipelineError


@dataclass
class Caches:
    """What a run computes once and reuses: the frozen text encoders' embeddings by caption (SDXL, SD3, Flux) and,
    with `--cache-latents`, the frozen VAE's latent distribution by (row, mirrored); both kept on the CPU."""

    prompts: dict = field(default_factory=dict)
    latents: dict | None = None


def image_latents(vae, batch: dict, generator, weight_dtype, cache: dict | None = None):
    """A sample of the VAE's latents of the batch's images, shifted and scaled as the denoiser sees them (no gradient:
    the VAE is frozen). With `cache`, each image's latent distribution is encoded once and kept: the sample drawn from
    it is the same draw from the same distribution."""
    import torch
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    pixels = batch["pixel_values"]
    with torch.no_grad():
        if cache is None:
            distribution = vae.encode(pixels.to(vae.device, weight_dtype)).latent_dist
        else:
            keys = batch["image_keys"]
            missing = [i for i, key in enumerate(keys) if key not in cache]
            if missing:
                encoded = vae.encode(pixels[missing].to(vae.device, weight_dtype)).latent_dist.parameters
                cache.update({keys[i]: parameters.cpu() for i, parameters in zip(missing, encoded)})
            distribution = DiagonalGaussianDistribution(torch.stack([cache[key] for key in keys]).to(vae.device))
        latents = distribution.sample(generator)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor


def diffusion_loss(vae, unet, text_encoder, noise_scheduler, batch: dict, generator, weight_dtype, snr_gamma: float = 0.0, latent_cache: dict | None = None):
    """diffusers' text-to-image objective for a Stable Diffusion UNet reading one CLIP encoder's hidden states."""
    latents = image_latents(vae, batch, generator, weight_dtype, latent_cache)

    def predict(noisy, timesteps):
        hidden = text_encoder(batch["input_ids"].to(vae.device), return_dict=False)[0]
        return unet(noisy, timesteps, hidden, return_dict=False)[0]

    return denoising_loss(latents, predict, noise_scheduler, generator, snr_gamma)


def denoising_loss(latents, predict, noise_scheduler, generator, snr_gamma: float = 0.0):
    """diffusers' diffusion objective: `predict(noisy_latents, timesteps)` estimates the noise (or the velocity)
    added at uniformly drawn timesteps; with `snr_gamma`, each image's error is weighted by min(SNR, gamma) / SNR
    (epsilon) or / (SNR + 1) (velocity), as diffusers' `--snr_gamma` does."""
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import compute_snr
    from diffusers.utils.torch_utils import randn_tensor

    device = latents.device
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise PipelineError(f"the base's scheduler predicts `{prediction_type}`; fine-tuning supports epsilon and v_prediction")
    prediction = predict(noisy, timesteps)
    if not snr_gamma:
        return F.mse_loss(prediction.float(), target.float())
    snr = compute_snr(noise_scheduler, timesteps).float()
    clamped = snr.clamp(max=snr_gamma)
    # At a zero-SNR timestep the epsilon weight's limit is 1 (min(SNR, gamma) / SNR with SNR -> 0).
    weights = clamped / (snr + 1) if prediction_type == "v_prediction" else torch.where(snr > 0, clamped / snr.clamp(min=1e-12), 1.0)
    errors = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=list(range(1, prediction.ndim)))
    return (errors * weights).mean()


def flow_matching_loss(latents, predict, noise_scheduler, generator, weighting_scheme: str = "none"):
    """The rectified-flow objective of SD3 and Flux, as diffusers' `train_dreambooth_lora_sd3.py` and
    `…_flux.py` compute it: a timestep drawn by `weighting_scheme` (`logit_normal`: mean 0, std 1; `none`: uniform),
    the straight line (1 - sigma) x latents + sigma x noise, and `predict(noisy_latents, timesteps)` regressed onto
    its velocity noise - latents, weighted by `compute_loss_weighting_for_sd3`."""
    from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
    from diffusers.utils.torch_utils import randn_tensor

    device, batch = latents.device, latents.shape[0]
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    u = compute_density_for_timestep_sampling(weighting_scheme, batch, logit_mean=0.0, logit_std=1.0, mode_scale=1.29, generator=generator)
    indices = (u * noise_scheduler.config.num_train_timesteps).long()
    timesteps = noise_scheduler.timesteps[indices].to(device)
    sigmas = noise_scheduler.sigmas[indices].to(device, latents.dtype).view(batch, *[1] * (latents.ndim - 1))
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    prediction = predict(noisy, timesteps)
    weighting = compute_loss_weighting_for_sd3(weighting_scheme, sigmas)
    errors = (weighting.float() * (prediction.float() - (noise - latents).float()) ** 2).reshape(batch, -1)
    return errors.mean(dim=1).mean()


def autoencoder_loss(vae, pixels, generator, kl_weight: float):
    """(loss, reconstruction): mean absolute error of the decoded sample, plus `kl_weight` x the KL to N(0, 1)."""
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    l1 = (reconstruction.float() - pixels.float()).abs().mean()
    kl = posterior.kl().mean() / pixels[0].numel()
    return l1 + kl_weight * kl, l1
