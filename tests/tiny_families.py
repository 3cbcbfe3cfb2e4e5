"""Tiny random-weight SDXL, Stable Diffusion 3 and Flux pipelines, built offline from configs the way diffusers tests
its own pipelines (its test configs, with the Hub ids replaced by tokenizers written here). Each saves in a few MB and
makes 64 px images in well under a second; its latent geometry is its family's (an 8x VAE; Flux packs 2x2 latents).
"""

from __future__ import annotations

import json
from pathlib import Path

from skinsynth.tiny import tiny_clip_tokenizer, tiny_t5_tokenizer


CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 32}


def _clip_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **CLIP)


def _t5_encoder(tokenizer, d_model: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def _vae(latent_channels: int, **flow_options):
    """Four blocks: 8x downsampling like every family's real VAE (64 px images, 8x8 latents)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels, sample_size=64, **flow_options,
    )


# SD3's and Flux's VAEs work without the quant convolutions and shift their latents.
FLOW_VAE = {"use_quant_conv": False, "use_post_quant_conv": False, "shift_factor": 0.0609, "scaling_factor": 1.5035}


def _save(pipe, out: Path):
    out = Path(out)
    pipe.save_pretrained(out, safe_serialization=True)
    return pipe


def tiny_sdxl(out: str | Path, seed: int = 0):
    """SDXL: a UNet with `text_time` size conditioning, `CLIPTextModel` + `CLIPTextModelWithProjection`."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(out / "tokenizer")
    tokenizer_2 = tiny_clip_tokenizer(out / "tokenizer_2")
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + CLIP["projection_dim"], cross_attention_dim=2 * CLIP["hidden_size"],
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(4), text_encoder=CLIPTextModel(_clip_config(tokenizer)), text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer_2)),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
    )
    return _save(pipe, out)


def tiny_sd3(out: str | Path, seed: int = 0):
    """Stable Diffusion 3: an `SD3Transformer2DModel` (patch 2, like SD3's) with two CLIP encoders and a T5."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(out / "tokenizer"), tiny_clip_tokenizer(out / "tokenizer_2")
    tokenizer_3 = tiny_t5_tokenizer(out / "tokenizer_3")
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=2 * CLIP["projection_dim"],
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(4, **FLOW_VAE),
        text_encoder=CLIPTextModelWithProjection(_clip_config(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer_2)), tokenizer_2=tokenizer_2,
        text_encoder_3=_t5_encoder(tokenizer_3, d_model=64), tokenizer_3=tokenizer_3,
    )
    return _save(pipe, out)


def tiny_flux(out: str | Path, seed: int = 0, guidance_embeds: bool = True):
    """Flux, dev-style (a distilled-guidance embedding) or schnell-style (`guidance_embeds=False`): a
    `FluxTransformer2DModel` over 2x2-packed latents of a one-channel VAE, a CLIP and a T5 encoder."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(out / "tokenizer"), tiny_t5_tokenizer(out / "tokenizer_2")
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * 1, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=CLIP["hidden_size"], axes_dims_rope=(4, 4, 8), guidance_embeds=guidance_embeds,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(1, **FLOW_VAE), text_encoder=CLIPTextModel(_clip_config(tokenizer)),
        tokenizer=tokenizer, text_encoder_2=_t5_encoder(tokenizer_2, d_model=32), tokenizer_2=tokenizer_2, transformer=transformer,
    )
    return _save(pipe, out)


TINY_BUILDERS = {"sdxl": tiny_sdxl, "sd3": tiny_sd3, "flux": tiny_flux}


def model_class(folder: Path) -> str:
    return json.loads((Path(folder) / "model_index.json").read_text())["_class_name"]
