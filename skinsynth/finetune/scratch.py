"""`--method scratch`: a whole Stable Diffusion-style pipeline trained from random weights on the real data.

Why: groups without a pretrained model (license, size, or a prior that does not suit their images) train small
latent diffusion models on their own data, as the MONAI generative models do for brain MRI. The pipeline has the
same components as Stable Diffusion, so it saves, loads and generates like any diffusers checkpoint:

- an `AutoencoderKL`, trained first (`autoencoder_steps` steps): L1 reconstruction + a small KL term, nothing more;
- a `UNet2DConditionModel` trained on its latents (scaled to unit variance, as SD's `scaling_factor` does), with
- a `CLIPTextModel` made from a small config, trained with the UNet (or kept at its random weights), reading
- a CLIP BPE tokenizer whose merges spell the recipe's own caption words (built offline, no download).

Sizes are named presets (`ARCHITECTURES`), each overridable field by field with a YAML/JSON file (`--config`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import SkinsynthError
from ..recipe import Recipe, load_yaml

Channels = Annotated[tuple[Annotated[int, Field(ge=8)], ...], Field(min_length=1, max_length=5)]


class Architecture(BaseModel):
    """The sizes of a pipeline trained from scratch, and its two-stage schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: Annotated[int, Field(ge=8)]
    autoencoder_channels: Channels  # one block per entry: the autoencoder downsamples 2 ** (len - 1) times
    autoencoder_layers: Annotated[int, Field(ge=1)] = 1
    latent_channels: Annotated[int, Field(ge=1)] = 4
    autoencoder_steps: Annotated[int, Field(ge=1)]
    kl_weight: Annotated[float, Field(ge=0)] = 1e-6  # as in Stable Diffusion's autoencoder
    unet_channels: Channels  # the UNet downsamples its latents 2 ** (len - 1) times
    unet_layers: Annotated[int, Field(ge=1)] = 1
    attention_head_dim: Annotated[int, Field(ge=1)] = 8
    text_hidden_size: Annotated[int, Field(ge=8)] = 64
    text_layers: Annotated[int, Field(ge=1)] = 2
    text_heads: Annotated[int, Field(ge=1)] = 4
    max_caption_tokens: Annotated[int, Field(ge=8, le=77)] = 32
    train_text_encoder: bool = True
    # How the caption reaches the UNet. Cross-attention alone, at the low resolutions only, let the seed decide the
    # picture and the class word barely change it (issue 20): `pooled_text` also adds an attention-pooled caption
    # embedding to the timestep embedding of every ResNet block (`addition_embed_type="text"`, as DeepFloyd IF
    # does), and `attention_levels: all` puts cross-attention at every UNet level.
    pooled_text: bool = True
    attention_levels: Literal["all", "lower"] = "all"
    # The noise schedule. SD's scaled_linear schedule leaves about 7 % of the image's mean at t = T, so the seed's
    # noise sets the global colour; a zero-terminal-SNR schedule with v-prediction and "trailing" timesteps
    # (Lin et al. 2024) starts generation from pure noise, where only the caption can set it.
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    zero_terminal_snr: bool = True
    # GroupNorm with one channel per group is instance norm: it erases each channel's mean over the image, so the
    # decoder and the UNet could not carry an image's overall colour (the samples came out in one average tint).
    min_channels_per_norm_group: Annotated[int, Field(ge=1)] = 4

    @property
    def autoencoder_factor(self) -> int:
        return 2 ** (len(self.autoencoder_channels) - 1)

    @property
    def unet_factor(self) -> int:
        return 2 ** (len(self.unet_channels) - 1)


ARCHITECTURES: dict[str, dict] = {
    # Toy data (flat colours, shapes) at 32 px: 2,000 steps take about 4 minutes on one core (the demo). 100 autoencoder
    # steps blurred the toy's speckles away (its real test images autoencoded: 67 % recognised); 600 keep them (98 %).
    "tiny": {
        "resolution": 32, "autoencoder_channels": (16, 32, 32), "autoencoder_steps": 600,
        "unet_channels": (32, 64), "text_hidden_size": 32, "text_layers": 1, "max_caption_tokens": 16,
    },
    # 64 px images on a 2-core CPU: a 4x autoencoder (16x16x4 latents, 0.7M parameters) and a 3-level UNet (4.1M):
    # about 4 (autoencoder) and 3 (UNet) steps a second at batch 8 on one idle core. On HAM10000 the autoencoder's
    # reconstructions of real test images were recognised by the real classifiers at 0.47 (balanced) after 1,000
    # steps and 0.55 after 1,500 (0.66 for the originals): it gets 2,000.
    "cpu-small": {
        "resolution": 64, "autoencoder_channels": (16, 32, 64), "autoencoder_steps": 2000,
        "unet_channels": (32, 64, 128), "text_hidden_size": 64,
    },
    # 256 px on one GPU: Stable Diffusion's 8x autoencoder (32x32x4 latents) and a wider, deeper UNet.
    "gpu-base": {
        "resolution": 256, "autoencoder_channels": (64, 128, 256, 256), "autoencoder_layers": 2, "autoencoder_steps": 20000,
        "unet_channels": (128, 256, 512), "unet_layers": 2, "attention_head_dim": 32, "text_hidden_size": 256,
        "text_layers": 4, "text_heads": 8, "max_caption_tokens": 48,
    },
}
DEFAULT_SIZE = "cpu-small"


def load_architecture(size: str | None, config: str | Path | None) -> Architecture:
    """The preset `size` (default `cpu-small`) with the fields of the YAML/JSON file `config` put over it."""
    size = size or DEFAULT_SIZE
    if size not in ARCHITECTURES:
        raise SkinsynthError(f"`--size {size}` is not a preset; choose one of {', '.join(ARCHITECTURES)}")
    fields = dict(ARCHITECTURES[size])
    if config is not None:
        overrides = load_yaml(config, "architecture config")
        if not isinstance(overrides, dict):
            raise SkinsynthError(f"`--config {config}` must hold a mapping of architecture fields, e.g. `unet_channels: [64, 128]`")
        fields.update(overrides)
    try:
        return Architecture(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        raise SkinsynthError(f"architecture field `{'.'.join(map(str, first['loc']))}`: {first['msg']} (got {first.get('input')!r}); fix `--config`") from None


def check_resolution(architecture: Architecture, resolution: int) -> None:
    """The image must split into whole latents, and the latents into whole UNet levels."""
    factor = architecture.autoencoder_factor * architecture.unet_factor
    if resolution % factor:
        raise SkinsynthError(
            f"`--resolution {resolution}` is not a multiple of {factor} (the autoencoder downsamples {architecture.autoencoder_factor}x, "
            f"then the UNet {architecture.unet_factor}x); use e.g. {max(factor, resolution // factor * factor)}"
        )


def caption_words(recipe: Recipe) -> list[str]:
    """Every word the recipe's captions can hold (templates, class texts, attribute values), lower-cased the way
    CLIP's tokenizer splits them: each becomes one token."""
    texts = [*recipe.prompts.templates, recipe.prompts.negative or "", *(c.text for c in recipe.classes)]
    texts += [str(v) for spec in recipe.attributes.values() for v in spec.values]
    words = re.findall(r"[^\W\d_]+", re.sub(r"\{[^}]*\}", " ", " ".join(texts)).lower())
    return list(dict.fromkeys(words))


def norm_groups(widths: tuple[int, ...], min_channels: int) -> int:
    """GroupNorm's group count: at most 32 (Stable Diffusion's), dividing every width, with at least `min_channels`
    channels in each group (or 1 group when no count qualifies)."""
    return max((g for g in range(1, 33) if all(w % g == 0 and w // g >= min_channels for w in widths)), default=1)


def build_pipeline(folder: Path, architecture: Architecture, recipe: Recipe, resolution: int, seed: int) -> None:
    """Write the random-weight starting pipeline to `folder` (atomically): same seed and recipe, same weights."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ..bpe import write_tokenizer

    a = architecture
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    levels = len(a.unet_channels)
    plain = 1 if a.attention_levels == "lower" else 0  # "lower": no attention at full latent resolution (cheaper)
    unet = UNet2DConditionModel(
        sample_size=resolution // a.autoencoder_factor,
        in_channels=a.latent_channels,
        out_channels=a.latent_channels,
        block_out_channels=a.unet_channels,
        layers_per_block=a.unet_layers,
        down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * (levels - plain),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - plain) + ("UpBlock2D",) * plain,
        cross_attention_dim=a.text_hidden_size,
        attention_head_dim=a.attention_head_dim,
        norm_num_groups=norm_groups(a.unet_channels, a.min_channels_per_norm_group),
        addition_embed_type="text" if a.pooled_text else None,
        addition_embed_type_num_heads=a.text_heads,
    )
    vae = AutoencoderKL(
        block_out_channels=a.autoencoder_channels,
        down_block_types=("DownEncoderBlock2D",) * len(a.autoencoder_channels),
        up_block_types=("UpDecoderBlock2D",) * len(a.autoencoder_channels),
        layers_per_block=a.autoencoder_layers,
        latent_channels=a.latent_channels,
        norm_num_groups=norm_groups(a.autoencoder_channels, a.min_channels_per_norm_group),
        sample_size=resolution,
    )
    write_tokenizer(tmp / "tokenizer", caption_words(recipe), a.max_caption_tokens)
    tokenizer = CLIPTokenizer.from_pretrained(tmp / "tokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=a.text_hidden_size, intermediate_size=4 * a.text_hidden_size,
        num_hidden_layers=a.text_layers, num_attention_heads=a.text_heads, max_position_embeddings=a.max_caption_tokens,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=noise_schedule(a),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "architecture.json").write_text(json.dumps(a.model_dump(), indent=2), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def noise_schedule(architecture: Architecture):
    """The pipeline's scheduler; training reads the same config (`DDPMScheduler.from_pretrained`), so the model is
    sampled with the schedule and prediction type it learned."""
    from diffusers import DDIMScheduler

    schedule = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, prediction_type=architecture.prediction_type)
    if architecture.zero_terminal_snr:
        return DDIMScheduler(**schedule, rescale_betas_zero_snr=True, timestep_spacing="trailing", set_alpha_to_one=True)
    return DDIMScheduler(**schedule, set_alpha_to_one=False, steps_offset=1)
