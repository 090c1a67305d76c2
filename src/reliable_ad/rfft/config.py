"""Configuration of an RFFT run: nested dataclasses, validated at construction. Defaults are the
paper's where it gives them (docs/method.md §5: ControlNet only, RF interval = the last ten of 40
DDIM steps, AdamW learning rate 1e-5, batch 4, accumulation 4); beta, the weight of L_CC, is not
published. ``optim`` and ``runtime`` are the settings RFNet training shares
(`reliable_ad.training.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reliable_ad.rfnet.config import JudgeConfig
from reliable_ad.core.config import check
from reliable_ad.generation.config import ModelConfig, ProductConfig, SamplingConfig
from reliable_ad.training import config as shared
from reliable_ad.training.config import MIXED_PRECISION, RuntimeConfig  # noqa: F401 - RFFT's runtime section

# Regularisers of the reward objective (torch-free here so the command line starts fast).
REGULARIZERS = ("consistent_condition", "none", "kl", "denoising")

TARGETS = ("controlnet", "lora")
LORA_MODULES = ("controlnet", "unet")
OPTIMIZERS = ("adamw", "adamw8bit")
FROZEN_DTYPES = ("auto", "fp32", "fp16", "bf16")
COLLAPSE_ACTIONS = ("rollback", "stop", "warn")
UNCOND = ("empty", "negative")



@dataclass
class DataConfig:
    products: list[str] = field(default_factory=list)  # product images, folders, or .csv/.jsonl (as `generate`)
    validation_products: list[str] = field(default_factory=list)  # held-out products; empty = split off `products`
    validation_fraction: float = 0.1  # share of `products` held out when validation_products is empty
    preset: str = "bright-indoor-beige"  # prompt preset for every product without its own
    presets_file: str | None = None  # YAML/JSON of presets (ours or the authors' format)
    real_ads: str | None = None  # JSONL of real ads (image, product cut-out aligned with it, prompt); denoising only
    product: ProductConfig = field(default_factory=ProductConfig)  # placement, Canny, white threshold

    def __post_init__(self) -> None:
        check(0.0 <= self.validation_fraction < 1.0,
               f"data.validation_fraction={self.validation_fraction} must be in [0, 1)")


@dataclass
class RewardConfig:
    name: str  # label in the logs
    target: str  # "package.module:factory"; factory(**kwargs) returns reward(images01 (B,3,H,W)) -> (B,)
    weight: float = 1.0  # the loss gains -weight * mean(reward)
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(":" in self.target,
               f"rewards[{self.name!r}].target={self.target!r} must look like 'package.module:factory'")


@dataclass
class LossConfig:
    available_weight: float = 1.0  # weight of F_AC = mean -log p(Available)
    regularizer: str = "consistent_condition"  # consistent_condition | none (ReFL) | kl | denoising (data.real_ads)
    beta: float = 1.0  # weight of the regulariser; not published, tune it with the collapse monitor
    cc_uncond: str = "empty"  # L_CC's direction: text vs the "empty" prompt (§5) or vs the "negative" prompt
    rewards: list[RewardConfig] = field(default_factory=list)  # extra differentiable rewards, e.g. an aesthetic score

    def __post_init__(self) -> None:
        check(self.regularizer in REGULARIZERS, f"loss.regularizer={self.regularizer!r} is not one of {REGULARIZERS}")
        check(self.cc_uncond in UNCOND, f"loss.cc_uncond={self.cc_uncond!r} is not one of {UNCOND}")
        check(self.beta >= 0 and self.available_weight >= 0,
               f"loss.beta={self.beta} and loss.available_weight={self.available_weight} must be >= 0")
        names = [r.name for r in self.rewards]
        check(len(set(names)) == len(names), f"loss.rewards has duplicate names {names}; give each its own name")


@dataclass
class TrainableConfig:
    target: str = "controlnet"  # controlnet (all its weights, as the paper) | lora (adapters only)
    lora_modules: list[str] = field(default_factory=lambda: ["controlnet"])  # where LoRA goes: controlnet and/or unet
    lora_rank: int = 16  # LoRA rank r
    lora_alpha: float | None = None  # LoRA alpha; None = rank (scale 1)
    lora_target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    gradient_checkpointing: bool = False  # recompute activations of UNet, ControlNet and VAE decoder in backward
    frozen_dtype: str = "auto"  # dtype of every frozen model; auto = fp16 (bf16 with bf16 mixed precision) on GPU

    def __post_init__(self) -> None:
        check(self.target in TARGETS, f"trainable.target={self.target!r} is not one of {TARGETS}")
        bad = [m for m in self.lora_modules if m not in LORA_MODULES]
        check(not bad and bool(self.lora_modules),
               f"trainable.lora_modules={self.lora_modules} must be a non-empty subset of {LORA_MODULES}")
        check(self.lora_rank >= 1, f"trainable.lora_rank={self.lora_rank} must be >= 1")
        check(self.frozen_dtype in FROZEN_DTYPES,
               f"trainable.frozen_dtype={self.frozen_dtype!r} is not one of {FROZEN_DTYPES}")


@dataclass
class OptimConfig(shared.OptimConfig):
    """The shared optimizer settings with the paper's RFFT values, plus the optimizer and its warm-up."""

    learning_rate: float = 1e-5  # paper
    batch_size: int = 4  # images per micro-batch per process (paper: 4 per GPU)
    gradient_accumulation_steps: int = 4  # paper: 4
    max_steps: int = 1000  # optimizer steps
    optimizer: str = "adamw"  # adamw | adamw8bit (needs bitsandbytes)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0  # linear learning-rate warm-up, in optimizer steps

    def __post_init__(self) -> None:
        check(self.max_steps is not None, "optim.max_steps=None: RFFT needs a number of optimizer steps, e.g. 1000")
        super().__post_init__()
        check(self.optimizer in OPTIMIZERS, f"optim.optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        check(self.warmup_steps >= 0, f"optim.warmup_steps={self.warmup_steps} must be >= 0")


@dataclass
class CollapseConfig:
    min_diversity_ratio: float = 0.5  # collapse if background diversity < this x the original model's
    max_distance: float = 0.35  # collapse if mean |student - original| on background pixels ([0, 1] scale) exceeds this
    patience: int = 2  # consecutive collapsed validations before acting
    action: str = "rollback"  # rollback (to the last healthy checkpoint, then stop) | stop | warn

    def __post_init__(self) -> None:
        check(self.min_diversity_ratio >= 0,
               f"validation.collapse.min_diversity_ratio={self.min_diversity_ratio} must be >= 0")
        check(0 < self.max_distance <= 1, f"validation.collapse.max_distance={self.max_distance} must be in (0, 1]")
        check(self.patience >= 1, f"validation.collapse.patience={self.patience} must be >= 1")
        check(self.action in COLLAPSE_ACTIONS,
               f"validation.collapse.action={self.action!r} is not one of {COLLAPSE_ACTIONS}")


@dataclass
class ValidationConfig:
    every: int = 100  # optimizer steps between validations (and at step 0 and the end); 0 = never
    num_products: int = 8  # held-out products used (at most)
    images_per_product: int = 2  # seeds per product: diversity needs >= 2 images overall
    grid: bool = True  # write a PNG grid of the original model's and the student's images
    collapse: CollapseConfig = field(default_factory=CollapseConfig)

    def __post_init__(self) -> None:
        check(self.every >= 0, f"validation.every={self.every} must be >= 0")
        check(self.num_products >= 1 and self.images_per_product >= 1,
               f"validation.num_products={self.num_products} and "
               f"images_per_product={self.images_per_product} must be >= 1")


@dataclass
class RFFTConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(safety_checker=False))  # generator to fine-tune
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # paper: DDIM 40 steps, CFG 7.5, clip skip 2
    rf_interval: tuple[int, int] = (30, 40)  # graded step drawn uniformly from step indices [start, end) (paper: 30-40)
    data: DataConfig = field(default_factory=DataConfig)
    # the judge RFFT learns from, with the acceptance rule its validation counts by (the same JudgeConfig as
    # `run` and `inspect`; None depth/salience = the ones the RFNet was trained with)
    feedback: JudgeConfig = field(default_factory=JudgeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # seed, mixed precision, logs, checkpoints

    def __post_init__(self) -> None:
        steps = self.sampling.num_inference_steps
        start, end = self.rf_interval
        check(0 <= start < end <= steps,
               f"rf_interval={list(self.rf_interval)} must satisfy 0 <= start < end <= "
               f"sampling.num_inference_steps={steps}; "
               f"the paper's is [30, 40] with 40 steps (the last ten: [{max(0, steps - 10)}, {steps}])")
        check(self.sampling.scheduler == "ddim",
               f"sampling.scheduler={self.sampling.scheduler!r}: RFFT's graded step needs a deterministic "
               "DDIM loop; use scheduler ddim (the paper's)")
        check(self.sampling.eta == 0.0,
               f"sampling.eta={self.sampling.eta}: RFFT samples with DDIM eta 0 (the paper's)")
        check(self.sampling.guidance_scale > 1.0 or self.loss.regularizer != "consistent_condition"
               or self.loss.cc_uncond == "empty",
               "loss.cc_uncond='negative' needs classifier-free guidance (sampling.guidance_scale > 1)")
