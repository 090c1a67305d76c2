"""`reliable-ad data shard` and the shard stream RFNet trains on: WebDataset members, atomic and
resumable writing, every sample exactly once per epoch across processes and workers, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_rf1m import make_release

from reliable_ad.cli.main import main
from reliable_ad.data.shard_stream import ShardStream, load_shards
from reliable_ad.rfnet.trainer_data import ShardLoader

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 30  # samples, six per class (make_release writes no Unsuitable)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, Path]:
    """A zipped release with cached maps, written as 12 shards of uneven counts by the real CLI."""
    root = make_release(tmp_path_factory.mktemp("rel") / "rf1m", n=N, noisy_every=4)  # shards of 2 or 3 samples
    maps = root / "modalities"
    for i in range(0, N, 3):  # every third image has a cached depth map
        path = maps / "depth" / f"images_0{i % 2}.zip" / "images" / f"{i // 2:05d}_{i % 2}.png.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((4, 4), i / N, np.float16))
    (maps / "meta.json").write_text(json.dumps({"depth": "tiny", "size": 4}))
    out = root.parent / "shards"
    assert main(["data", "shard", str(root), "--out", str(out), "--shard-size", "4KB", "--no-progress"]) == 0
    return root, out


def _keys(tar_path: Path) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    with tarfile.open(tar_path) as tar:
        for name in tar.getnames():
            key, _, suffix = name.partition(".")
            groups.setdefault(key, []).append(suffix)
    return groups


def test_shards_hold_webdataset_samples_and_an_index(sharded):
    root, out = sharded
    index = json.loads((out / "shards.json").read_text())
    shards = sorted(out.glob("shard-*.tar"))
    assert index["complete"] and len(shards) == len(index["shards"]) >= 4 and not list(out.glob("*.tmp"))
    assert index["samples"] == N and sum(s["count"] for s in index["shards"]) == N
    assert index["class_histogram"] == {"Available": 6, "Space Mismatch": 6, "Size Mismatch": 6,
                                        "Indistinctiveness": 6, "Shape Hallucination": 6}
    assert index["with_cached"] == {"depth": 10, "salience": 0} and index["settings"]["maps"]["depth"] == "tiny"
    keys: dict[str, list[str]] = {}
    for path in shards:
        keys.update(_keys(path))
    assert len(keys) == N
    with_product = [k for k, suffixes in keys.items() if "product.png" in suffixes]
    assert len(with_product) == 16 and all({"png", "txt", "cls", "json"} <= set(s) for s in keys.values())
    assert sum("depth.npy" in s for s in keys.values()) == 10
    with tarfile.open(shards[0]) as tar:  # the members carry the release's bytes and labels
        key = tar.getnames()[0].split(".")[0]
        meta = json.loads(tar.extractfile(f"{key}.json").read())
        i = int(key)
        assert meta["image"].endswith(f"images_0{i % 2}.zip/images/{i // 2:05d}_{i % 2}.png")
        assert int(tar.extractfile(f"{key}.cls").read()) == i % 5
        assert tar.extractfile(f"{key}.txt").read().decode() == f"product {i // 2:05d}"


def test_rerun_resumes_and_other_settings_are_refused(sharded, tmp_path, capsys):
    root, out = sharded
    copy = tmp_path / "shards"
    copy.mkdir()
    for path in out.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    victim = sorted(copy.glob("shard-*.tar"))[2]
    original = victim.read_bytes()
    victim.unlink()  # as if interrupted before this shard's rename
    (copy / f".{victim.name}.tmp").write_bytes(b"half a shard")
    stamps = {p.name: p.stat().st_mtime_ns for p in copy.glob("shard-*.tar")}
    args = ["data", "shard", str(root), "--out", str(copy), "--shard-size", "4KB", "--no-progress"]
    assert main(args) == 0
    assert victim.read_bytes() == original  # rewritten identically (no clock in the bytes)
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in copy.glob("shard-*.tar") if p.name in stamps)
    assert main([*args, "--unsuitable", "keep"]) == 2  # other settings: refused, nothing rewritten
    assert "other settings" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in copy.glob("shard-*.tar") if p.name in stamps)


def test_a_bad_sample_is_recorded_and_the_rest_written(tmp_path):
    root = make_release(tmp_path / "rf1m", n=6, archives=0, products=False)
    (root / "images" / "00001_0.png").unlink()  # listed, found at read time... then gone
    out = tmp_path / "shards"
    from reliable_ad.data.rf1m import read_rf1m
    from reliable_ad.data.shards import write_shards

    samples = read_rf1m(root, check_files=False).samples
    summary = write_shards(samples, out, class_names=["a", "b", "c", "d", "e"], shard_size="1MB", progress=False)
    assert len(summary.failed) == 1 and "00001_0.png" in summary.failed[0]["error"]
    assert json.loads((out / "shards.json").read_text())["samples"] == 5


def _epoch(shards, *, world: int, workers: int, epoch: int, batch_size: int = 4, start: int = 0,
           stop: int | None = None) -> list[list[int]]:
    """Valid sample indices per process for one epoch (from batch `start`, up to batch `stop`)."""
    seen = []
    lengths = set()
    for rank in range(world):
        stream = ShardStream(shards, batch_size=batch_size, image_size=8, seed=3, rank=rank, world_size=world,
                             num_workers=workers)
        loader = ShardLoader(stream, batch_size=batch_size, num_workers=workers)
        loader.set_epoch(epoch)
        lengths.add(len(loader))
        mine, batches = [], 0
        for b, batch in enumerate(loader.skip(start), start):
            if stop is not None and b >= stop:
                break
            batches += 1
            mine += batch["index"][batch["valid"]].tolist()
            assert batch["label"][batch["valid"]].tolist() == [i % 5 for i in batch["index"][batch["valid"]].tolist()]
        seen.append(mine)
        assert start + batches == (len(loader) if stop is None else stop)  # as many batches as it announced
    assert len(lengths) == 1  # every process takes the same number of steps
    return seen


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 0), (3, 2)])
def test_each_sample_once_per_epoch_across_processes_and_workers(sharded, world, workers):
    shards = load_shards(sharded[1]).shards
    orders = []
    for epoch in (0, 1):
        seen = _epoch(shards, world=world, workers=workers, epoch=epoch)
        flat = [i for mine in seen for i in mine]
        assert Counter(flat) == Counter(range(N))
        orders.append(flat)
    assert orders[0] != orders[1]  # shards are re-dealt each epoch


def test_every_epoch_has_the_announced_batches_whatever_the_deal(sharded):
    shards = load_shards(sharded[1]).shards
    assert len({s.count for s in shards}) > 1  # uneven shards: each epoch's deal loads the workers differently
    for epoch in range(8):
        seen = _epoch(shards, world=4, workers=0, epoch=epoch, batch_size=1)
        assert Counter(i for mine in seen for i in mine) == Counter(range(N))


@pytest.mark.parametrize("world,workers,stop", [(1, 0, 3), (2, 2, 3), (2, 2, 4)])
def test_resume_mid_epoch_sees_every_sample_once(sharded, world, workers, stop):
    shards = load_shards(sharded[1]).shards
    before = _epoch(shards, world=world, workers=workers, epoch=1, stop=stop)
    after = _epoch(shards, world=world, workers=workers, epoch=1, start=stop)
    assert Counter(i for part in (before, after) for mine in part for i in mine) == Counter(range(N))
    straight = _epoch(shards, world=world, workers=workers, epoch=1)
    assert [b + a for b, a in zip(before, after)] == straight  # the same order as without the stop


TWO_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch.distributed as dist
    from reliable_ad.data.shard_stream import ShardStream, load_shards
    from reliable_ad.rfnet.trainer_data import ShardLoader

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shards, out, stop = load_shards(sys.argv[1]), sys.argv[2], int(sys.argv[3])

    def run(epoch, start=0, stop=None):
        stream = ShardStream(shards.shards, batch_size=2, image_size=8, seed=0, rank=rank, world_size=world,
                             num_workers=2)
        loader = ShardLoader(stream, batch_size=2, num_workers=2)
        loader.set_epoch(epoch)
        seen, steps = [], 0
        for b, batch in enumerate(loader.skip(start), start):
            if stop is not None and b >= stop:
                break
            seen += batch["index"][batch["valid"]].tolist()
            steps += 1
        return {"seen": seen, "steps": steps, "consumed": stream.consumed_shards(stop or 0)}

    mine = {"epochs": [run(0), run(1)], "first": run(2, stop=stop), "rest": run(2, start=stop)}
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        json.dump(gathered, open(out, "w"))
    dist.destroy_process_group()
""")


def test_two_processes_see_each_sample_once_and_resume_exactly(sharded, tmp_path):
    script = tmp_path / "stream.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    out = tmp_path / "seen.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), str(sharded[1]), str(out), "3"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert len(ranks) == 2 and all(rank["epochs"][0]["seen"] for rank in ranks)  # both processes really read
    for epoch in (0, 1):
        assert Counter(i for rank in ranks for i in rank["epochs"][epoch]["seen"]) == Counter(range(N))
        assert ranks[0]["epochs"][epoch]["steps"] == ranks[1]["epochs"][epoch]["steps"]
    resumed = [i for rank in ranks for part in ("first", "rest") for i in rank[part]["seen"]]
    assert Counter(resumed) == Counter(range(N))
    assert any(rank["first"]["consumed"] for rank in ranks)  # the checkpoint's record of finished shards


def test_rfnet_trains_on_shards_and_resumes_at_the_recorded_position(sharded, tmp_path):
    from reliable_ad.rfnet.train import train
    from reliable_ad.rfnet.train_config import TrainConfig

    def config(max_steps: int) -> TrainConfig:
        return TrainConfig.from_dict({
            "data": {"shards": str(sharded[1])}, "model": {"source": "tiny", "load_pretrained": False},
            "optim": {"epochs": 2, "batch_size": 4, "max_steps": max_steps}, "num_workers": 0,
            "runtime": {"checkpoint_every": 1, "log_every": 1, "device": "cpu", "keep_checkpoints": 10}})

    out = tmp_path / "run"
    train(config(3), out, progress=False)
    data = json.loads((out / "data.json").read_text())
    assert data["shards"]["samples"] == N and data["shards"]["class_counts"] == [6] * 5
    state = json.loads((out / "checkpoints" / "step_00000003" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batch_in_epoch"]) == (0, 3)
    assert state["shards"]["world_size"] == 1 and state["shards"]["batch_size"] == 4
    consumed = state["shards"]["consumed"]["0"]
    assert consumed and sum(s["count"] for s in json.loads((sharded[1] / "shards.json").read_text())["shards"]
                            if s["name"] in consumed) <= 12  # 3 batches of 4 read at most 12 samples
    train(config(10), out, progress=False)  # resumes at step 3, finishes epoch 0 and goes into epoch 1
    final = json.loads(sorted((out / "checkpoints").glob("step_*"))[-1].joinpath("trainer_state.json").read_text())
    assert final["step"] == 10 and final["epoch"] == 1 and (out / "model" / "config.json").is_file()
    with pytest.raises(ValueError, match="num_workers"):  # another stream layout cannot resume exactly
        train(TrainConfig.from_dict({**config(12).to_dict(), "num_workers": 2}), out, progress=False)


def test_train_split_shards_pair_with_the_same_by_product_split(sharded, tmp_path):
    from reliable_ad.data.readers import read_rf1m
    from reliable_ad.data.splits import split_by_product
    from reliable_ad.rfnet.train import _upgrade_stored
    from reliable_ad.rfnet.train_config import TrainConfig
    from reliable_ad.rfnet.trainer_data import shard_datasets

    root, out = sharded[0], tmp_path / "train"
    assert main(["data", "shard", str(root), "--out", str(out), "--split", "train", "--split-seed", "1",
                 "--no-cached-maps", "--no-progress"]) == 0
    samples = read_rf1m(root).samples
    wanted = {samples[i].product_id for i in split_by_product(samples, (0.8, 0.1, 0.1), 1)["train"]}
    written = set()
    for path in out.glob("shard-*.tar"):
        with tarfile.open(path) as tar:
            written |= {json.loads(tar.extractfile(n).read())["product_id"] for n in tar.getnames()
                        if n.endswith(".json")}
    assert written == wanted
    config = {"data": {"shards": str(out), "sources": [{"path": str(root)}], "split_seed": 2},
              "model": {"source": "tiny"}, "num_workers": 0}
    with pytest.raises(ValueError, match="split seed 1 .* seed 2"):  # val/test would share products with train
        shard_datasets(TrainConfig.from_dict(config), num_classes=5, image_size=8, spec=None,
                       mods=None, rank=0, world_size=1)
    # a run from before label codes read integers as 0..5: its resume check compares against paper0
    old = _upgrade_stored({"data": {"sources": [{"path": "x"}]}})
    assert old["data"]["sources"][0]["label_codes"] == "paper0" and old["data"]["shards"] is None
