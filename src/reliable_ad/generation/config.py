"""Configuration of the generation path; defaults are the paper's (supplemental Table 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from reliable_ad.core.config import check, to_dict
from reliable_ad.core.registry import find_entry

SCHEDULERS = ("ddim", "euler_a", "dpmpp_sde_karras", "dpmpp_2m_karras", "euler", "unipc")
DTYPES = ("auto", "fp32", "fp16", "bf16")
ATTENTION = ("sdpa", "default")  # diffusers' AttnProcessor2_0 (torch SDPA) | its set_default_attn_processor
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")



@dataclass
class LoraSpec:
    """One LoRA to fuse: ``path`` (hub id, folder or .safetensors file) at ``scale`` (None: model.lora_scale)."""

    path: str
    scale: float | None = None

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``PATH`` or ``PATH:SCALE`` (the part after the last colon is a scale only if it is a number)."""
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                return cls(head, float(tail))
            except ValueError:
                pass
        return cls(text)


def normalize_loras(value, default_scale: float) -> list[LoraSpec]:
    """``model.lora`` as given (None, "PATH[:SCALE]", or a list of those / {path, scale} / LoraSpec) ->
    a list of LoraSpec with every scale set; ValueError naming the entry otherwise."""
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, (str, dict, LoraSpec)) else value
    check(isinstance(items, (list, tuple)), f"model.lora={value!r} must be a path, \"PATH:SCALE\" or a list of them")
    out = []
    for i, item in enumerate(items):
        where = f"model.lora[{i}]"
        if isinstance(item, str):
            spec = LoraSpec.parse(item)
        elif isinstance(item, dict):
            unknown = set(item) - {"path", "scale"}
            check(not unknown and "path" in item,
                  f"{where}={item!r} must be a mapping with 'path' and optionally 'scale' (unknown: {sorted(unknown)})")
            spec = LoraSpec(str(item["path"]), item.get("scale"))
        elif isinstance(item, LoraSpec):
            spec = LoraSpec(item.path, item.scale)
        else:
            raise ValueError(f"{where}={item!r} must be a path, \"PATH:SCALE\" or {{path, scale}}")
        check(bool(spec.path), f"{where} has an empty path; give a hub id, folder or .safetensors file")
        scale = default_scale if spec.scale is None else spec.scale
        check(isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0.0 <= scale <= 2.0,
              f"{where}: scale {scale!r} for {spec.path} is outside [0, 2] (paper: 0.8)")
        out.append(LoraSpec(spec.path, float(scale)))
    return out


@dataclass
class ModelConfig:
    model: str = "tiny"  # a model preset name (see `reliable-ad models`), or a base model: hub id, folder, .safetensors
    controlnet: str | None = None  # ControlNet (canny): hub id, folder or single file; None = the preset's
    # LoRAs fused into the UNet/text encoder, in order: a list of {path, scale} (or "PATH[:SCALE]" strings);
    # a path is a hub id, folder or .safetensors file (kohya/A1111 or diffusers/peft keys). A single string
    # is one LoRA (older configs). Normalised to a list of LoraSpec, or None.
    lora: list[LoraSpec] | str | None = None
    lora_scale: float = 0.8  # paper: 0.8; the scale of a LoRA given without one
    base_config: str | None = None  # single-file checkpoints: a diffusers folder / hub id with the model configs
    controlnet_config: str | None = None  # single-file ControlNets: a diffusers ControlNet folder / hub id (config.json)
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str = "auto"  # auto = fp16 on CUDA, fp32 on CPU
    safety_checker: bool = True  # used where the base model ships one; flagged images are recorded

    def __post_init__(self) -> None:
        check(bool(self.model), "model.model is empty; give a preset name, hub id, folder or .safetensors file")
        check(self.dtype in DTYPES, f"model.dtype={self.dtype!r} is not one of {DTYPES}")
        check(0.0 <= self.lora_scale <= 2.0, f"model.lora_scale={self.lora_scale} is outside [0, 2]")
        self.lora = normalize_loras(self.lora, self.lora_scale) or None  # None: no LoRA (as older run configs)


@dataclass
class SamplingConfig:
    size: int | None = None  # output side in px; None = the model's native size (512 for SD1.5)
    scheduler: str = "ddim"  # paper: DDIM; also euler_a, dpmpp_sde_karras (the authors' other choices)
    num_inference_steps: int = 40  # paper: 40
    guidance_scale: float = 7.5  # paper: 7.5
    # rescale the guided prediction towards the text prediction's std (Lin et al. 2023, "Common Diffusion
    # Noise Schedules and Sample Steps are Flawed", §3.4) against over-exposure; 0 = off (the paper's
    # sampling), Lin et al. recommend 0.7 for v-prediction / zero-terminal-SNR models
    guidance_rescale: float = 0.0
    clip_skip: int = 2  # A1111 convention as in the paper (1 = last CLIP layer, 2 = penultimate)
    controlnet_conditioning_scale: float = 1.0  # paper: 1.0
    eta: float = 0.0  # DDIM eta, paper: 0
    batch_size: int = 4  # images per pipeline call

    def __post_init__(self) -> None:
        check(self.scheduler in SCHEDULERS, f"sampling.scheduler={self.scheduler!r} is not one of {SCHEDULERS}")
        check(self.num_inference_steps >= 1, f"sampling.num_inference_steps={self.num_inference_steps} must be >= 1")
        check(self.guidance_scale >= 0, f"sampling.guidance_scale={self.guidance_scale} must be >= 0")
        check(0 <= self.guidance_rescale <= 1,
               f"sampling.guidance_rescale={self.guidance_rescale} must be in [0, 1]; pass 0 for plain "
               "classifier-free guidance or 0.7 (Lin et al.'s value) for v-prediction / zero-terminal-SNR models")
        check(self.clip_skip >= 1, f"sampling.clip_skip={self.clip_skip} must be >= 1 (1 = no skip)")
        check(self.batch_size >= 1, f"sampling.batch_size={self.batch_size} must be >= 1")
        check(self.controlnet_conditioning_scale >= 0,
               f"sampling.controlnet_conditioning_scale={self.controlnet_conditioning_scale} must be >= 0 (paper: 1.0)")
        check(0 <= self.eta <= 1, f"sampling.eta={self.eta} must be in [0, 1] (paper: 0)")
        if self.size is not None:
            check(self.size >= 64 and self.size % 8 == 0, f"sampling.size={self.size} must be a multiple of 8, >= 64")

    @property
    def diffusers_clip_skip(self) -> int | None:
        """diffusers counts skipped layers (None = last layer); A1111's clip skip 2 is diffusers' 1."""
        return None if self.clip_skip <= 1 else self.clip_skip - 1


@dataclass
class ProductConfig:
    white_threshold: int = 250  # products without alpha: channels >= this are background
    canny_low: int = 100  # paper's Canny thresholds
    canny_high: int = 200
    keep_loc: bool = False  # keep the product where it is instead of centring it
    image_scale: float | None = None  # longer side / canvas side; None = the prompt preset's value
    # the product is cropped to the box of its pixels with alpha >= this: 128 as in the authors' script
    # (a faint drop shadow stays out of the box), 1 = every product pixel (faint shadows enlarge the box)
    box_alpha_threshold: int = 128

    def __post_init__(self) -> None:
        check(1 <= self.white_threshold <= 255,
               f"product.white_threshold={self.white_threshold} must be in 1..255 (250 treats near-white as background)")
        check(0 <= self.canny_low <= self.canny_high, f"product.canny_low/high={self.canny_low}/{self.canny_high}: need 0 <= low <= high")
        check(1 <= self.box_alpha_threshold <= 255,
               f"product.box_alpha_threshold={self.box_alpha_threshold} must be in 1..255 "
               "(128 = the authors' crop, 1 = keep faint shadows in the box)")
        if self.image_scale is not None:
            check(0 < self.image_scale <= 1, f"product.image_scale={self.image_scale} must be in (0, 1]")


@dataclass
class SpeedConfig:
    """How fast the generator runs, never what it makes: each option keeps the images equal, bit for bit or
    within float tolerance (tests/test_speed_options.py; docs/benchmarks.md, "Speed options")."""

    attention: str = "sdpa"  # sdpa: torch's fused scaled_dot_product_attention (diffusers' choice under torch 2);
    # default: diffusers' plain matmul + softmax processor (set_default_attn_processor), for comparison
    channels_last: bool = False  # UNet, ControlNet and VAE in channels-last memory format (faster convs on GPUs)
    compile: bool = False  # torch.compile the UNet and ControlNet (the first call of each batch size compiles)
    compile_mode: str = "default"  # torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune, ...
    # the ControlNet's conditioning embedding of the Canny image once per pipeline call instead of once per
    # denoising step (the same tensor every step: bit-identical)
    reuse_control_embedding: bool = True
    overlap_inspection: bool = False  # `run`: inspect batch i in a worker thread while batch i+1 generates

    def __post_init__(self) -> None:
        check(self.attention in ATTENTION, f"speed.attention={self.attention!r} is not one of {ATTENTION} "
                                           "(sdpa: torch's fused attention, the fast one)")
        check(self.compile_mode in COMPILE_MODES,
              f"speed.compile_mode={self.compile_mode!r} is not one of {COMPILE_MODES}")


@dataclass
class ProvenanceConfig:
    """How every written image is marked as AI-generated (README, "Provenance"); the PNG label is always on."""

    c2pa: bool = True  # sign a C2PA manifest (Content Credentials) into every image
    c2pa_cert: str | None = None  # PEM certificate chain, signing certificate first; None = the development identity
    c2pa_key: str | None = None  # the signing certificate's PEM private key (EC P-256, ES256)
    watermark: bool = True  # invisible watermark in the pixels (survives a re-save, which strips metadata)
    watermark_product: bool = False  # also mark the product's pixels (they then differ from the cut-out)

    def __post_init__(self) -> None:
        check((self.c2pa_cert is None) == (self.c2pa_key is None),
              f"provenance.c2pa_cert={self.c2pa_cert!r} and c2pa_key={self.c2pa_key!r}: give both (--c2pa-cert PEM "
              "--c2pa-key PEM) or neither (the development identity)")
        check(self.c2pa or self.c2pa_cert is None,
              f"provenance.c2pa_cert={self.c2pa_cert!r} with c2pa off: drop --no-c2pa to sign, or the cert and key")
        check(self.watermark or not self.watermark_product,
              "provenance.watermark_product needs the watermark: drop --no-watermark or --watermark-product")


DEFAULT_PROMPT_PRESET = "bright-indoor-beige"


@dataclass
class GenerateConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    product: ProductConfig = field(default_factory=ProductConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)  # how fast, not what: resumed runs may change it
    preset: str | None = None  # a built-in prompt preset name or a presets file entry; None = the model's
    # own (`synthad` for --model synthad), else "bright-indoor-beige"
    presets_file: str | None = None  # YAML/JSON of presets (ours or the authors' format)
    num_per_product: int = 1  # images per product
    seed: int = 0  # run seed; each image's seed derives from (seed, product, attempt)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)  # C2PA and watermark (README)

    @property
    def prompt_preset(self) -> str:
        """The prompt preset used where a product names none: `preset`, else the model preset's own."""
        if self.preset:
            return self.preset
        entry = find_entry("model", self.model.model)  # the registry, not generation.models: no cycle
        model = entry.load() if entry is not None else None
        return (model.prompt_preset if model else None) or DEFAULT_PROMPT_PRESET

    def __post_init__(self) -> None:
        check(self.num_per_product >= 1, f"num_per_product={self.num_per_product} must be >= 1")
        check(0 <= self.seed < 2**63, f"seed={self.seed} must be in [0, 2**63)")


def validate_generate_config(cfg: GenerateConfig) -> None:
    """Check a whole config before a run writes anything: every numeric range (again, as the fields may
    have been changed since the config was built), that the presets file is readable and that the
    prompt preset exists (in it, or built in). Raises ValueError naming the bad value and the fix."""
    from reliable_ad.generation.prompts import get_preset, load_presets

    for section in (cfg.model, cfg.sampling, cfg.product, cfg.speed, cfg):
        section.__post_init__()
    cfg.provenance.__post_init__()
    if cfg.provenance.c2pa and cfg.provenance.c2pa_cert is not None:
        from reliable_ad.generation.c2pa_sign import load_identity

        load_identity(cfg.provenance.c2pa_cert, cfg.provenance.c2pa_key)  # names a missing or bad file and the fix
    if cfg.presets_file is not None:
        load_presets(cfg.presets_file)  # a missing, unreadable or invalid file names itself and the problem
    get_preset(cfg.prompt_preset, cfg.presets_file)  # an unknown name lists the presets there are


def upgrade_stored_config(old: dict) -> dict:
    """A `generate` config.json written by an older reliable-ad, in today's names, so that a run folder
    made before a rename resumes (and one made with other settings is still refused):
    - ``model.lora`` was one path (with ``model.lora_scale``); it is a list of {path, scale} now;
    - ``model.controlnet_config`` did not exist (None: the same loading);
    - ``product.box_alpha_threshold`` did not exist: the product box then took every pixel with alpha
      > 0, which is threshold 1 (today's default, the authors' 128, is a different crop)."""
    model = old.get("model")
    if isinstance(model, dict):
        if isinstance(model.get("lora"), str):
            model["lora"] = [{"path": model["lora"], "scale": model.get("lora_scale", 0.8)}]
        model.setdefault("controlnet_config", None)  # new; None is what older runs did
    product = old.get("product")
    if isinstance(product, dict) and "box_alpha_threshold" not in product:
        product["box_alpha_threshold"] = 1
    if "provenance" not in old:  # new: older runs resume with today's default marking
        old["provenance"] = to_dict(ProvenanceConfig())
    upgrade_stored_sampling(old)
    return old


def upgrade_stored_sampling(config: dict) -> dict:
    """``sampling.guidance_rescale`` did not exist: 0 (off) is what older runs did. For any stored config
    with a ``sampling`` section (`generate`, `run`'s generation, `rfft train`)."""
    sampling = config.get("sampling")
    if isinstance(sampling, dict):
        sampling.setdefault("guidance_rescale", 0.0)
    return config
