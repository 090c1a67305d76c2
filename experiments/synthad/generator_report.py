"""Does the SynthAd generator do what its prompt says? (docs/synthad.md, "The generator")

    python -m experiments.synthad.generator_report --model runs/gen-v2 [--products 200] [--out FILE.json]
    python -m experiments.synthad.generator_report --model synthad          # the packaged generator

One image per fresh product (the product stream of seed 10,000, which no training used), at the first
attempt, with the `synthad` preset rendered for it (its caption, a drawn wall colour, surface and
clutter level) and the generator's default sampling, as `reliable-ad run` makes its first image. Three
measures, each a proportion with its Wilson 95% interval:

- wall colour followed: the dominant colour of the image's upper quarter outside the product is
  nearest to the prompt's wall colour (of seven; chance is about 1/7);
- references of the right support class: of the images in which the oracle finds scale references,
  those whose references all stand on the support the product's size class implies (a lipstick's
  mug on a table, a sofa's door on the floor): the caption names the size class;
- Available at the first attempt, by the oracle (valid on generated images while gate 1 holds), over
  all images and over the images the abstaining oracle judges decisively (`reliable_ad.synthad.decisive`,
  the studies' judge), with the share it abstained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from experiments.synthad.gates import generator_folder, proportion

FRESH_SEED = 10_000


def measure(model: str, products: int = 200, *, guidance_rescale: float = 0.0, batch_size: int = 16,
            progress: bool = True) -> dict:
    from experiments.studies.common import wall_color_of_background
    from experiments.synthad.train_generator import PROMPT_PRESET, SIZE, evaluate_generator
    from reliable_ad.data.product import prepare_product
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.synthad.dataset import stream_product
    from reliable_ad.synthad.decisive import judge_decisive
    from reliable_ad.synthad.oracle import OracleInspector
    from reliable_ad.synthad.world import REFERENCES, SUPPORT_OF_SIZE_CLASS

    root = generator_folder(model)
    # the images `train_generator` judges after training (same products, prompts and seeds), re-read here
    images = evaluate_generator(root / "base", root / "controlnet", products=products, seed=FRESH_SEED,
                                guidance_rescale=guidance_rescale, batch_size=batch_size, progress=progress)["images"]
    preset = get_preset(PROMPT_PRESET)
    items = [stream_product(FRESH_SEED, p) for p in range(products)]
    rendered = [preset.render(FRESH_SEED + p, caption=item.caption) for p, item in enumerate(items)]
    prepared = [prepare_product(item.to_product(), SIZE, preset.image_scale) for item in items]
    oracle = OracleInspector()
    walls = refs_seen = refs_right = available = decisive = decisive_available = 0
    labels: Counter = Counter()
    rows = []
    for p, (item, prep, r, image) in enumerate(zip(items, prepared, rendered, images)):
        judged = judge_decisive(oracle, image, prep.alpha, item.caption, key=f"generator-report/{p}")
        verdict = judged.verdict
        decisive += judged.decisive
        decisive_available += judged.decisive and judged.available
        wall = wall_color_of_background(image, prep.alpha)
        want = SUPPORT_OF_SIZE_CLASS[item.size_class]
        found = [name for name, _ in verdict.measurements.references]
        right = bool(found) and all(REFERENCES[name].support == want for name in found)
        walls += wall == r.slot_values["wall_color"]
        refs_seen += bool(found)
        refs_right += right
        available += verdict.label == "Available"
        labels[verdict.label] += 1
        rows.append({"product": p, "caption": item.caption, "prompt": r.prompt, "wall": wall,
                     "references": found, "support": want, "label": verdict.label, "decisive": judged.decisive})
    return {"model": model, "products": products, "seed": FRESH_SEED, "guidance_rescale": guidance_rescale,
            "wall_color_followed": proportion(walls, products),
            "references_found": proportion(refs_seen, products),
            "references_right_support": proportion(refs_right, refs_seen),
            "available_first_attempt": proportion(available, products),
            "available_first_attempt_decisive": proportion(decisive_available, decisive),
            "abstained": proportion(products - decisive, products),
            "labels": dict(labels), "images": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.synthad.generator_report",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a trained generator folder (base/, controlnet/) or 'synthad'")
    p.add_argument("--products", type=int, default=200, help="fresh products, one image each (default 200)")
    p.add_argument("--guidance-rescale", type=float, default=0.0, metavar="PHI",
                   help="rescale of the guided prediction (sampling.guidance_rescale; 0 = off, the default; "
                        "Lin et al. suggest 0.7 for v-prediction models such as the synthad generator)")
    p.add_argument("--out", help="write the measures (and each image's row) here as JSON")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.products < 1:
        p.error(f"--products {args.products}: give at least 1")
    if not 0.0 <= args.guidance_rescale <= 1.0:
        p.error(f"--guidance-rescale {args.guidance_rescale}: give a value in [0, 1] (0 = off, 0.7 suggested)")
    report = measure(args.model, args.products, guidance_rescale=args.guidance_rescale, progress=not args.no_progress)
    if args.out:
        from reliable_ad.core.io import atomic_write_json

        atomic_write_json(Path(args.out), report)
    print(json.dumps({k: v for k, v in report.items() if k != "images"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
