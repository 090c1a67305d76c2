"""Recurrent Generation on SynthAd (docs/method.md §4, supplemental Algorithm 1): how the share of products with a
usable ad grows with the attempt budget k = 1..K, by RFNet's verdict and by the oracle's, under the
paper's retries (fresh noise) and under defect-aware retries (`reliable_ad.recurrent.policies`).

Measurement device (deliberate): the real loop (`recurrent_generation` with the real `plan_attempt`)
runs with an acceptor that never accepts, so every product gets all K attempts, and RFNet's real
acceptance (argmax = Available) is recorded on each. An attempt's plan depends on the labels of the
earlier verdicts, never on acceptance, so a product's first k attempts are exactly those a run with
budget k makes up to its first accepted image: one run gives the whole curve. Identical attempts of
the two policies (same seed, prompt and scale) are generated and judged once.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from reliable_ad.recurrent.config import RETRY_POLICIES, RecurrentConfig
from reliable_ad.recurrent.loop import make_acceptor, recurrent_generation
from reliable_ad.recurrent.policies import plan_attempt
from experiments.studies.common import (
    ExperimentContext,
    Stopwatch,
    load_generator,
    load_inspector,
    make_products,
    oracle,
    prepare,
    prompt_preset,
    study_result,
    sub_seed,
    table,
)
from reliable_ad.core.io import atomic_write_json, atomic_write_text

AVAILABLE = "Available"
POLICY_NAMES = {"reseed": "reseed (paper)", "defect_aware": "defect-aware"}
# The SynthAd models are too small for intra-op parallelism: on 2 cores shared with other jobs, 2 torch
# threads ran generation and RFFT steps 5-20x slower than 1 (threads wait for each other at every op).
STUDY_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int = STUDY_THREADS):
    """Run the block with `n` torch intra-op threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class RecurrentStudySettings:
    products: int  # fresh SynthAd products, each run under every policy
    max_attempts: int = 5  # K, the attempt budget (the paper's Algorithm 1)
    batch_size: int = 8  # images per generator call; the rolling queue keeps batches full
    policies: tuple[str, ...] = RETRY_POLICIES  # reseed (the paper) and defect_aware (ours)

    def __post_init__(self) -> None:
        if self.products < 1 or self.max_attempts < 1 or self.batch_size < 1:
            raise ValueError(f"products={self.products}, max_attempts={self.max_attempts} and "
                             f"batch_size={self.batch_size} must all be >= 1")
        bad = [p for p in self.policies if p not in RETRY_POLICIES]
        if bad or not self.policies:
            raise ValueError(f"policies={self.policies} must be a non-empty subset of {RETRY_POLICIES}")

    @classmethod
    def for_context(cls, ctx: ExperimentContext) -> RecurrentStudySettings:
        if ctx.quick:
            return cls(products=3)
        # full: a product costs about 7.5 distinct images over both policies (the defect-aware attempts
        # equal the reseed ones until a defect changes an input), ~0.45 s each at 64 px and 25 steps on one
        # thread, plus RFNet's look: 80 products take about 10 minutes
        return cls(products=80)


@dataclass
class _Shot:
    """One generated and judged image; shared by the policies that plan the same attempt."""

    prompt: str
    slot_values: dict
    image_scale: float
    image: np.ndarray | None = None
    seconds: float = 0.0  # generation time of this image (its share of its batch)
    inspect_seconds: float = 0.0  # RFNet time of this image (its share of its batch)
    rfnet: object | None = None  # rfnet.inspector.Verdict
    oracle: object | None = None  # synthad.oracle.OracleVerdict


class _Trial:
    """`plan`, `generate` and `judge` of the recurrent loop for one retry policy: the real planner,
    the ctx generator with the synthad prompt preset, RFNet as the judge (the oracle looks on)."""

    def __init__(self, ctx: ExperimentContext, policy: str, settings: RecurrentStudySettings,
                 shots: dict, sw: Stopwatch):
        self.ctx, self.sw, self.shots = ctx, sw, shots
        self.preset = prompt_preset()
        self.config = RecurrentConfig(max_attempts=settings.max_attempts, retry_policy=policy)
        # as `reliable-ad run` plans: only the background slots step, from the values the last attempt used
        self.background = {n: v for n, v in self.preset.slots.items() if n in self.preset.background_slots}
        self.used_slots: dict[tuple[str, int], dict] = {}  # (product key, attempt) -> its slot values
        self.generator = load_generator(ctx)
        self.inspector = load_inspector(ctx)

    def plan(self, item, k, history):
        return plan_attempt(item.key, k, history, run_seed=self.ctx.seed, config=self.config,
                            base_scale=self.preset.image_scale, slots=self.background,
                            previous_slot_values=self.used_slots.get((item.key, k - 1)))

    def generate(self, planned) -> list[_Shot]:
        from reliable_ad.generation.generator import GenerationJob

        out, todo = [], []
        for item, attempt in planned:
            scale = float(attempt.variation.get("image_scale") or self.preset.image_scale)
            rendered = self.preset.render(attempt.seed, slot_values=attempt.variation.get("slot_values"),
                                           caption=item.caption)
            self.used_slots[(item.key, attempt.attempt)] = dict(rendered.slot_values)
            key = (item.key, attempt.seed, scale, rendered.prompt, rendered.negative_prompt)
            if key not in self.shots:
                self.shots[key] = _Shot(rendered.prompt, dict(rendered.slot_values), scale)
                prepared = prepare(item, self.generator.size, scale)
                todo.append((self.shots[key], GenerationJob(prepared, rendered.prompt, rendered.negative_prompt,
                                                            attempt.seed)))
            out.append(self.shots[key])
        if todo:
            with self.sw("generate"):
                results = self.generator.generate([job for _, job in todo])
            for (shot, _), result in zip(todo, results):
                shot.image, shot.seconds = result.image, float(result.seconds)
        return out

    def judge(self, planned, shots: list[_Shot]) -> list:
        new = [(item, shot) for (item, _), shot in zip(planned, shots) if shot.rfnet is None]
        if new:
            items = [item for item, _ in new]
            images = [shot.image for _, shot in new]
            t0 = time.perf_counter()
            with self.sw("rfnet"):
                verdicts = self.inspector.inspect([it.rgba for it in items], images, [it.caption for it in items])
            per_image = (time.perf_counter() - t0) / len(new)
            with self.sw("oracle"):
                masks = [prepare(it, self.generator.size, shot.image_scale).alpha for it, shot in new]
                truths = oracle().inspect([it.rgba for it in items], images, [it.caption for it in items],
                                          masks=masks)
            for (_, shot), verdict, truth in zip(new, verdicts, truths):
                shot.rfnet, shot.oracle, shot.inspect_seconds = verdict, truth, per_image
        return [shot.rfnet for shot in shots]


def _attempt_record(item, attempt, shot: _Shot, accepted: bool) -> dict:
    return {
        "product": item.key, "caption": item.caption, "attempt": attempt.attempt, "seed": attempt.seed,
        "variation": attempt.variation, "prompt": shot.prompt, "slots": shot.slot_values,
        "image_scale": shot.image_scale, "accepted": accepted,
        "rfnet": {"label": shot.rfnet.label, "p_available": round(float(shot.rfnet.p_available), 4)},
        "oracle": {"label": shot.oracle.label, "p_available": round(float(shot.oracle.p_available), 4),
                   "reasons": list(shot.oracle.reasons)},
        "seconds": round(shot.seconds, 4), "inspect_seconds": round(shot.inspect_seconds, 4),
    }


def run_policy(ctx: ExperimentContext, items: Sequence, policy: str, settings: RecurrentStudySettings,
               shots: dict, sw: Stopwatch) -> list[list[dict]]:
    """Every product's K attempts under `policy`, as attempt records in attempt order."""
    trial = _Trial(ctx, policy, settings, shots, sw)
    accept = make_acceptor("argmax")
    records: dict[str, list[dict]] = {item.key: [] for item in items}

    def on_result(item, attempt, shot, verdict, _never):
        records[item.key].append(_attempt_record(item, attempt, shot, bool(accept(verdict))))

    recurrent_generation(items, key=lambda it: it.key, plan=trial.plan, generate=trial.generate, judge=trial.judge,
                         accept=lambda verdict: False, max_attempts=settings.max_attempts,
                         batch_size=settings.batch_size, on_result=on_result)
    return [sorted(records[item.key], key=lambda r: r["attempt"]) for item in items]


# ----------------------------------------------------------------------------------------------
# Statistics: pure functions of the attempt records
# ----------------------------------------------------------------------------------------------


def shipped_index(attempts: Sequence[dict]) -> int:
    """The attempt the system ships from these: the first RFNet accepted, else the highest p(Available)."""
    for i, a in enumerate(attempts):
        if a["accepted"]:
            return i
    return max(range(len(attempts)), key=lambda i: attempts[i]["rfnet"]["p_available"])


def k_curves(products: Sequence[Sequence[dict]], max_attempts: int) -> dict[str, list[float]]:
    """For k = 1..K, shares of products with: an RFNet-accepted attempt within k (`rfnet`), an
    oracle-Available attempt within k (`oracle`), and an oracle-Available shipped image (`shipped`)."""
    if not products:
        raise ValueError("k_curves needs at least one product's attempts")
    out: dict[str, list[float]] = {"rfnet": [], "oracle": [], "shipped": []}
    for k in range(1, max_attempts + 1):
        firsts = [attempts[:k] for attempts in products]
        out["rfnet"].append(float(np.mean([any(a["accepted"] for a in f) for f in firsts])))
        out["oracle"].append(float(np.mean([any(a["oracle"]["label"] == AVAILABLE for a in f) for f in firsts])))
        out["shipped"].append(float(np.mean([f[shipped_index(f)]["oracle"]["label"] == AVAILABLE for f in firsts])))
    return out


def cost(products: Sequence[Sequence[dict]], max_attempts: int) -> dict[str, float | None]:
    """What the system spends with budget K: attempts and seconds (generation + RFNet) per product up to
    its first accepted image, attempts per accepted product, and how far RFNet's acceptance agrees with
    the oracle over all attempts."""
    used, seconds, accepted_at = [], [], []
    for attempts in products:
        first = next((i for i, a in enumerate(attempts[:max_attempts]) if a["accepted"]), None)
        stop = max_attempts if first is None else first + 1
        used.append(stop)
        seconds.append(sum(a["seconds"] + a["inspect_seconds"] for a in attempts[:stop]))
        if first is not None:
            accepted_at.append(first + 1)
    every = [a for attempts in products for a in attempts[:max_attempts]]
    acc = [a for a in every if a["accepted"]]
    good = [a for a in every if a["oracle"]["label"] == AVAILABLE]
    return {
        "mean_attempts_per_product": float(np.mean(used)),
        "seconds_per_product": float(np.mean(seconds)),
        "mean_attempts_per_accepted": float(np.mean(accepted_at)) if accepted_at else None,
        "single_attempt_oracle_rate": len(good) / len(every),
        "rfnet_precision": (sum(a["oracle"]["label"] == AVAILABLE for a in acc) / len(acc)) if acc else None,
        "rfnet_recall": (sum(a["accepted"] for a in good) / len(good)) if good else None,
        "changed_inputs": sum(bool(a["variation"]) for a in every) / len(every),
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _plot(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"rfnet": "#1565c0", "oracle": "#2e7d32", "shipped": "#c62828"}
    labels = {"rfnet": "RFNet accepted an image", "oracle": "oracle: an image is Available",
              "shipped": "oracle: the shipped image is Available"}
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False, sharey=True)
    for ax, (policy, c) in zip(axes[0], curves.items()):
        ks = list(range(1, len(c["rfnet"]) + 1))
        for metric, values in c.items():
            ax.plot(ks, [100 * v for v in values], marker="o", color=colors[metric], label=labels[metric])
        ax.set(xlabel="attempts k", xticks=ks, ylim=(0, 100), title=f"retries: {POLICY_NAMES.get(policy, policy)}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("% of products")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _summary(curves: dict, costs: dict, k: int) -> str:
    parts = []
    for policy, c in curves.items():
        parts.append(
            f"{POLICY_NAMES.get(policy, policy)}: RFNet accepts an image for {_pct(c['rfnet'][0])} of products at the "
            f"first attempt and {_pct(c['rfnet'][-1])} within {k}; the oracle finds an Available image among them for "
            f"{_pct(c['oracle'][0])} -> {_pct(c['oracle'][-1])}, and the image shipped is Available for "
            f"{_pct(c['shipped'][0])} -> {_pct(c['shipped'][-1])}, at {costs[policy]['mean_attempts_per_product']:.2f} "
            f"attempts per product; {_pct(costs[policy]['rfnet_precision'])} of the images RFNet accepts are "
            "Available to the oracle.")
    if "reseed" in curves and "defect_aware" in curves:
        d = curves["defect_aware"]["shipped"][-1] - curves["reseed"]["shipped"][-1]
        parts.append(f"Defect-aware retries change the shipped-image available rate at k={k} by {100 * d:+.0f} points "
                     "against reseeding" + (" (no difference)." if abs(d) < 1e-9 else "."))
    return " ".join(parts)


def _run_key(ctx: ExperimentContext, settings: RecurrentStudySettings, policy: str) -> dict:
    return json.loads(json.dumps({"ctx": ctx.to_dict(), "settings": asdict(settings), "policy": policy}))


def _load_policy(out_dir: Path, key: dict) -> tuple[list[list[dict]], float] | None:
    """A policy's attempt records from an earlier run with the same settings (its marker is written last)."""
    done, records = out_dir / f"done_{key['policy']}.json", out_dir / f"attempts_{key['policy']}.jsonl"
    if not (done.is_file() and records.is_file()):
        return None
    marker = json.loads(done.read_text(encoding="utf-8"))
    if marker.get("key") != key:
        return None
    by_product: dict[str, list[dict]] = {}
    for line in records.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_product.setdefault(record["product"], []).append(record)
    return [sorted(v, key=lambda r: r["attempt"]) for v in by_product.values()], float(marker["seconds"])


def run_study(ctx: ExperimentContext, out_dir: Path) -> dict:
    """Run both retry policies on fresh products; tables, the k-curve plot and per-attempt JSONL in `out_dir`.
    A policy finished by an earlier run with the same settings is read back, not rerun."""
    with torch_threads():
        return _run_study(ctx, Path(out_dir))


def _run_study(ctx: ExperimentContext, out_dir: Path) -> dict:
    settings = RecurrentStudySettings.for_context(ctx)
    sw = Stopwatch()
    product_seed = sub_seed(ctx.seed, "recurrent-study")
    items = make_products(settings.products, product_seed, prefix="r")
    shots: dict = {}
    curves, costs, policy_seconds = {}, {}, {}
    for policy in settings.policies:
        key = _run_key(ctx, settings, policy)
        cached = _load_policy(out_dir, key)
        if cached is None:
            t0 = time.perf_counter()
            products = run_policy(ctx, items, policy, settings, shots, sw)
            policy_seconds[policy] = time.perf_counter() - t0
            atomic_write_text(out_dir / f"attempts_{policy}.jsonl",
                              "".join(json.dumps(a) + "\n" for attempts in products for a in attempts))
            atomic_write_json(out_dir / f"done_{policy}.json", {"key": key, "seconds": policy_seconds[policy]})
        else:
            products, policy_seconds[policy] = cached
        curves[policy] = k_curves(products, settings.max_attempts)
        costs[policy] = cost(products, settings.max_attempts)

    K = settings.max_attempts
    rows = [[POLICY_NAMES.get(p, p), k, c["rfnet"][k - 1], c["oracle"][k - 1], c["shipped"][k - 1]]
            for p, c in curves.items() for k in range(1, K + 1)]
    k_table = table(["retry policy", "k", "RFNet: accepted within k", "oracle: Available within k",
                     "oracle: shipped image Available"], rows,
                    note=f"{settings.products} fresh SynthAd products, synthad prompt preset, K = {K}, RFNet "
                         f"{ctx.rfnet!r} accepting on argmax = Available. Shipped image: the first RFNet-accepted "
                         "attempt within k, else the attempt with the highest p(Available). Shares of products.")
    cost_rows = [[POLICY_NAMES.get(p, p), c["mean_attempts_per_product"], c["mean_attempts_per_accepted"],
                  c["seconds_per_product"], c["single_attempt_oracle_rate"], c["rfnet_precision"], c["rfnet_recall"],
                  c["changed_inputs"]] for p, c in costs.items()]
    cost_table = table(["retry policy", "attempts per product", "attempts per accepted product",
                        "seconds per product", "oracle Available per attempt", "RFNet precision (oracle)",
                        "RFNet recall (oracle)", "attempts with changed inputs"], cost_rows,
                       note="Attempts and seconds (generation + RFNet, per image) up to the first accepted image, "
                            f"at most {K}. Precision/recall of RFNet's acceptance against the oracle over all "
                            "attempts. Attempts identical under both policies were generated once.")
    figure = "available_within_k.png"
    _plot(curves, out_dir / figure)
    return study_result(
        {"Recurrent Generation: available within k attempts": k_table,
         "Recurrent Generation: cost and RFNet agreement with the oracle": cost_table},
        [figure], sum(policy_seconds.values()),
        {**asdict(settings), "policies": list(settings.policies), "product_seed": product_seed,
         "acceptance": "argmax", "prompt_preset": prompt_preset().name, "size": load_generator(ctx).size,
         "distinct_images_this_run": len(shots),
         "policy_seconds": {p: round(s, 2) for p, s in policy_seconds.items()},
         "section_seconds_this_run": {k: round(v, 2) for k, v in sw.seconds.items()}, **ctx.to_dict()},
        summary=_summary(curves, costs, K),
    )
