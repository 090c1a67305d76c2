"""Recurrent Generation: wall time per available image, batched across products vs one at a time.

    python benchmarks/recurrent.py [--products 8] [--batch-size 8] [--size 128] [--steps 20]

Both modes run the same attempts with the same seeds on the tiny generator and the tiny RFNet
(inspection included in the time). So that both modes accept exactly the same attempts, acceptance is
decided by a fixed rule on the attempt's seed (about 40 % of attempts pass) instead of the random-weight
RFNet's verdict. "sequential" is Algorithm 1 as written: one product, one image at a time;
"batched" is our rolling queue over all products.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class _Verdict:
    label: str
    label_index: int
    probs: dict
    p_available: float


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-attempts", type=int, default=5)
    args = ap.parse_args()

    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator, GenerationJob
    from reliable_ad.data.product import prepare_product, product_from_arrays
    from reliable_ad.generation.seeds import derive_seed
    from reliable_ad.recurrent.loop import Attempt, make_acceptor, recurrent_generation
    from reliable_ad.rfnet.inspector import Inspector

    gen = AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(size=args.size, num_inference_steps=args.steps))
    inspector = Inspector.from_pretrained("tiny")
    rng = np.random.default_rng(0)
    products = []
    for i in range(args.products):
        yy, xx = np.mgrid[0:200, 0:200]
        alpha = ((((xx - 100) / (40 + 5 * i)) ** 2 + ((yy - 110) / 80) ** 2) < 1).astype(np.uint8) * 255
        rgb = np.broadcast_to(rng.integers(0, 255, 3, dtype=np.uint8), (200, 200, 3)).copy()
        prepared = prepare_product(product_from_arrays(rgb, alpha), size=args.size, image_scale=0.75)
        products.append((f"p{i}", prepared, np.dstack([rgb, alpha])))

    def plan(task, k, history):
        return Attempt(task[0], k, derive_seed(0, task[0], k))

    def generate(planned):
        return gen.generate([GenerationJob(t[1], "a product on a table, bokeh", "lowres", a.seed) for t, a in planned],
                            batch_size=len(planned))

    def judge(planned, results):
        inspector.inspect([t[2] for t, _ in planned], [r.image for r in results], [""] * len(planned))
        return [_Verdict("Available", 0, {}, 1.0) if a.seed % 5 < 2 else _Verdict("Space Mismatch", 1, {}, 0.0)
                for _, a in planned]

    kw = dict(key=lambda t: t[0], plan=plan, generate=generate, judge=judge, accept=make_acceptor(),
              max_attempts=args.max_attempts)
    generate([(products[0], plan(products[0], 0, []))])  # warm-up
    judge([(products[0], plan(products[0], 0, []))], generate([(products[0], plan(products[0], 0, []))]))
    results = {}
    for mode in ("sequential", "batched"):
        t0 = time.perf_counter()
        if mode == "sequential":
            history = {}
            for p in products:
                history.update(recurrent_generation([p], batch_size=1, **kw))
        else:
            history = recurrent_generation(products, batch_size=args.batch_size, **kw)
        wall = time.perf_counter() - t0
        available = sum(any(o.accepted for o in h) for h in history.values())
        attempts = sum(len(h) for h in history.values())
        results[mode] = {"wall_s": wall, "available": available, "attempts": attempts,
                         "s_per_available": wall / max(available, 1)}
    out = {"products": args.products, "size": args.size, "steps": args.steps, "batch_size": args.batch_size,
           **results, "speedup_batched": results["sequential"]["s_per_available"] / results["batched"]["s_per_available"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
