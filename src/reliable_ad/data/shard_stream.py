"""Stream WebDataset shards (`reliable_ad.data.shards`) into RFNet training, every sample exactly once
per epoch across processes and DataLoader workers, with exact resume (docs/method.md §3).

Each epoch the shards are permuted by (seed, epoch); process ``rank`` takes ``order[rank::world_size]``
and its DataLoader worker ``w`` takes every ``num_workers``-th of those. Inside a shard the order is
the written one (the writer shuffled the samples). Every worker of every process then yields the
same number of full batches: the real samples, then placeholders with ``valid=False`` (the trainer's
loss and metrics skip them), so all processes take the same number of steps (DDP needs that) and no
sample is repeated. A DataLoader takes batches from its workers in turn, so batch ``b`` of an epoch is
batch ``b // W`` of worker ``b % W``: a run resumed at batch ``b`` has each worker skip exactly what
it had already yielded (whole shards by their counts, then members without decoding them). Resuming
needs the same processes, workers and batch size; the trainer checks.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from reliable_ad.data.shards import INDEX_FILE
from reliable_ad.data.tensors import map_to_tensor, rgb_to_tensor

__all__ = ["ShardInfo", "ShardSet", "load_shards", "ShardStream", "epoch_plan"]


@dataclass(frozen=True)
class ShardInfo:
    path: str
    count: int  # samples in the shard


@dataclass
class ShardSet:
    shards: list[ShardInfo]
    index: dict[str, Any]  # shards.json of their folder

    @property
    def class_names(self) -> list[str]:
        return list(self.index["settings"]["class_names"])

    @property
    def samples(self) -> int:
        return sum(s.count for s in self.shards)

    def class_counts(self) -> np.ndarray:
        names = self.class_names
        wanted = {Path(s.path).name for s in self.shards}
        counts = np.zeros(len(names), dtype=np.int64)
        for stats in self.index["shards"]:
            if stats["name"] in wanted:
                counts += np.array([stats["classes"][n] for n in names], dtype=np.int64)
        return counts

    def with_cached(self) -> dict[str, int]:
        wanted = {Path(s.path).name for s in self.shards}
        return {k: sum(s["with_cached"][k] for s in self.index["shards"] if s["name"] in wanted)
                for k in ("depth", "salience")}


def load_shards(spec: str | os.PathLike) -> ShardSet:
    """The shards of a folder (all those its complete shards.json lists) or of a glob of .tar files in
    one folder (their counts from that folder's shards.json)."""
    spec = os.fspath(spec)
    folder = spec if os.path.isdir(spec) else os.path.dirname(spec) or "."
    index_path = os.path.join(folder, INDEX_FILE)
    if not os.path.isfile(index_path):
        raise FileNotFoundError(f"--shards {spec!r}: no {INDEX_FILE} in {folder!r}; write the shards with "
                                "`reliable-ad data shard`")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    if not index.get("complete"):
        raise ValueError(f"--shards {spec!r}: {index_path} is incomplete (the writer was interrupted); rerun the same "
                         "`reliable-ad data shard` command to finish it")
    counts = {s["name"]: s["count"] for s in index["shards"]}
    names = sorted(counts) if os.path.isdir(spec) else sorted(os.path.basename(p) for p in glob.glob(spec))
    unknown = [n for n in names if n not in counts]
    if unknown or not names:
        raise ValueError(f"--shards {spec!r}: {unknown[:3] or 'no files'} not listed in {index_path}; "
                         "pass the shard folder or a glob of its shard-*.tar files")
    return ShardSet([ShardInfo(os.path.join(folder, n), counts[n]) for n in names], index)


def epoch_plan(n_shards: int, epoch: int, seed: int, world_size: int, num_workers: int) -> list[list[list[int]]]:
    """plan[rank][worker]: the shard indices each worker of each process reads this epoch, in order."""
    order = np.random.default_rng([seed, epoch]).permutation(n_shards).tolist()
    return [[order[rank::world_size][w::num_workers] for w in range(num_workers)] for rank in range(world_size)]


def _key(name: str) -> str:
    folder, _, base = name.rpartition("/")
    return f"{folder}/{base.split('.', 1)[0]}" if folder else base.split(".", 1)[0]


def _iter_groups(path: str, skip: int) -> Iterator[dict[str, bytes]]:
    """{suffix: bytes} of each sample of a shard (plus ``__key__``), after ``skip`` samples whose
    members are passed over by their headers, unread."""
    with tarfile.open(path, "r:") as tar:
        group: dict[str, bytes] = {}
        current, n = None, 0  # n: samples started so far; the current one is the n-th
        for info in tar:
            tar.members = []  # streaming: keep no TarInfo per member
            key = _key(info.name)
            if key != current:
                if current is not None and n > skip:
                    yield group
                current, n, group = key, n + 1, {"__key__": key.encode()}
            if n > skip and info.isfile():
                group[info.name[len(key):].lstrip(".")] = tar.extractfile(info).read()
        if current is not None and n > skip:
            yield group


class ShardStream(torch.utils.data.IterableDataset):
    """RFNet items (as `reliable_ad.rfnet.trainer_data.RobustDataset` makes them) from shards; see the
    module docstring. ``binary``: labels become Available (0) vs the rest (1)."""

    def __init__(self, shards: Sequence[ShardInfo], *, batch_size: int, image_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, binary: bool = False):
        if not shards:
            raise ValueError("no shards to stream; pass a folder written by `reliable-ad data shard`")
        self.shards = list(shards)
        self.batch_size, self.image_size, self.seed, self.binary = batch_size, image_size, seed, binary
        self.rank, self.world_size, self.workers = rank, world_size, max(1, num_workers)
        self.epoch = 0
        self.start_batch = 0  # batches of this epoch already consumed (resume)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int | None = None) -> list[list[list[int]]]:
        return epoch_plan(len(self.shards), self.epoch if epoch is None else epoch, self.seed, self.world_size,
                          self.workers)

    @property
    def batches_per_worker(self) -> int:
        """Batches every worker yields each epoch: enough for the heaviest load any deal of the shards
        can give one worker (its share of shards, the largest ones), so it is the same every epoch."""
        share = math.ceil(len(self.shards) / (self.world_size * self.workers))
        worst = sum(sorted((s.count for s in self.shards), reverse=True)[:share])
        return max(1, math.ceil(worst / self.batch_size))

    def __len__(self) -> int:  # items per epoch of this process, placeholders included
        return self.workers * self.batches_per_worker * self.batch_size

    def done_by(self, worker: int, batch: int) -> int:
        """Batches worker ``worker`` has yielded when the process has consumed ``batch`` batches."""
        return max(0, math.ceil((batch - worker) / self.workers))

    def consumed_shards(self, batch: int, rank: int | None = None) -> list[str]:
        """Names of the shards process ``rank`` (default: this one) has read to their end by batch
        ``batch`` of the epoch."""
        names = []
        for w, mine in enumerate(self.plan()[self.rank if rank is None else rank]):
            left = self.done_by(w, batch) * self.batch_size
            for i in mine:
                if left < self.shards[i].count:
                    break
                left -= self.shards[i].count
                names.append(Path(self.shards[i].path).name)
        return names

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        if info is not None and info.num_workers != self.workers:
            raise ValueError(f"ShardStream was built for {self.workers} workers, the DataLoader has "
                             f"{info.num_workers}; pass num_workers={info.num_workers}")
        mine = self.plan()[self.rank][worker]
        return self._items(mine, self.done_by(worker, self.start_batch) * self.batch_size)

    def _items(self, mine: list[int], skip: int) -> Iterator[dict[str, Any]]:
        total = self.batches_per_worker * self.batch_size
        produced = skip
        for i in mine:
            shard = self.shards[i]
            if skip >= shard.count:
                skip -= shard.count
                continue
            for group in _iter_groups(shard.path, skip):
                yield self._decode(group)
                produced += 1
            skip = 0
        for _ in range(produced, total):
            yield self._placeholder()

    def _placeholder(self, label: int = 0, index: int = -1, error: str | None = None) -> dict[str, Any]:
        size = self.image_size
        return {"image": torch.zeros(3, size, size), "product": None, "depth": None, "salience": None,
                "caption": "", "label": label, "index": index, "valid": False, "error": error}

    def _decode(self, group: dict[str, bytes]) -> dict[str, Any]:
        from PIL import Image

        key = group["__key__"].decode()
        index = int(key) if key.isdigit() else -1
        label = int(group.get("cls", b"0"))
        label = int(label != 0) if self.binary else label
        try:
            image = next(v for k, v in group.items() if k in ("png", "jpg", "jpeg", "webp"))
            with Image.open(io.BytesIO(image)) as im:
                item = {"image": rgb_to_tensor(im, self.image_size)}
            product = next((v for k, v in group.items() if k.startswith("product.")), None)
            if product is not None:
                with Image.open(io.BytesIO(product)) as im:
                    product = rgb_to_tensor(im, self.image_size, pad_square=True)
            for kind in ("depth", "salience"):
                raw = group.get(f"{kind}.npy")
                item[kind] = None if raw is None else map_to_tensor(np.load(io.BytesIO(raw)), self.image_size)
        except (StopIteration, OSError, ValueError, Image.DecompressionBombError) as e:
            return self._placeholder(label, index, f"shard sample {key}: cannot decode: {e}")
        return {**item, "product": product, "caption": group.get("txt", b"").decode("utf-8"), "label": label,
                "index": index, "valid": True, "error": None}
