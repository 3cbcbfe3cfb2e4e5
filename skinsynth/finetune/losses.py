"""The training objectives: diffusers' text-to-image denoising loss, and the autoencoder's reconstruction loss that
`--method scratch` trains first. Methods call them; the trainer only steps."""

from __future__ import annotations

from ..errors import PipelineError


def diffusion_loss(vae, unet, text_encoder, noise_scheduler, batch: dict, generator, weight_dtype, snr_gamma: float = 0.0):
    """diffusers' text-to-image objective: predict the noise (or the velocity) added to the image's latents;
    with `snr_gamma`, each image's error is weighted by min(SNR, gamma) / SNR (epsilon) or / (SNR + 1) (velocity),
    as diffusers' `--snr_gamma` does."""
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import compute_snr
    from diffusers.utils.torch_utils import randn_tensor

    device = vae.device
    with torch.no_grad():
        latents = vae.encode(batch["pixel_values"].to(device, weight_dtype)).latent_dist.sample(generator)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = (latents - shift) * vae.config.scaling_factor
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    hidden = text_encoder(batch["input_ids"].to(device), return_dict=False)[0]
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise PipelineError(f"the base's scheduler predicts `{prediction_type}`; fine-tuning supports epsilon and v_prediction")
    prediction = unet(noisy, timesteps, hidden, return_dict=False)[0]
    if not snr_gamma:
        return F.mse_loss(prediction.float(), target.float())
    snr = compute_snr(noise_scheduler, timesteps).float()
    clamped = snr.clamp(max=snr_gamma)
    # At a zero-SNR timestep the epsilon weight's limit is 1 (min(SNR, gamma) / SNR with SNR -> 0).
    weights = clamped / (snr + 1) if prediction_type == "v_prediction" else torch.where(snr > 0, clamped / snr.clamp(min=1e-12), 1.0)
    errors = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=list(range(1, prediction.ndim)))
    return (errors * weights).mean()


def autoencoder_loss(vae, pixels, generator, kl_weight: float):
    """(loss, reconstruction): mean absolute error of the decoded sample, plus `kl_weight` x the KL to N(0, 1)."""
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    l1 = (reconstruction.float() - pixels.float()).abs().mean()
    kl = posterior.kl().mean() / pixels[0].numel()
    return l1 + kl_weight * kl, l1
