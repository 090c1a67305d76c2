"""What is not part of the `reliable-ad` wheel but ships in the repository, runnable and tested:

- `experiments.synthad`: the factories of the SynthAd weights that ship in the package
  (src/reliable_ad/synthad/weights/): `train_generator` (`--model synthad`), `train_rfnet` (the
  "synthad" depth and salience estimators and `--rfnet synthad`), `estimators` (fitting the two
  estimators) and `model_report` (report.json beside the installed RFNet).
- `experiments.studies`: the paper's studies measured on SynthAd (RFNet, Recurrent Generation,
  RFFT); the driver is benchmarks/synthad_experiments.py, the report docs/results/synthad.md.

Run from the repository root (so `experiments` is importable), with the package installed:

    python -m experiments.synthad.train_rfnet --out runs/synthad-rfnet --quick
    python benchmarks/synthad_experiments.py --quick

Everything here may import any part of reliable_ad; nothing in reliable_ad imports it.
"""
