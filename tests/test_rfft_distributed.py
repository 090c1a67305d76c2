"""RFFT under `accelerate launch` with 2 CPU processes (gloo): gradients are averaged by hand (no DDP),
so both processes must hold identical weights after every optimizer step; the main process alone
writes logs, checkpoints and the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from PIL import Image

from conftest import make_product_rgba

SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import torch.nn.functional as F
    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.rfft.config import DataConfig, OptimConfig, RFFTConfig, RuntimeConfig, ValidationConfig
    from reliable_ad.rfft.trainer import RFFTTrainer

    def judge(ads01, product01, captions):
        return F.logsigmoid(20 * (ads01.mean(dim=(1, 2, 3)) - 0.46))

    products, out = sys.argv[1], sys.argv[2]
    cfg = RFFTConfig(
        model=ModelConfig(model="tiny", safety_checker=False),
        sampling=SamplingConfig(size=64, num_inference_steps=4, batch_size=4), rf_interval=(2, 4),
        data=DataConfig(products=[products], validation_fraction=0.5),
        optim=OptimConfig(learning_rate=1e-2, batch_size=1, gradient_accumulation_steps=2, max_steps=3),
        validation=ValidationConfig(every=3, num_products=1, images_per_product=2),
        runtime=RuntimeConfig(device="cpu", checkpoint_every=2, tensorboard=False))
    trainer = RFFTTrainer.from_config(cfg, out, judge=judge)
    summary = trainer.train()
    state = trainer.trainable.state_dict()
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()
    # one file per process: two processes' stdout lines can be lost or interleaved on a loaded machine
    rank = trainer.accelerator.process_index
    with open(f"{out}.result-{rank}", "w") as f:
        f.write(" ".join(map(str, ("RESULT", rank, summary.step, bool(summary.exported), digest))))
""")


def test_two_processes_keep_identical_weights_and_write_once(tmp_path, tiny_checkpoint):
    # tiny_checkpoint: written before the launch; two processes building it at once would race
    products = tmp_path / "products"
    products.mkdir()
    for i, color in enumerate([(200, 40, 40), (40, 90, 200), (30, 160, 60), (150, 120, 20)]):
        Image.fromarray(make_product_rgba(96, color, seed=i), "RGBA").save(products / f"p{i}.png")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT, encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    r = subprocess.run([*launch, str(script), str(products), str(out)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = sorted(p.read_text().split()[1:] for p in tmp_path.glob("out.result-*"))
    assert [row[:3] for row in results] == [["0", "3", "True"], ["1", "3", "False"]]  # main exports alone
    assert results[0][3] == results[1][3]  # identical weights on both processes
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("validation", 0), ("train", 3), ("validation", 3)]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000000", "step_00000002",
                                                                          "step_00000003"]
    last = {p.name for p in (out / "checkpoints" / "step_00000003").iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl", "trainable.safetensors", "trainer_state.json"} <= last
    assert (out / "export" / "controlnet" / "config.json").is_file()
