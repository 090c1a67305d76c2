"""What RFFT trains and what stays frozen (docs/method.md §5: the paper trains the ControlNet only).

`setup_trainable` freezes every model of the pipeline (no gradients; half precision on GPU), then
makes trainable either the whole ControlNet (fp32) or LoRA adapters (peft, fp32) on the ControlNet
and/or the UNet. The `Teacher` is the model as it was: a frozen copy of the ControlNet, or, for LoRA,
the same modules with their adapters switched off (no copy needed).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from reliable_ad.rfft.config import TrainableConfig

ADAPTER = "rfft"  # name of the LoRA adapter RFFT adds


def frozen_dtype_for(setting: str, device: torch.device, mixed_precision: str) -> torch.dtype:
    """dtype of the frozen models: fp32 on CPU; on GPU fp16, or bf16 under bf16 mixed precision."""
    if setting != "auto":
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[setting]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if mixed_precision == "bf16" else torch.float16


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`module.to(dtype)` only where needed (diffusers warns on every cast, even a no-op one)."""
    if any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype=dtype)
    return module


@dataclass
class Trainable:
    """The trainable modules (by name: "controlnet", "unet"), their trainable parameters, the teacher,
    and the models that are wholly frozen."""

    modules: dict[str, torch.nn.Module]
    teacher: Teacher
    lora: bool
    frozen: list[torch.nn.Module] = field(default_factory=list)

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        for prefix, module in self.modules.items():
            for name, p in module.named_parameters():
                if p.requires_grad:
                    yield f"{prefix}.{name}", p

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable parameters only, detached on the CPU (what a checkpoint stores)."""
        return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(
                f"checkpoint does not fit the trainable parameters (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}); "
                "was it written with another trainable.target / LoRA setting?"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name].to(p.device, p.dtype))


class Teacher:
    """The original model: `with teacher.active() as controlnet:` makes the sampler predict as it did.

    For a trained ControlNet it yields a frozen copy; for LoRA it switches the adapters off for the
    duration and yields the (shared) ControlNet.
    """

    def __init__(self, controlnet: torch.nn.Module, lora_modules: tuple[torch.nn.Module, ...] = ()):
        self.controlnet = controlnet
        self.lora_modules = lora_modules

    @contextmanager
    def active(self):
        for m in self.lora_modules:
            m.disable_adapters()
        try:
            yield self.controlnet
        finally:
            for m in self.lora_modules:
                m.enable_adapters()


def _add_lora(module: torch.nn.Module, cfg: TrainableConfig) -> None:
    try:
        from peft import LoraConfig
    except ImportError as e:
        raise ImportError("trainable.target=lora needs peft: pip install 'peft>=0.15'") from e
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or cfg.lora_rank,
                        target_modules=list(cfg.lora_target_modules), init_lora_weights="gaussian")
    try:
        module.add_adapter(config, adapter_name=ADAPTER)
    except ValueError as e:
        raise ValueError(f"trainable.lora_target_modules={cfg.lora_target_modules} do not fit "
                         f"{type(module).__name__}: {e}") from e


def setup_trainable(pipe, cfg: TrainableConfig, *, frozen_dtype: torch.dtype) -> Trainable:
    """Freeze the pipeline, cast frozen parts to `frozen_dtype`, and make the RFFT parameters trainable.

    ControlNet target: `pipe.controlnet` becomes the fp32 student; the teacher is a frozen copy made
    first. LoRA target: adapters named "rfft" join the chosen modules, in fp32; the rest stays frozen.
    """
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.controlnet):
        module.requires_grad_(False)
        module.eval()  # no dropout: the step must be a deterministic function of the weights
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        _cast(module, frozen_dtype)
    if cfg.target == "controlnet":
        teacher_net = _cast(copy.deepcopy(pipe.controlnet), frozen_dtype)
        student = _cast(pipe.controlnet, torch.float32).requires_grad_(True)
        modules = {"controlnet": student}
        teacher = Teacher(teacher_net)
    else:
        _cast(pipe.controlnet, frozen_dtype)
        by_name = {"controlnet": pipe.controlnet, "unet": pipe.unet}
        modules = {}
        for name in cfg.lora_modules:
            _add_lora(by_name[name], cfg)
            for p in by_name[name].parameters():
                if p.requires_grad:
                    p.data = p.data.float()  # LoRA weights train in fp32 beside half-precision bases
            modules[name] = by_name[name]
        teacher = Teacher(pipe.controlnet, tuple(modules.values()))
    if cfg.gradient_checkpointing:
        for module in (pipe.unet, pipe.controlnet, pipe.vae):
            module.enable_gradient_checkpointing()
    every = (pipe.unet, pipe.vae, pipe.text_encoder, pipe.controlnet, teacher.controlnet)
    frozen = [m for m in dict.fromkeys(every) if not any(p.requires_grad for p in m.parameters())]
    trainable = Trainable(modules, teacher, lora=cfg.target == "lora", frozen=frozen)
    if not trainable.parameters():
        raise ValueError(f"no trainable parameters for trainable={cfg}; check lora_target_modules")
    return trainable
