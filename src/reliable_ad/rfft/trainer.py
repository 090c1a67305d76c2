"""The RFFT trainer (docs/method.md §5): fine-tune the ControlNet (or LoRA adapters) with the judge's
feedback F_AC = mean -log p(Available), regularised by the Consistent Condition L_CC (or, for
comparison, by nothing (ReFL), a KL-style penalty, or the denoising loss on real ads).

`RFFTTrainer` owns one run: the step, the loop, start or resume, validation and the collapse
monitor's actions, checkpoints, and the export at the end. Multi-process runs (`accelerate launch`)
average gradients explicitly before each optimizer step instead of wrapping models in DDP: the
sampler calls the UNet and ControlNet directly inside its loop, which DDP's forward hooks would not see.

Run folder::

    config.json                 the resolved RFFTConfig (a resumed run must match it, see RESUME_IDENTITY)
    logs/metrics.jsonl          "train" and "validation" records; logs/tensorboard/ when installed
    checkpoints/step_XXXXXXXX/  reliable_ad.training's format: accelerate's state (optimizer, LR
                                schedule, grad scaler, RNG) + trainable.safetensors + trainer_state.json
    validation/step_XXXXXXX.png the original model's and the student's validation images
    export/                     the trained model for `reliable-ad generate` (rfft/export.py)
    stopped.json                when the collapse monitor ended the run; a rerun then only re-exports
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from safetensors.torch import load_file, save_file

from reliable_ad.core.config import to_dict
from reliable_ad.core.io import atomic_write_bytes, atomic_write_json
from reliable_ad.generation.config import upgrade_stored_sampling
from reliable_ad.generation.seeds import derive_seed, torch_generator
from reliable_ad.generation.weighting import encode_prompt_pair, encode_weighted_prompts
from reliable_ad.rfft.config import RFFTConfig
from reliable_ad.rfft.data import RealAd, TrainItem, batch_indices, read_items, read_real_ads
from reliable_ad.rfft.export import export_trained
from reliable_ad.rfft.feedback import RFNetJudge, judge_decide, last_decisions
from reliable_ad.rfft.losses import (
    WeightedReward,
    consistent_condition_loss,
    denoising_loss,
    feedback_loss,
    guidance_direction,
    kl_penalty,
    reward_terms,
    total_loss,
)
from reliable_ad.rfft.sampler import ControlNetInpaintSampler, GradedStep, SamplingState
from reliable_ad.rfft.trainable import frozen_dtype_for, setup_trainable
from reliable_ad.rfft.validation import CollapseMonitor, background_distance, background_diversity, image_grid
from reliable_ad.training.accelerator import make_accelerator
from reliable_ad.training.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint, save_checkpoint
from reliable_ad.training.resume import check_resume_config, write_run_config
from reliable_ad.training.runlog import RunLog

logger = logging.getLogger(__name__)

STOPPED = "stopped.json"  # written when the collapse monitor ends a run; a rerun then only re-exports
TRAINABLE_FILE = "trainable.safetensors"  # in each checkpoint: the trainable parameters (weights-only loads)

# What a resumed run must share with the run it resumes: every section but validation, less the
# settings that only say how long to run and how often to log or checkpoint.
RESUME_IDENTITY = tuple(f.name for f in fields(RFFTConfig) if f.name != "validation")
RESUME_MAY_CHANGE = ("optim.max_steps", "runtime.log_every", "runtime.checkpoint_every", "runtime.keep_checkpoints",
                     "runtime.tensorboard")


def paste_product(images01: torch.Tensor, product_rgb01: torch.Tensor, alpha01: torch.Tensor) -> torch.Tensor:
    """Differentiable paste-back: the product's own colour over the generated image with the undilated
    soft alpha (the tensor form of `data.product.paste_back`). Images (B, 3, S, S) in [0, 1],
    alpha (B, 1, S, S) in [0, 1]; gradient reaches `images01` where alpha < 1."""
    return alpha01 * product_rgb01 + (1.0 - alpha01) * images01


def build_optimizer(optim, params: list[torch.nn.Parameter]):
    kwargs = dict(lr=optim.learning_rate, betas=tuple(optim.betas), weight_decay=optim.weight_decay, eps=optim.eps)
    if optim.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ImportError("optim.optimizer=adamw8bit needs bitsandbytes: pip install bitsandbytes") from e
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


@dataclass
class TrainSummary:
    out_dir: Path
    step: int
    stopped: str | None = None  # None: reached optim.max_steps; else why it stopped (collapse action)
    exported: dict[str, str] = field(default_factory=dict)
    failed_products: dict[str, str] = field(default_factory=dict)
    validations: list[dict] = field(default_factory=list)
    main_process: bool = True  # False on the other processes of a multi-process run


class RFFTTrainer:
    """Holds the models, optimizer and counters of one RFFT run; `train()` runs or resumes it.

    `judge(ads01, product01, captions) -> (B,) log p(Available)` is injected (see feedback.py);
    `rewards` are extra `WeightedReward`s. Build from files with `from_config`.
    """

    paste = staticmethod(paste_product)

    def __init__(self, cfg: RFFTConfig, out_dir: str | Path, *, pipe, info: dict, judge,
                 train_items: Sequence[TrainItem], val_items: Sequence[TrainItem] = (),
                 real_ads: Sequence[RealAd] | None = None, rewards: Sequence[WeightedReward] = (),
                 accelerator=None, failed_products: dict[str, str] | None = None):
        if not train_items:
            raise ValueError("train_items is empty; RFFT needs at least one product")
        if cfg.loss.regularizer == "denoising" and not real_ads:
            raise ValueError("loss.regularizer=denoising needs real ads: set data.real_ads to a JSONL of ads")
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.accelerator = accelerator or make_accelerator(cfg.runtime)
        self.device = self.accelerator.device
        self.info = dict(info)
        self.size = cfg.sampling.size or int(info.get("native_size", 512))
        pipe.to(self.device)
        self.frozen_dtype = frozen_dtype_for(cfg.trainable.frozen_dtype, self.device, self.accelerator.mixed_precision)
        self.trainable = setup_trainable(pipe, cfg.trainable, frozen_dtype=self.frozen_dtype)
        self.pipe = pipe
        self.sampler = ControlNetInpaintSampler(pipe)
        self.judge = judge
        self.rewards = list(rewards)
        self.train_items, self.val_items = list(train_items), list(val_items)
        self.real_ads = list(real_ads or [])
        self.failed_products = dict(failed_products or {})
        if cfg.validation.every and not self.val_items:
            logger.warning("no held-out products: validation and the collapse monitor are off; set "
                           "data.validation_products or data.validation_fraction > 0 with at least 2 products")
        optimizer = build_optimizer(cfg.optim, self.trainable.parameters())
        warmup = cfg.optim.warmup_steps
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
        self.optimizer = self.accelerator.prepare(optimizer)
        self.accelerator.register_for_checkpointing(self.lr_scheduler)  # stepped by us, once per optimizer step
        self.step = 0  # optimizer steps done
        self.micro_step = 0  # micro-batches done (on each process)
        self.monitor = CollapseMonitor(cfg.validation.collapse)
        self.validations: list[dict] = []
        self.saved_steps: set[int] = set()  # steps checkpointed in this run folder
        self.log = RunLog(self.out_dir, tensorboard=cfg.runtime.tensorboard, enabled=self.accelerator.is_main_process,
                          config=to_dict(cfg))
        self._reference = None  # the original model's validation images, made once

    @classmethod
    def from_config(cls, cfg: RFFTConfig, out_dir: str | Path, *, judge=None,
                    rewards: Sequence[WeightedReward] = (), accelerator=None) -> RFFTTrainer:
        """Load the generator, products, real ads, judge (RFNet unless one is given) and rewards."""
        from reliable_ad.generation.models import load_pipeline, set_scheduler  # diffusers: loaded when used

        accelerator = accelerator or make_accelerator(cfg.runtime)
        pipe, info = load_pipeline(replace(cfg.model, device=str(accelerator.device), dtype="fp32"))
        set_scheduler(pipe, cfg.sampling.scheduler)
        size = cfg.sampling.size or int(info["native_size"])
        train, val, failed = read_items(cfg.data, size)
        real_ads = read_real_ads(cfg.data.real_ads, size, cfg.data) if cfg.loss.regularizer == "denoising" and \
            cfg.data.real_ads else None
        if judge is None:
            if cfg.feedback.rfnet is None:
                raise ValueError("feedback.rfnet is not set: give a trained RFNet (folder or hub id); "
                                 "'tiny' builds a random one, for smoke tests only")
            judge = RFNetJudge.from_pretrained(cfg.feedback.rfnet, depth=cfg.feedback.depth,
                                               salience=cfg.feedback.salience, device=accelerator.device,
                                               acceptance=cfg.feedback.acceptance, threshold=cfg.feedback.threshold)
        rewards = list(rewards) + [build_reward(r) for r in cfg.loss.rewards]
        return cls(cfg, out_dir, pipe=pipe, info=info, judge=judge, train_items=train, val_items=val,
                   real_ads=real_ads, rewards=rewards, accelerator=accelerator, failed_products=failed)

    # --- prompts and batches -------------------------------------------------------------------------

    def _encode(self, prompts: list[str], negatives: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        te = self.pipe.text_encoder
        return encode_prompt_pair(self.pipe.tokenizer, te, prompts, negatives,
                                  clip_skip=self.cfg.sampling.diffusers_clip_skip, device=self.device, dtype=te.dtype)

    def _empty_like(self, embeds: torch.Tensor) -> torch.Tensor:
        """Embeddings of the empty prompt, as many 77-token chunks as `embeds` has (A1111 padding)."""
        te = self.pipe.text_encoder
        chunk = encode_weighted_prompts(self.pipe.tokenizer, te, [""], clip_skip=self.cfg.sampling.diffusers_clip_skip,
                                        device=self.device, dtype=te.dtype)
        return chunk.repeat(embeds.shape[0], embeds.shape[1] // chunk.shape[1], 1)

    def prepare_items(self, items: Sequence[TrainItem], seeds: Sequence[int]) -> SamplingState:
        """A sampling state for these products with these per-image seeds; each image's prompt is its
        preset rendered with its seed (slots such as the wall colour vary with the seed)."""
        rendered = [it.preset.render(int(s), caption=it.caption) for it, s in zip(items, seeds)]
        pos, neg = self._encode([r.prompt for r in rendered], [r.negative_prompt for r in rendered])
        s = self.cfg.sampling
        return self.sampler.prepare(
            [it.prepared.image for it in items], [it.prepared.mask for it in items],
            [it.prepared.control for it in items], pos, neg, height=self.size, width=self.size,
            num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale,
            guidance_rescale=s.guidance_rescale, eta=s.eta,
            controlnet_conditioning_scale=s.controlnet_conditioning_scale, generator=[torch_generator(x) for x in seeds],
        )

    def product_tensors(self, items: Sequence[TrainItem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(product colour (B, 3, S, S), undilated alpha (B, 1, S, S), I_o (B, 3, S, S)), all in [0, 1]."""
        rgb = torch.stack([torch.from_numpy(it.prepared.placed.rgb).permute(2, 0, 1) for it in items]).float() / 255
        alpha = torch.stack([torch.from_numpy(it.prepared.alpha)[None] for it in items]).float() / 255
        product = torch.stack([it.product01 for it in items])
        return rgb.to(self.device), alpha.to(self.device), product.to(self.device)

    def _micro_batch(self, micro_step: int) -> tuple[list[TrainItem], list[int], int]:
        acc, cfg = self.accelerator, self.cfg
        idx = batch_indices(len(self.train_items), cfg.optim.batch_size, micro_step, seed=cfg.runtime.seed,
                            process_index=acc.process_index, num_processes=acc.num_processes)
        key = f"rfft/{acc.process_index}/{micro_step}"
        seeds = [derive_seed(cfg.runtime.seed, key, k) for k in range(len(idx))]
        start, end = cfg.rf_interval
        t_index = start + derive_seed(cfg.runtime.seed, key, -1) % (end - start)
        return [self.train_items[i] for i in idx], seeds, t_index

    # --- the RFFT step -------------------------------------------------------------------------------

    def training_step(self, micro_step: int) -> dict[str, float]:
        """One micro-batch: forward, loss, backward (scaled for accumulation). Returns its metrics."""
        cfg, sampler = self.cfg, self.sampler
        reg_kind = cfg.loss.regularizer
        # 1. products, prompts, per-image seeds and the graded step t, all derived from (seed, micro-step)
        items, seeds, t_index = self._micro_batch(micro_step)
        # 2. prepare the batch as the pipeline does (canvas latents, mask, control, x_T)
        state = self.prepare_items(items, seeds)
        empty = self._empty_like(state.prompt_embeds) if reg_kind == "consistent_condition" and \
            cfg.loss.cc_uncond == "empty" else None
        with self.accelerator.autocast():
            # 3. denoise without gradient from x_T to x_t, t drawn from the RF interval
            latents = sampler.denoise(state, stop=t_index)
            # 4. one step with gradient under CFG (the ControlNet on every half); x0 predicted from x_t
            graded = sampler.graded_step(state, t_index, latents, extra_embeds=[empty] if empty is not None else [])
            # 5. decode x0 with the VAE: [-1, 1] -> [0, 1]
            generated01 = sampler.to_unit_range(sampler.decode(graded.pred_x0)).float()
            # 6. paste the product back, differentiably, with the undilated alpha
            rgb01, alpha01, product01 = self.product_tensors(items)
            ads01 = paste_product(generated01, rgb01, alpha01)
            # 7. feedback: log p(Available) from the judge (RFNet; depth/salience detached, see feedback.py)
            log_p = self.judge(ads01, product01, [it.caption for it in items])
            f_ac = feedback_loss(log_p)
            # 8. regulariser against the original model (L_CC by default)
            reg = self._regularizer(reg_kind, state, graded, empty, micro_step)
            # 9. extra rewards on the pasted ads
            rewards = reward_terms(ads01, self.rewards)
            loss = total_loss(f_ac, available_weight=cfg.loss.available_weight, regularizer=reg, beta=cfg.loss.beta,
                              rewards=rewards, reward_weights={r.name: r.weight for r in self.rewards})
        # 10. backward, scaled for gradient accumulation (the optimizer steps every N micro-batches)
        self.accelerator.backward(loss / cfg.optim.gradient_accumulation_steps)
        p_available = log_p.detach().exp()
        metrics = {"loss": float(loss.detach()), "f_ac": float(f_ac.detach()), "p_available": float(p_available.mean()),
                   "accepted": float(last_decisions(self.judge, p_available).float().mean()), "t_index": float(t_index)}
        if reg is not None:
            metrics[reg_kind] = float(reg.detach())
        metrics.update({f"reward/{k}": float(v.detach()) for k, v in rewards.items()})
        return metrics

    def _regularizer(self, kind: str, state: SamplingState, graded: GradedStep, empty, micro_step: int):
        if kind == "none":
            return None
        if kind == "denoising":
            return self._denoising_term(micro_step)
        teacher_sets = [state.negative_prompt_embeds, state.prompt_embeds] if kind == "kl" or empty is None else \
            [empty, state.prompt_embeds]
        with torch.no_grad(), self.trainable.teacher.active() as controlnet:
            t_uncond, t_text = self.sampler.predict_noise(state, graded.timestep, graded.latents, teacher_sets,
                                                          controlnet=controlnet)
        if kind == "kl":
            guided = state.guide(t_uncond, t_text) if state.do_classifier_free_guidance else t_text
            return kl_penalty(graded.noise_pred, guided)
        student_uncond = graded.eps_extra[0] if empty is not None else graded.eps_uncond
        return consistent_condition_loss(guidance_direction(graded.eps_text, student_uncond),
                                         guidance_direction(t_text, t_uncond))

    def _denoising_term(self, micro_step: int) -> torch.Tensor:
        """The diffusion loss of the student on real ads at random timesteps (a classic regulariser)."""
        cfg, sampler = self.cfg, self.sampler
        idx = batch_indices(len(self.real_ads), cfg.optim.batch_size, micro_step, seed=cfg.runtime.seed + 1,
                            process_index=self.accelerator.process_index,
                            num_processes=self.accelerator.num_processes)
        ads = [self.real_ads[i] for i in idx]
        seeds = [derive_seed(cfg.runtime.seed, f"rfft-real/{self.accelerator.process_index}/{micro_step}", k)
                 for k in range(len(ads))]
        pos, neg = self._encode([a.prompt for a in ads], [a.negative_prompt for a in ads])
        state = sampler.prepare([a.prepared.image for a in ads], [a.prepared.mask for a in ads],
                                [a.prepared.control for a in ads], pos, neg, height=self.size, width=self.size,
                                num_inference_steps=cfg.sampling.num_inference_steps, guidance_scale=1.0,
                                generator=[torch_generator(s) for s in seeds])
        gens = [torch_generator(s + 1) for s in seeds]
        with torch.no_grad():
            pixels = self.pipe.image_processor.preprocess([a.image for a in ads], height=self.size, width=self.size)
            x0 = self.pipe._encode_vae_image(pixels.to(self.device, self.frozen_dtype), generator=gens)
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(x0)
        n_train = state.scheduler.config.num_train_timesteps
        t = torch.tensor([int(torch.randint(0, n_train, (1,), generator=g)) for g in gens], device=self.device)
        noisy = state.scheduler.add_noise(x0, noise, t)
        eps = sampler.predict_noise(state, t, noisy, [state.prompt_embeds])[0]
        target = noise if state.scheduler.config.prediction_type == "epsilon" else \
            state.scheduler.get_velocity(x0, noise, t)
        return denoising_loss(eps, target)

    # --- the loop ------------------------------------------------------------------------------------

    def optimizer_step(self) -> float | None:
        """Average gradients across processes, clip, step optimizer and LR schedule; returns the grad norm."""
        acc, params = self.accelerator, self.trainable.parameters()
        if acc.num_processes > 1:  # see the module docstring: no DDP, so average gradients here
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.copy_(acc.reduce(p.grad, reduction="mean"))
        norm = None
        if self.cfg.optim.max_grad_norm is not None:
            norm = float(acc.clip_grad_norm_(params, self.cfg.optim.max_grad_norm))
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def run_steps(self, n: int) -> list[dict]:
        """`n` optimizer steps without validation or checkpoints (benchmarks, tests); their metrics."""
        out = []
        for _ in range(n):
            out.append(self._one_optimizer_step())
        return out

    def _one_optimizer_step(self) -> dict:
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        accum = self.cfg.optim.gradient_accumulation_steps
        for _ in range(accum):
            for k, v in self.training_step(self.micro_step).items():
                sums[k] = sums.get(k, 0.0) + v / accum
            self.micro_step += 1
        norm = self.optimizer_step()
        self.step += 1
        if self.accelerator.num_processes > 1:  # log the mean over all processes' micro-batches
            keys = sorted(sums)
            means = self.accelerator.reduce(torch.tensor([sums[k] for k in keys], device=self.device), "mean")
            sums = dict(zip(keys, means.tolist()))
        record = {**sums, "lr": self.lr_scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        if norm is not None:
            record["grad_norm"] = norm
        if self.device.type == "cuda":
            record["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return record

    def train(self, *, progress: bool = False) -> TrainSummary:
        """Run (or resume) until optim.max_steps, validating, checkpointing and exporting as configured."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        stopped = self._resume_or_start()
        if stopped is None and cfg.validation.every and self.val_items and not any(
                v["step"] == self.step for v in self.validations):
            stopped = self._validate_and_act()
        bar = tqdm(total=cfg.optim.max_steps, initial=min(self.step, cfg.optim.max_steps), desc="rfft", unit="step",
                   disable=not (progress and self.accelerator.is_main_process))
        while stopped is None and self.step < cfg.optim.max_steps:
            record = self._one_optimizer_step()
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", p_available=f"{record['p_available']:.3f}")
            if self.step % cfg.runtime.log_every == 0 or self.step == cfg.optim.max_steps:
                self.log.log(self.step, record, kind="train")
                logger.info("step %d: %s", self.step, {k: round(v, 4) for k, v in record.items()})
            due = cfg.validation.every and self.val_items and (
                self.step % cfg.validation.every == 0 or self.step == cfg.optim.max_steps)
            if due:
                stopped = self._validate_and_act()
            self.maybe_checkpoint(force=self.step == cfg.optim.max_steps)
        bar.close()
        return self._finish(stopped)

    # --- the run: start or resume, checkpoints, validation, the end ------------------------------------

    def write_config(self) -> None:
        """config.json of the run (main process), as `train` writes it after the resume check."""
        if self.accelerator.is_main_process:
            write_run_config(self.out_dir, to_dict(self.cfg))

    def _resume_or_start(self) -> str | None:
        """Check the run folder and load the newest checkpoint if there is one; returns a stop reason when
        the run was already ended by the collapse monitor (the rerun then only re-exports)."""
        out = self.out_dir
        check_resume_config(out, to_dict(self.cfg), RESUME_IDENTITY, ignore=RESUME_MAY_CHANGE,
                            upgrade=upgrade_stored_sampling, write=self.accelerator.is_main_process)
        found = list_checkpoints(out)
        self.saved_steps = {s for s, _ in found}  # read by every process before any writes: they agree
        stopped_path = out / STOPPED
        if stopped_path.is_file():
            stopped = json.loads(stopped_path.read_text(encoding="utf-8"))
            self._load_weights(checkpoint_dir(out, stopped["weights_step"]))
            self.step = int(stopped["step"])
            logger.warning("%s: the run was stopped (%s); exporting its weights again", out, stopped["reason"])
            return stopped["reason"]
        if found:
            step, folder = found[-1]
            self._restore(folder)
            logger.info("resumed %s at step %d", out, step)
        return None

    def checkpoint_state(self) -> dict:
        """The counters a checkpoint stores beside accelerate's state and the trainable weights."""
        return {"micro_step": self.micro_step, "monitor": self.monitor.state_dict(), "validations": self.validations}

    def _restore(self, folder: Path) -> None:
        """Everything of a checkpoint: optimizer, LR schedule, grad scaler and RNG states (accelerate's),
        the trainable weights and the counters."""
        state = load_checkpoint(self.accelerator, folder)
        self._load_weights(folder)
        self.step = int(state["step"])
        self.micro_step = int(state["micro_step"])
        self.monitor.load_state_dict(state.get("monitor", {}))
        self.validations = list(state.get("validations", []))

    def _load_weights(self, folder: Path) -> None:
        self.trainable.load_state_dict(load_file(str(Path(folder) / TRAINABLE_FILE)))

    def save(self) -> None:
        """Checkpoint the current step (every process takes part; the main process writes) and prune old ones,
        never the last healthy step (the collapse monitor's roll-back target)."""
        healthy = self.monitor.last_healthy_step
        save_checkpoint(self.accelerator, self.out_dir, self.step, self.checkpoint_state(),
                        keep=self.cfg.runtime.keep_checkpoints, protect=() if healthy is None else (healthy,),
                        extra=lambda folder: save_file(self.trainable.state_dict(), str(folder / TRAINABLE_FILE)))
        self.saved_steps.add(self.step)

    def maybe_checkpoint(self, *, force: bool = False) -> None:
        """Save when due (every `checkpoint_every` steps, or `force`) unless this step is saved already.

        Decided from in-memory state only, so that all processes agree without racing on the disk.
        """
        every = self.cfg.runtime.checkpoint_every
        if self.step not in self.saved_steps and (force or (every and self.step % every == 0)):
            self.save()

    @torch.no_grad()
    def run_validation(self) -> dict:
        """Full generations of the held-out products by the student and (once) by the original model:
        available rate, background diversity, distance to the original, and a grid PNG."""
        vcfg, seed = self.cfg.validation, self.cfg.runtime.seed
        items = self.val_items[: vcfg.num_products]
        jobs = [(it, derive_seed(seed, f"rfft-val/{it.key}", k)) for it in items for k in range(vcfg.images_per_product)]
        bs = self.cfg.sampling.batch_size
        student, alphas, accepted = [], [], []
        make_reference = self._reference is None
        reference, ref_accepted = [], []
        with self.accelerator.autocast():
            for start in range(0, len(jobs), bs):
                batch_items = [it for it, _ in jobs[start:start + bs]]
                seeds = [s for _, s in jobs[start:start + bs]]
                rgb01, alpha01, product01 = self.product_tensors(batch_items)
                captions = [it.caption for it in batch_items]
                ads = self.paste(self.sampler.sample(self.prepare_items(batch_items, seeds)), rgb01, alpha01)
                student.append(ads)
                alphas.append(alpha01)
                accepted.append(judge_decide(self.judge, ads, product01, captions).float())
                if make_reference:
                    with self.trainable.teacher.active() as controlnet:
                        ref = self.sampler.sample(self.prepare_items(batch_items, seeds), controlnet=controlnet)
                    ref = self.paste(ref, rgb01, alpha01)
                    reference.append(ref)
                    ref_accepted.append(judge_decide(self.judge, ref, product01, captions).float())
        student, alphas, accepted = torch.cat(student), torch.cat(alphas), torch.cat(accepted)
        if make_reference:
            reference = torch.cat(reference)
            self._reference = {
                "images": reference.cpu(),
                "available_rate": float(torch.cat(ref_accepted).mean()),
                "diversity": background_diversity(reference, alphas) if len(reference) > 1 else float("nan"),
            }
        ref = self._reference
        diversity = background_diversity(student, alphas) if len(student) > 1 else float("nan")
        result = {
            "available_rate": float(accepted.mean()),
            "original_available_rate": ref["available_rate"],
            "diversity": diversity,
            "diversity_ratio": diversity / ref["diversity"] if ref["diversity"] > 0 else float("nan"),
            "distance_to_original": background_distance(student, ref["images"].to(student.device), alphas),
            "images": len(student),
        }
        if vcfg.grid:
            png = image_grid([ref["images"], student.cpu()])
            path = self.out_dir / "validation" / f"step_{self.step:07d}.png"
            atomic_write_bytes(path, png)
            result["grid"] = str(path.relative_to(self.out_dir))
        return result

    def _validate_and_act(self) -> str | None:
        """Validate on the main process, feed the collapse monitor, and act; returns a stop reason or None."""
        acc = self.accelerator
        decision = [None, None]  # (action, step to roll back to)
        if acc.is_main_process:
            result = self.run_validation()
            ratio = result["diversity_ratio"]
            collapsed, action = self.monitor.update(self.step, ratio if ratio == ratio else 1.0,
                                                    result["distance_to_original"])
            result.update(step=self.step, collapsed=collapsed)
            self.validations.append(result)
            self.log.log(self.step, {k: v for k, v in result.items() if k != "step"}, kind="validation")
            logger.info("validation at step %d: %s", self.step, result)
            if collapsed:
                logger.warning("step %d: backgrounds look collapsed (diversity ratio %.3f, distance %.3f); strike "
                               "%d/%d", self.step, ratio, result["distance_to_original"], self.monitor.strikes,
                               self.cfg.validation.collapse.patience)
            decision = [action, self.monitor.last_healthy_step]
        if acc.num_processes > 1:
            broadcast_object_list(decision)
        action, healthy = decision
        if healthy == self.step:
            self.maybe_checkpoint(force=True)  # a healthy state is the roll-back target: keep it on disk
        if action is None or action == "warn":
            return None
        if action == "rollback" and healthy is not None:
            acc.wait_for_everyone()
            self._load_weights(checkpoint_dir(self.out_dir, healthy))
            return f"collapse: rolled back to step {healthy}"
        return "collapse: stopped"

    def _finish(self, stopped: str | None) -> TrainSummary:
        """Export the weights (main process), record why the run stopped, close the logs."""
        acc = self.accelerator
        exported = {}
        if stopped is not None and not (self.out_dir / STOPPED).is_file():
            weights_step = self.monitor.last_healthy_step if "rolled back" in stopped else self.step
            if acc.num_processes > 1:
                holder = [weights_step]
                broadcast_object_list(holder)
                weights_step = holder[0]
            if weights_step == self.step:
                self.maybe_checkpoint(force=True)
            if acc.is_main_process:
                atomic_write_json(self.out_dir / STOPPED, {"reason": stopped, "step": self.step,
                                                           "weights_step": weights_step})
        if acc.is_main_process:
            exported = export_trained(self.out_dir, self.trainable, step=self.step, info=self.info)
        acc.wait_for_everyone()
        self.log.close()
        return TrainSummary(self.out_dir, self.step, stopped, exported, self.failed_products, self.validations,
                            main_process=acc.is_main_process)


def build_reward(rc) -> WeightedReward:
    """A reward from its config: import `module:factory`, call it with kwargs."""
    import importlib

    module_name, _, attr = rc.target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"reward {rc.name!r}: cannot import {rc.target!r} ({e}); install the package that "
                          "provides it (e.g. pip install image-reward for ImageReward)") from e
    return WeightedReward(rc.name, factory(**rc.kwargs), rc.weight)
