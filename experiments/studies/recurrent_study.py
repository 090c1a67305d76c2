"""Recurrent Generation on SynthAd (docs/method.md §4, supplemental Algorithm 1): how the share of products with a
usable ad grows with the attempt budget k = 1..K, by RFNet's verdict and by the oracle's, under the
paper's retries (fresh noise) and under defect-aware retries (`reliable_ad.recurrent.policies`), with
the two claims it tests (the `claims` of its result) decided by paired bootstraps over products.

Measurement device (deliberate): the real loop (`recurrent_generation` with the real `plan_attempt`)
runs with an acceptor that never accepts, so every product gets all K attempts, and RFNet's real
acceptance (argmax = Available) is recorded on each. An attempt's plan depends on the labels of the
earlier verdicts, never on acceptance, so a product's first k attempts are exactly those a run with
budget k makes up to its first accepted image: one run gives the whole curve. Identical attempts of
the two policies (same seed, prompt and scale) are generated and judged once.

The oracle's abstention (reliable_ad.synthad.decisive): an attempt counts as oracle-Available only
when the oracle calls it Available *decisively*; an abstained attempt counts as not Available. So
"oracle: Available within k" is a lower bound, and the share of products still *undecided* within k
(no decisive Available among their first k attempts, at least one abstention) is reported beside it:
the rate with every abstention resolved lies between the bound and the bound plus that share. Per k
the table also gives the abstention rate on the k-th attempts; per-attempt rates and RFNet's
agreement are over the decisive attempts only.
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
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
    judge_oracle_decisive,
    load_generator,
    load_inspector,
    make_products,
    prepare,
    prompt_preset,
    study_result,
    sub_seed,
    table,
)
from experiments.studies.report import make_claim
from experiments.synthad.gates import proportion
from reliable_ad.core.io import atomic_write_json, atomic_write_text

AVAILABLE = "Available"
POLICY_NAMES = {"reseed": "reseed (paper)", "defect_aware": "defect-aware"}
# The SynthAd models are too small for intra-op parallelism: on 2 cores shared with other jobs, 2 torch
# threads ran generation and RFFT steps 5-20x slower than 1 (threads wait for each other at every op).
STUDY_THREADS = 1
RECORD_VERSION = 2  # attempt records of version 1 (before the abstaining oracle) are not read back
BOOTSTRAP = 2000  # resamples of the products for the paired intervals


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
        # equal the reseed ones until a defect changes an input), ~0.3 s each at 64 px and 25 steps on one
        # idle core with RFNet's and the abstaining oracle's looks (0.8 s on a shared machine): 240 products
        # take about 9 minutes (25 shared); enough for paired differences of ~8 points to show
        return cls(products=240)


@dataclass
class _Shot:
    """One generated and judged image; shared by the policies that plan the same attempt."""

    key: str  # names the image: seeds the oracle's re-readings
    prompt: str
    slot_values: dict
    image_scale: float
    image: np.ndarray | None = None
    seconds: float = 0.0  # generation time of this image (its share of its batch)
    inspect_seconds: float = 0.0  # RFNet time of this image (its share of its batch)
    rfnet: object | None = None  # rfnet.inspector.Verdict
    oracle: object | None = None  # synthad.decisive.DecisiveVerdict


class _Trial:
    """`plan`, `generate` and `judge` of the recurrent loop for one retry policy: the real planner,
    the ctx generator with the synthad prompt preset, RFNet as the judge (the abstaining oracle looks on)."""

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
                name = f"{item.key}/{attempt.seed}/{scale:.4f}/{zlib.crc32(rendered.prompt.encode()):08x}"
                self.shots[key] = _Shot(name, rendered.prompt, dict(rendered.slot_values), scale)
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
                truths = [judge_oracle_decisive([it], [shot.image], [shot.key], image_scale=shot.image_scale)[0]
                          for it, shot in new]
            for (_, shot), verdict, truth in zip(new, verdicts, truths):
                shot.rfnet, shot.oracle, shot.inspect_seconds = verdict, truth, per_image
        return [shot.rfnet for shot in shots]


def _attempt_record(item, attempt, shot: _Shot, accepted: bool) -> dict:
    truth = shot.oracle
    return {
        "product": item.key, "caption": item.caption, "attempt": attempt.attempt, "seed": attempt.seed,
        "variation": attempt.variation, "prompt": shot.prompt, "slots": shot.slot_values,
        "image_scale": shot.image_scale, "accepted": accepted, "image_key": shot.key,
        "rfnet": {"label": shot.rfnet.label, "p_available": round(float(shot.rfnet.p_available), 4)},
        "oracle": {"label": truth.label, "p_available": round(float(truth.verdict.p_available), 4),
                   "reasons": list(truth.verdict.reasons), "decisive": truth.decisive,
                   "agreeing": f"{truth.agreeing}/{truth.checks}"},
        "seconds": round(shot.seconds, 4), "inspect_seconds": round(shot.inspect_seconds, 4),
    }


def run_policy(ctx: ExperimentContext, items: Sequence, policy: str, settings: RecurrentStudySettings,
               shots: dict, sw: Stopwatch) -> list[list[dict]]:
    """Every product's K attempts under `policy`, as attempt records in attempt order."""
    from tqdm.auto import tqdm

    trial = _Trial(ctx, policy, settings, shots, sw)
    accept = make_acceptor("argmax")
    records: dict[str, list[dict]] = {item.key: [] for item in items}
    bar = tqdm(total=len(items) * settings.max_attempts, desc=f"recurrent {policy}", unit="attempt",
               mininterval=10, leave=False)

    def on_result(item, attempt, shot, verdict, _never):
        records[item.key].append(_attempt_record(item, attempt, shot, bool(accept(verdict))))
        bar.update()

    with bar:
        recurrent_generation(items, key=lambda it: it.key, plan=trial.plan, generate=trial.generate,
                             judge=trial.judge, accept=lambda verdict: False, max_attempts=settings.max_attempts,
                             batch_size=settings.batch_size, on_result=on_result)
    return [sorted(records[item.key], key=lambda r: r["attempt"]) for item in items]


# ----------------------------------------------------------------------------------------------
# Statistics: pure functions of the attempt records
# ----------------------------------------------------------------------------------------------


def oracle_available(attempt: dict) -> bool:
    """The study's rule: an attempt is Available only when the oracle says so decisively."""
    return attempt["oracle"]["label"] == AVAILABLE and attempt["oracle"].get("decisive", True)


def abstained(attempt: dict) -> bool:
    return not attempt["oracle"].get("decisive", True)


def shipped_index(attempts: Sequence[dict]) -> int:
    """The attempt the system ships from these: the first RFNet accepted, else the highest p(Available)."""
    for i, a in enumerate(attempts):
        if a["accepted"]:
            return i
    return max(range(len(attempts)), key=lambda i: attempts[i]["rfnet"]["p_available"])


def available_within(products: Sequence[Sequence[dict]], k: int) -> np.ndarray:
    """Per product: whether one of its first k attempts is decisively Available (the pairing unit of
    the bootstraps)."""
    return np.array([any(oracle_available(a) for a in attempts[:k]) for attempts in products], dtype=bool)


def k_curves(products: Sequence[Sequence[dict]], max_attempts: int) -> dict[str, list[float]]:
    """For k = 1..K, shares of products with: an RFNet-accepted attempt within k (`rfnet`), a decisively
    Available attempt within k (`oracle`), none but an abstained one within k (`undecided`), a decisively
    Available shipped image (`shipped`); and the abstention rate on the k-th attempts (`abstained_at_k`)."""
    if not products:
        raise ValueError("k_curves needs at least one product's attempts")
    out: dict[str, list[float]] = {"rfnet": [], "oracle": [], "undecided": [], "shipped": [], "abstained_at_k": []}
    for k in range(1, max_attempts + 1):
        firsts = [attempts[:k] for attempts in products]
        found = available_within(products, k)
        out["rfnet"].append(float(np.mean([any(a["accepted"] for a in f) for f in firsts])))
        out["oracle"].append(float(found.mean()))
        out["undecided"].append(float(np.mean([not ok and any(abstained(a) for a in f)
                                               for ok, f in zip(found, firsts)])))
        out["shipped"].append(float(np.mean([oracle_available(f[shipped_index(f)]) for f in firsts])))
        kth = [attempts[k - 1] for attempts in products if len(attempts) >= k]
        out["abstained_at_k"].append(float(np.mean([abstained(a) for a in kth])) if kth else 0.0)
    return out


def cost(products: Sequence[Sequence[dict]], max_attempts: int) -> dict[str, float | None]:
    """What the system spends with budget K (attempts up to each product's first accepted image):
    attempts and seconds (generation + RFNet) per product and per available image, an available image
    being one RFNet accepted (what the system knows) or a shipped image the oracle decisively calls
    Available (what the user gets); plus the oracle's per-attempt rate and RFNet's agreement with it,
    both over the decisive attempts."""
    used, seconds, accepted, good_shipped = [], [], 0, 0
    for attempts in products:
        first = next((i for i, a in enumerate(attempts[:max_attempts]) if a["accepted"]), None)
        stop = max_attempts if first is None else first + 1
        used.append(stop)
        seconds.append(sum(a["seconds"] + a["inspect_seconds"] for a in attempts[:stop]))
        accepted += first is not None
        good_shipped += oracle_available(attempts[:stop][shipped_index(attempts[:stop])])
    every = [a for attempts in products for a in attempts[:max_attempts]]
    decisive = [a for a in every if not abstained(a)]
    acc = [a for a in decisive if a["accepted"]]
    good = [a for a in decisive if oracle_available(a)]

    def per(total: float, n: int) -> float | None:
        return total / n if n else None

    return {
        "mean_attempts_per_product": float(np.mean(used)),
        "seconds_per_product": float(np.mean(seconds)),
        "attempts_per_accepted_image": per(sum(used), accepted),
        "seconds_per_accepted_image": per(sum(seconds), accepted),
        "attempts_per_available_image": per(sum(used), good_shipped),
        "seconds_per_available_image": per(sum(seconds), good_shipped),
        "single_attempt_oracle_rate": per(len(good), len(decisive)),
        "decisive_attempts": len(decisive),
        "abstention_rate": per(len(every) - len(decisive), len(every)),
        "rfnet_precision": per(sum(oracle_available(a) for a in acc), len(acc)),
        "rfnet_recall": per(sum(a["accepted"] for a in good), len(good)),
        "changed_inputs": sum(bool(a["variation"]) for a in every) / len(every),
    }


def paired_bootstrap(reference: Sequence[float], other: Sequence[float], seed: int,
                     n: int = BOOTSTRAP) -> dict[str, float | list[float]]:
    """mean(other) - mean(reference) over paired units (products) and its 95% percentile interval over
    `n` resamples of the units (the same units for both: paired)."""
    a, b = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired_bootstrap needs two equally long, non-empty 1-d sequences; got shapes {a.shape} "
                         f"and {b.shape}")
    d = b - a
    idx = np.random.default_rng([seed, 0x4EC5]).integers(0, len(d), (n, len(d)))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return {"difference": float(d.mean()), "ci95": [float(lo), float(hi)], "n": len(d)}


def comparisons(products: dict[str, list[list[dict]]], max_attempts: int, seed: int) -> dict[str, dict]:
    """The paired differences the claims rest on: per policy, Available within K minus within 1 (the
    same products); and defect-aware minus reseed within K (the same products under both)."""
    out = {}
    for policy, attempts in products.items():
        out[f"{policy}: k={max_attempts} vs k=1"] = paired_bootstrap(
            available_within(attempts, 1), available_within(attempts, max_attempts), seed)
    if "reseed" in products and "defect_aware" in products:
        out["defect-aware vs reseed"] = paired_bootstrap(
            available_within(products["reseed"], max_attempts), available_within(products["defect_aware"],
                                                                                   max_attempts), seed)
    return out


def _points(diff: dict) -> str:
    lo, hi = diff["ci95"]
    return (f"{100 * diff['difference']:+.1f} points (95% interval {100 * lo:+.1f} to {100 * hi:+.1f}, "
            f"{diff['n']} products)")


def claims(curves: dict[str, dict], diffs: dict[str, dict], max_attempts: int) -> list[dict]:
    """The study's claims (report.make_claim decides each verdict from the interval of its difference)."""
    out = []
    key = f"reseed: k={max_attempts} vs k=1"
    if key in diffs:
        c = curves["reseed"]
        out.append(make_claim(
            f"Recurrent Generation raises the share of products with an Available image (oracle) from k=1 to "
            f"k={max_attempts}",
            "available rate grows with the attempt budget K (docs/method.md §4; reseeding)",
            f"{100 * c['oracle'][0]:.0f}% -> {100 * c['oracle'][-1]:.0f}%: {_points(diffs[key])}",
            diffs[key]["ci95"]))
    if "defect-aware vs reseed" in diffs:
        d = diffs["defect-aware vs reseed"]
        out.append(make_claim(
            f"Defect-aware retries beat reseeding (products with an Available image within k={max_attempts}, "
            "oracle)", "not in the paper (reliable-ad's retry policy; the paper reseeds)",
            f"{100 * curves['defect_aware']['oracle'][-1]:.0f}% vs {100 * curves['reseed']['oracle'][-1]:.0f}%: "
            f"{_points(d)}", d["ci95"]))
    return out


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _plot(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"rfnet": "#1565c0", "oracle": "#2e7d32", "shipped": "#c62828"}
    labels = {"rfnet": "RFNet accepted an image", "oracle": "oracle: an image is Available (decisive)",
              "shipped": "oracle: the shipped image is Available"}
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False, sharey=True)
    for ax, (policy, c) in zip(axes[0], curves.items()):
        ks = list(range(1, len(c["rfnet"]) + 1))
        for metric in colors:
            ax.plot(ks, [100 * v for v in c[metric]], marker="o", color=colors[metric], label=labels[metric])
        upper = [100 * (v + u) for v, u in zip(c["oracle"], c["undecided"])]
        ax.fill_between(ks, [100 * v for v in c["oracle"]], upper,
                        color=colors["oracle"], alpha=0.15, label="undecided (oracle abstained)")
        ax.set(xlabel="attempts k", xticks=ks, ylim=(0, 100), title=f"retries: {POLICY_NAMES.get(policy, policy)}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("% of products")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _summary(curves: dict, costs: dict, diffs: dict, k: int) -> str:
    parts = []
    for policy, c in curves.items():
        parts.append(
            f"{POLICY_NAMES.get(policy, policy)}: RFNet accepts an image for {_pct(c['rfnet'][0])} of products at the "
            f"first attempt and {_pct(c['rfnet'][-1])} within {k}; a decisively Available image is among them for "
            f"{_pct(c['oracle'][0])} -> {_pct(c['oracle'][-1])} (undecided: {_pct(c['undecided'][-1])} at k={k}), and "
            f"the image shipped is Available for {_pct(c['shipped'][0])} -> {_pct(c['shipped'][-1])}, at "
            f"{costs[policy]['mean_attempts_per_product']:.2f} attempts per product; "
            f"{_pct(costs[policy]['rfnet_precision'])} of the decisive images RFNet accepts are Available to the "
            "oracle.")
    for name, d in diffs.items():
        lo, hi = d["ci95"]
        where = "lies above 0" if lo > 0 else ("lies below 0" if hi < 0 else "includes 0")
        parts.append(f"{name}: {_points(d)}; the interval {where}.")
    return " ".join(parts)


def _run_key(ctx: ExperimentContext, settings: RecurrentStudySettings, policy: str) -> dict:
    return json.loads(json.dumps({"ctx": ctx.to_dict(), "settings": asdict(settings), "policy": policy,
                                  "records": RECORD_VERSION}))


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


def _interval(k: int, n: int) -> str:
    lo, hi = proportion(k, n)["ci95"]
    return f"{lo:.3f}-{hi:.3f}"


def _tables(curves: dict, costs: dict, diffs: dict, settings: RecurrentStudySettings, ctx: ExperimentContext) -> dict:
    K, n = settings.max_attempts, settings.products
    rows = [[POLICY_NAMES.get(p, p), k, c["rfnet"][k - 1], c["oracle"][k - 1],
             _interval(round(c["oracle"][k - 1] * n), n), c["undecided"][k - 1], c["abstained_at_k"][k - 1],
             c["shipped"][k - 1]]
            for p, c in curves.items() for k in range(1, K + 1)]
    k_table = table(["retry policy", "k", "RFNet: accepted within k", "oracle: Available within k", "95% interval",
                     "oracle: undecided within k", "oracle abstention rate on attempt k",
                     "oracle: shipped image Available"], rows,
                    note=f"{n} fresh SynthAd products, synthad prompt preset, K = {K}, RFNet {ctx.rfnet!r} accepting "
                         "on argmax = Available. Shares of products (Wilson 95% interval). Oracle Available = "
                         "decisively Available (an abstention counts as not Available, so the rate is a lower bound; "
                         "'undecided': no decisive Available within k but an abstention, the most the bound could "
                         "rise). Shipped image: the first RFNet-accepted attempt within k, else the attempt with "
                         "the highest p(Available).")
    cost_rows = [[POLICY_NAMES.get(p, p), c["mean_attempts_per_product"], c["seconds_per_product"],
                  c["attempts_per_accepted_image"], c["seconds_per_accepted_image"], c["attempts_per_available_image"],
                  c["seconds_per_available_image"], c["single_attempt_oracle_rate"], c["decisive_attempts"],
                  c["abstention_rate"], c["rfnet_precision"], c["rfnet_recall"], c["changed_inputs"]]
                 for p, c in costs.items()]
    cost_table = table(["retry policy", "attempts per product", "seconds per product", "attempts per accepted image",
                        "seconds per accepted image", "attempts per available image", "seconds per available image",
                        "oracle Available rate per attempt", "decisive attempts", "oracle abstention rate",
                        "RFNet precision (oracle)", "RFNet recall (oracle)", "share of attempts with changed inputs"],
                       cost_rows,
                       note=f"Attempts and seconds (generation + RFNet, per image) up to each product's first accepted "
                            f"image, at most {K}; per accepted image (RFNet) and per available image (a shipped image "
                            "the oracle decisively calls Available): the total over all products divided by their "
                            "number. Per-attempt rate and RFNet's precision/recall: over the decisive attempts. "
                            "Attempts identical under both policies were generated once.")
    diff_table = table(["comparison", "difference", "95% interval", "products"],
                       [[name, d["difference"], f"{d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}", d["n"]]
                        for name, d in diffs.items()],
                       note=f"Share of products with a decisively Available image; paired bootstrap over products "
                            f"({BOOTSTRAP} resamples, 2.5th-97.5th percentile).")
    return {"Recurrent Generation: available within k attempts": k_table,
            "Recurrent Generation: cost and RFNet agreement with the oracle": cost_table,
            "Recurrent Generation: paired differences": diff_table}


def run_study(ctx: ExperimentContext, out_dir: Path) -> dict:
    """Run both retry policies on fresh products; tables, claims, the k-curve plot and per-attempt JSONL in
    `out_dir`. A policy finished by an earlier run with the same settings is read back, not rerun."""
    with torch_threads():
        return _run_study(ctx, Path(out_dir))


def _run_study(ctx: ExperimentContext, out_dir: Path) -> dict:
    settings = RecurrentStudySettings.for_context(ctx)
    sw = Stopwatch()
    product_seed = sub_seed(ctx.seed, "recurrent-study")
    items = make_products(settings.products, product_seed, prefix="r")
    shots: dict = {}
    records, curves, costs, policy_seconds = {}, {}, {}, {}
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
        records[policy] = products
        curves[policy] = k_curves(products, settings.max_attempts)
        costs[policy] = cost(products, settings.max_attempts)
    K = settings.max_attempts
    diffs = comparisons(records, K, ctx.seed)
    figure = "available_within_k.png"
    _plot(curves, out_dir / figure)
    result = study_result(
        _tables(curves, costs, diffs, settings, ctx), [figure], sum(policy_seconds.values()),
        {**asdict(settings), "policies": list(settings.policies), "product_seed": product_seed,
         "acceptance": "argmax", "prompt_preset": prompt_preset().name, "size": load_generator(ctx).size,
         "oracle_rule": "Available only when decisive; an abstention counts as not Available",
         "bootstrap": BOOTSTRAP, "distinct_images_this_run": len(shots),
         "policy_seconds": {p: round(s, 2) for p, s in policy_seconds.items()},
         "section_seconds_this_run": {k: round(v, 2) for k, v in sw.seconds.items()}, **ctx.to_dict()},
        summary=_summary(curves, costs, diffs, K),
    )
    return {**result, "claims": claims(curves, diffs, K)}
