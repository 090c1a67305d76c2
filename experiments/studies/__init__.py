"""The SynthAd experiments: the paper's claims (docs/method.md §3-§5) measured at laptop scale against the
SynthAd oracle. One module per study (`rfnet_study`, `recurrent_study`, `rfft_study`), each with
``run_study(ctx, out_dir) -> dict``; `common` holds what they share and `report` renders their
results. The driver is ``benchmarks/synthad_experiments.py``; its report is docs/results/synthad.md.
"""

STUDIES = ("rfnet", "recurrent", "rfft")  # in the order the driver runs them; module = f"{name}_study"
