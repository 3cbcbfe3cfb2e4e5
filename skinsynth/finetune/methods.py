"""The ways to adapt a diffusion pipeline: what each trains, keeps in a checkpoint, and exports. The family
(`skinsynth.families`) says which component denoises, its loss and its LoRA targets; a method says what learns.

- `lora`: low-rank adapters on the denoiser's (UNet's or transformer's) layers the family names (peft, through
  diffusers' own adapter API); exported with the family's pipeline's `save_lora_weights`, loaded with
  `pipe.load_lora_weights(DIR)` (`generate --lora DIR`).
- `full`: every weight of the denoiser, with an optional EMA copy; exported as a whole pipeline (`generate --model DIR`).
- `textual-inversion`: one new token per class (the paper's choice), initialized from the class text's embedding;
  exported in diffusers' format, one `{token: embedding}` file per class (`generate --embeddings DIR`).
- `dreambooth`: `lora` or `full` (the adapter) taught one rare instance token per class (`sks melanoma`), with
  prior preservation: each step adds `prior_loss_weight` x the loss on the base's own class images (`dreambooth.py`);
  exported as its adapter is, plus `recipe.yaml` whose class prompts carry the instance tokens.
- `scratch`: every weight of a pipeline built at random (`scratch.py`): the autoencoder for its first steps, then
  the UNet (and text encoder) on its latents; exported as a whole pipeline (`generate --model DIR`).

A checkpoint keeps only what the method trains (`state()`), as safetensors; optimizer state is accelerate's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import PipelineError
from ..families import Family
from ..recipe import Recipe
from .captions import class_token
from .losses import Caches, autoencoder_loss, diffusion_loss


@dataclass
class Components:
    """The base pipeline and its parts; methods train them in place, so `pipe` always shows the current model."""

    pipe: object
    base_folder: Path
    family: Family

    @property
    def denoiser(self) -> torch.nn.Module:
        """The UNet or transformer: what `lora` adapts and `full` trains."""
        return getattr(self.pipe, self.family.denoiser)

    @property
    def modules(self) -> list[torch.nn.Module]:
        """Every model of the pipeline (denoiser, VAE, text encoders)."""
        return [part for part in self.pipe.components.values() if isinstance(part, torch.nn.Module)]

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def text_encoder(self):
        return self.pipe.text_encoder

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def tokenizer(self):
        return self.pipe.tokenizer


def save_pipeline(pipe, out: Path) -> None:
    """`save_pretrained` without diffusers' `_name_or_path` (where each part was loaded from: the base's local
    folder or Hub snapshot, the scratch run's init folder), which would put this machine's paths into the configs;
    `skinsynth_model.json` names the base."""
    for part in [pipe, *pipe.components.values()]:
        if hasattr(part, "register_to_config") and "_name_or_path" in getattr(part, "config", {}):
            part.register_to_config(_name_or_path=None)
    pipe.save_pretrained(out, safe_serialization=True)


class Method:
    """What a fine-tuning method trains. `setup()` returns the module that holds the trained weights."""

    name: str

    def __init__(self, parts: Components, recipe: Recipe, *, lora_rank: int = 4, ema: bool = False, snr_gamma: float = 0.0, cache_latents: bool = False):
        self.parts, self.recipe, self.lora_rank, self.ema, self.snr_gamma = parts, recipe, lora_rank, ema, snr_gamma
        self.caches = Caches(latents={} if cache_latents else None)

    def setup(self) -> torch.nn.Module:
        raise NotImplementedError

    def low_precision_modules(self) -> list[torch.nn.Module]:
        """Frozen modules whose weights may be stored in the mixed-precision dtype."""
        raise NotImplementedError

    def parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state(self, tensors: dict[str, torch.Tensor], step: int) -> None:
        raise NotImplementedError

    def loss(self, trained, noise_scheduler, batch: dict, generator, weight_dtype, step: int):
        """The loss of one micro-step; `trained` is what `setup()` returned, as prepared by accelerate; `step` the
        number of optimizer steps done."""

        return self.parts.family.training_loss(
            self.parts.pipe, trained, noise_scheduler, batch, generator, weight_dtype, recipe=self.recipe, snr_gamma=self.snr_gamma, caches=self.caches,
        )

    def after_step(self) -> None:
        """Called after every optimizer step."""

    @contextlib.contextmanager
    def evaluation_weights(self):
        """The weights to validate and export with (the EMA copy, for `full --ema`)."""
        yield

    def export(self, out: Path, pipeline_class: type) -> dict:
        """Write the loadable result into `out`; return extra metadata (e.g. the learned tokens)."""
        raise NotImplementedError

    def _freeze_all(self) -> None:
        for module in self.parts.modules:
            module.requires_grad_(False)


class LoRA(Method):
    name = "lora"

    def setup(self):
        from peft import LoraConfig

        self._freeze_all()
        config = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_rank, init_lora_weights="gaussian", target_modules=list(self.parts.family.lora_targets))
        self.parts.denoiser.add_adapter(config)
        return self.parts.denoiser

    def low_precision_modules(self):
        return self.parts.modules

    def parameters(self):
        return [p for p in self.parts.denoiser.parameters() if p.requires_grad]

    def state(self):
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(self.parts.denoiser)

    def load_state(self, tensors, step):
        from peft.utils import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.parts.denoiser, tensors)
        if getattr(result, "unexpected_keys", None):
            raise PipelineError(f"the checkpoint's LoRA weights do not fit this {self.parts.family.denoiser}: unexpected {result.unexpected_keys[:3]}")

    def export(self, out, pipeline_class):
        """The family's own `save_lora_weights` (`unet_lora_layers=` for SD and SDXL, `transformer_lora_layers=`
        for SD3 and Flux), so plain diffusers' `pipe.load_lora_weights(out)` loads it."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        denoiser, name = self.parts.denoiser, self.parts.family.denoiser
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))
        metadata = denoiser.peft_config["default"].to_dict()
        pipeline_class.save_lora_weights(out, **{f"{name}_lora_layers": layers, f"{name}_lora_adapter_metadata": metadata}, safe_serialization=True)
        return {}


class Full(Method):
    name = "full"

    def setup(self):
        self._freeze_all()
        denoiser = self.parts.denoiser
        denoiser.requires_grad_(True)
        self._start_ema()
        return denoiser

    def ema_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The weights `--ema` averages, by checkpoint name."""
        return list(self.parts.denoiser.named_parameters())

    def _start_ema(self) -> None:
        self.ema_model = None
        if self.ema:
            from diffusers.training_utils import EMAModel

            self.ema_model = EMAModel([p for _, p in self.ema_parameters()])
            self.ema_model.to(self.parts.denoiser.device)

    def low_precision_modules(self):
        return [module for module in self.parts.modules if module is not self.parts.denoiser]

    def parameters(self):
        return list(self.parts.denoiser.parameters())

    def state(self):
        prefix = f"{self.parts.family.denoiser}."
        return {prefix + name: value for name, value in self.parts.denoiser.state_dict().items()} | self._ema_state()

    def _ema_state(self) -> dict[str, torch.Tensor]:
        if self.ema_model is None:
            return {}
        return {f"ema.{name}": shadow for (name, _), shadow in zip(self.ema_parameters(), self.ema_model.shadow_params)}

    def load_state(self, tensors, step):
        prefix = f"{self.parts.family.denoiser}."
        self.parts.denoiser.load_state_dict({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
        self._load_ema(tensors, step)

    def _load_ema(self, tensors, step):
        if self.ema_model is not None:
            names = [name for name, _ in self.ema_parameters()]
            if any(f"ema.{name}" not in tensors for name in names):
                raise PipelineError("the checkpoint has no EMA weights for every averaged weight; resume without --ema changes, or start a new run")
            with torch.no_grad():
                for name, shadow in zip(names, self.ema_model.shadow_params):
                    shadow.copy_(tensors[f"ema.{name}"])
            self.ema_model.optimization_step = step

    def after_step(self):
        if self.ema_model is not None:
            self.ema_model.step([p for _, p in self.ema_parameters()])

    @contextlib.contextmanager
    def evaluation_weights(self):
        if self.ema_model is None:
            yield
            return
        parameters = [p for _, p in self.ema_parameters()]
        self.ema_model.store(parameters)
        self.ema_model.copy_to(parameters)
        try:
            yield
        finally:
            self.ema_model.restore(parameters)

    def export(self, out, pipeline_class):
        from diffusers import DiffusionPipeline

        # The base's own VAE and text encoders, in their saved dtype (training may hold them in half precision).
        with self.evaluation_weights():
            pipe = DiffusionPipeline.from_pretrained(self.parts.base_folder, use_safetensors=True, **{self.parts.family.denoiser: self.parts.denoiser})
            save_pipeline(pipe, out)
        return {}


class TextualInversion(Method):
    name = "textual-inversion"

    def setup(self):
        tokenizer, text_encoder = self.parts.tokenizer, self.parts.text_encoder
        self.tokens = [class_token(c.name) for c in self.recipe.classes]
        duplicates = sorted({t for t in self.tokens if self.tokens.count(t) > 1})
        if duplicates:
            raise PipelineError(f"class names differing only by case would share the tokens {duplicates}; rename the recipe's classes")
        taken = [t for t in self.tokens if t in tokenizer.get_vocab()]
        if taken:
            raise PipelineError(f"the base's tokenizer already has the tokens {taken}; textual inversion needs new tokens")
        tokenizer.add_tokens(self.tokens)
        self.token_ids = tokenizer.convert_tokens_to_ids(self.tokens)
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embeddings = text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            for token_id, spec in zip(self.token_ids, self.recipe.classes):
                source = tokenizer(spec.text, add_special_tokens=False).input_ids
                embeddings[token_id] = embeddings[source].mean(dim=0)
        self.original = embeddings.detach().clone()
        self.frozen_rows = torch.ones(len(tokenizer), dtype=torch.bool, device=embeddings.device)
        self.frozen_rows[self.token_ids] = False
        self._freeze_all()
        text_encoder.get_input_embeddings().requires_grad_(True)
        return text_encoder

    def low_precision_modules(self):
        return [self.parts.unet, self.parts.vae]

    def loss(self, trained, noise_scheduler, batch, generator, weight_dtype, step):

        return diffusion_loss(self.parts.vae, self.parts.unet, trained, noise_scheduler, batch, generator, weight_dtype, self.snr_gamma, self.caches.latents)

    def parameters(self):
        return list(self.parts.text_encoder.get_input_embeddings().parameters())

    def _rows(self) -> torch.Tensor:
        return self.parts.text_encoder.get_input_embeddings().weight

    def state(self):
        rows = self._rows()
        return {token: rows[token_id] for token, token_id in zip(self.tokens, self.token_ids)}

    def load_state(self, tensors, step):
        with torch.no_grad():
            for token, token_id in zip(self.tokens, self.token_ids):
                self._rows()[token_id] = tensors[token]

    def after_step(self):
        # Only the new tokens learn: weight decay must not drift the rest of the vocabulary (diffusers does the same).
        with torch.no_grad():
            rows = self._rows()
            rows[self.frozen_rows] = self.original[self.frozen_rows].to(rows.device, rows.dtype)

    def export(self, out, pipeline_class):
        from .captions import token_recipe

        for spec, token, tensor in zip(self.recipe.classes, self.tokens, self.state().values()):
            save_file({token: tensor.detach().float().cpu().contiguous()}, out / f"learned_embeds-{spec.name}.safetensors")
        (out / "recipe.yaml").write_text(token_recipe(self.recipe).to_yaml(), encoding="utf-8")
        return {"tokens": {spec.name: token for spec, token in zip(self.recipe.classes, self.tokens)}}


class Scratch(Full):
    """Stage 1 (the first `autoencoder_steps` steps) trains the autoencoder alone; stage 2 the UNet and the text
    encoder on its latents, with the optional EMA of both. One optimizer holds every weight: a weight that gets
    no gradient in a stage is left untouched by AdamW. The latent scale (SD's `scaling_factor`) is measured on the
    first batch of stage 2 and kept in the checkpoints, so a run resumes in either stage."""

    name = "scratch"
    COMPONENTS = ("vae", "unet", "text_encoder")

    def setup(self):
        import json

        from .scratch import Architecture

        self.architecture = Architecture(**json.loads((self.parts.base_folder / "architecture.json").read_text()))
        self._freeze_all()
        self.parts.vae.requires_grad_(True)
        self.parts.unet.requires_grad_(True)
        self.parts.text_encoder.requires_grad_(self.architecture.train_text_encoder)
        self.scaling_factor: float | None = None
        self._start_ema()
        return torch.nn.ModuleDict({name: getattr(self.parts, name) for name in self.COMPONENTS})

    def low_precision_modules(self):
        return []

    def parameters(self):
        return [p for name in self.COMPONENTS for p in getattr(self.parts, name).parameters() if p.requires_grad]

    def _in_stage_two(self, step: int) -> bool:
        return step >= self.architecture.autoencoder_steps

    def loss(self, trained, noise_scheduler, batch, generator, weight_dtype, step):

        vae = self.parts.vae
        if not self._in_stage_two(step):
            pixels = batch["pixel_values"].to(vae.device, weight_dtype)
            return autoencoder_loss(vae, pixels, generator, self.architecture.kl_weight)[0]
        if self.scaling_factor is None:
            self._measure_scaling(batch, generator, weight_dtype)
        return diffusion_loss(self.parts.vae, self.parts.unet, self.parts.text_encoder, noise_scheduler, batch, generator, weight_dtype, self.snr_gamma)

    def _measure_scaling(self, batch, generator, weight_dtype) -> None:
        vae = self.parts.vae
        with torch.no_grad():
            latents = vae.encode(batch["pixel_values"].to(vae.device, weight_dtype)).latent_dist.sample(generator)
        self._set_scaling(1.0 / latents.float().std().item())

    def _set_scaling(self, value: float) -> None:
        self.scaling_factor = value
        self.parts.vae.register_to_config(scaling_factor=value)

    def ema_parameters(self):
        # The co-trained text encoder is averaged with the UNet: an averaged UNet reading a raw text encoder's last
        # state sees captions it was never trained on.
        return [(f"{name}.{key}", p) for name in ("unet", "text_encoder") for key, p in getattr(self.parts, name).named_parameters() if p.requires_grad]

    def state(self):
        tensors = {f"{name}.{key}": value for name in self.COMPONENTS for key, value in getattr(self.parts, name).state_dict().items()}
        if self.scaling_factor is not None:
            tensors["scaling_factor"] = torch.tensor(self.scaling_factor, dtype=torch.float64)
        return tensors | self._ema_state()

    def load_state(self, tensors, step):
        for name in self.COMPONENTS:
            prefix = f"{name}."
            getattr(self.parts, name).load_state_dict({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
        if "scaling_factor" in tensors:
            self._set_scaling(float(tensors["scaling_factor"]))
        if self._in_stage_two(step):
            self._load_ema(tensors, step - self.architecture.autoencoder_steps)

    def after_step(self):
        if self.scaling_factor is not None:  # stage 2 has begun
            super().after_step()

    def export(self, out, pipeline_class):
        with self.evaluation_weights():
            pipe = pipeline_class.from_pretrained(
                self.parts.base_folder, unet=self.parts.unet, vae=self.parts.vae, text_encoder=self.parts.text_encoder,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            save_pipeline(pipe, out)
        return {"architecture": self.architecture.model_dump(), "latent_scaling_factor": self.scaling_factor}


METHODS: dict[str, type[Method]] = {m.name: m for m in (LoRA, Full, TextualInversion, Scratch)}  # and `dreambooth.DreamBooth`, over LoRA or Full
