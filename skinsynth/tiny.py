"""The tiny random-weight Stable Diffusion pipeline that tests and the offline demo use, the way diffusers and
transformers test themselves: no download, a few MB, the same code path as a real model."""

from __future__ import annotations

from pathlib import Path

from .errors import PipelineError
from .bpe import write_tokenizer

TINY_WORDS = """a an the of on in with and photo photograph clinical dermoscopic dermoscopy image close-up close up skin
type fitzpatrick lesion melanoma nevus melanocytic basal cell carcinoma squamous actinic keratosis benign
seborrheic vascular dermatofibroma back face lower upper extremity trunk abdomen chest scalp neck hand foot arm
leg ear genital acral unknown male female age years old patient text watermark drawing i ii iii iv v vi""".split()


def tiny_clip_tokenizer(folder: Path):
    """A CLIP tokenizer without the Hub, spelling the tiny vocabulary: written to `folder` and loaded from it."""
    from transformers import CLIPTokenizer

    write_tokenizer(folder, TINY_WORDS, learned=False)
    return CLIPTokenizer.from_pretrained(folder)


def tiny_t5_tokenizer(folder: Path):
    """A T5 tokenizer without the Hub: a Unigram model over characters (`<pad>` 0, `</s>` 1, `<unk>` 2), as T5's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    characters = sorted(set("".join(TINY_WORDS)) | set("abcdefghijklmnopqrstuvwxyz0123456789,.-'") | {"▁"})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in characters]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    t5 = T5TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), extra_ids=0, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    t5.save_pretrained(folder)
    return T5TokenizerFast.from_pretrained(folder)


def tiny_pipeline(out: str | Path, seed: int = 0):
    """Write a random-weight Stable Diffusion pipeline of a few MB to `out` (64 px images) and return it.

    It loads with `DiffusionPipeline.from_pretrained(out)` like any real checkpoint; its images are noise-like. Its
    latent geometry is Stable Diffusion's (8x downsampling, 4 channels): 64 px images use 8x8 latents, 512 px 64x64.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PipelineError(f"`{out}` exists and is not an empty folder; choose a new folder for the tiny pipeline")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    # Four blocks: the VAE downsamples 8x like Stable Diffusion's, so a 512 px recipe costs what its 64x64 latents cost.
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=64,
    )
    tokenizer = tiny_clip_tokenizer(out / "tokenizer")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return pipe
