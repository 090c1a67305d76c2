"""Recurrent Generation for many products at once (supplemental Algorithm 1, batched).

Each product's attempt k draws fresh noise from a seed derived from (run seed, product, k). A rolling
queue keeps batches full: products that fail go to the back of the queue for their next attempt, so
the generator always sees `batch_size` images while work remains. A product stops at its first
accepted image or after K attempts ("none available", as in the paper).

The algorithm owns no model: `plan`, `generate` and `judge` are injected, so tests drive it with fakes
and the `run` job with the diffusers generator and RFNet.

With ``overlap`` the judge of batch i runs in a worker thread while batch i+1 generates. Batch i+1 is
started early only when the queue already holds a full batch, because then it is the same batch the
sequential order takes (batch i's rejected attempts go behind it); the results are applied in batch
order, so history, records and their order equal the sequential run's.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from reliable_ad.core.labels import accepts, check_acceptance


class VerdictLike(Protocol):
    label: str
    label_index: int
    probs: dict[str, float]
    p_available: float


@dataclass(frozen=True)
class Attempt:
    product_key: str
    attempt: int  # 0-based
    seed: int
    variation: dict = field(default_factory=dict)  # what the retry policy changed (image_scale, slots, preset)


@dataclass(frozen=True)
class Outcome:
    attempt: Attempt
    label: str
    p_available: float
    accepted: bool


@dataclass
class LoopTimings:
    """Where one invocation of the loop spent its wall time (seconds): always recorded, small, and in the
    run's summary.json (``seconds.loop``). With overlap, ``judge`` runs beside ``generate`` and
    ``waiting`` is the part of it the loop had to wait for."""

    wall: float = 0.0
    generate: float = 0.0
    judge: float = 0.0
    waiting: float = 0.0  # overlap: main thread blocked on a batch's verdicts
    batches: int = 0
    overlapped_batches: int = 0  # batches whose generation ran while the previous batch was judged

    @contextmanager
    def clock(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - t0)

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def make_acceptor(acceptance: str = "argmax", threshold: float = 0.5) -> Callable[[VerdictLike], bool]:
    """argmax: RFNet's top class is Available (the paper); threshold: p(Available) >= threshold
    (the one rule of :func:`reliable_ad.core.labels.accepts`)."""
    check_acceptance(acceptance, threshold)
    return lambda v: accepts(int(v.label_index), float(v.p_available), acceptance, threshold)


def is_finished(history: Sequence[Outcome], max_attempts: int) -> bool:
    return any(o.accepted for o in history) or len(history) >= max_attempts


def recurrent_generation(
    tasks: Sequence[Any],
    *,
    key: Callable[[Any], str],
    plan: Callable[[Any, int, list[Outcome]], Attempt],
    generate: Callable[[list[tuple[Any, Attempt]]], list[Any]],
    judge: Callable[[list[tuple[Any, Attempt]], list[Any]], list[VerdictLike]],
    accept: Callable[[VerdictLike], bool],
    max_attempts: int = 5,
    batch_size: int = 4,
    history: dict[str, list[Outcome]] | None = None,
    on_result: Callable[[Any, Attempt, Any, VerdictLike, bool], None] | None = None,
    vetoed: Callable[[Any], bool] | None = None,
    overlap: bool = False,
    timings: LoopTimings | None = None,
) -> dict[str, list[Outcome]]:
    """Run the loop; ``history`` (from a previous, interrupted run) makes it resume where it stopped.

    Returns every product's outcomes in attempt order. ``on_result`` sees each attempt as soon as it is
    judged (the run job saves the image and its manifest record there). ``vetoed(image)`` true (the
    safety checker flagged the image) rejects an attempt whatever the verdict: it is retried as a rejected one.
    ``overlap``: judge each batch in a worker thread while the next generates (module docstring); ``timings``
    collects where the time went.
    """
    if max_attempts < 1 or batch_size < 1:
        raise ValueError(f"max_attempts={max_attempts} and batch_size={batch_size} must be >= 1")
    history = {k: list(v) for k, v in (history or {}).items()}
    queue: deque[tuple[Any, int]] = deque()
    for task in tasks:
        past = history.setdefault(key(task), [])
        if not is_finished(past, max_attempts):
            queue.append((task, len(past)))
    timings = timings if timings is not None else LoopTimings()

    def next_batch() -> tuple[list[tuple[Any, Attempt]], list[Any]]:
        batch = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        planned = [(task, plan(task, k, history[key(task)])) for task, k in batch]
        with timings.clock("generate"):
            images = generate(planned)
        timings.batches += 1
        return planned, images

    def judged(planned, images):
        with timings.clock("judge"):
            return judge(planned, images)

    def settle(planned, images, verdicts) -> None:
        if len(images) != len(planned) or len(verdicts) != len(planned):
            raise RuntimeError(f"generate/judge returned {len(images)}/{len(verdicts)} results for {len(planned)} attempts")
        for (task, attempt), image, verdict in zip(planned, images, verdicts):
            ok = bool(accept(verdict)) and not (vetoed is not None and vetoed(image))
            history[key(task)].append(Outcome(attempt, verdict.label, float(verdict.p_available), ok))
            if on_result:
                on_result(task, attempt, image, verdict, ok)
            if not ok and attempt.attempt + 1 < max_attempts:
                queue.append((task, attempt.attempt + 1))

    with timings.clock("wall"):
        if overlap:
            _overlapped(queue, batch_size, next_batch, judged, settle, timings)
        while queue:
            planned, images = next_batch()
            settle(planned, images, judged(planned, images))
    return history


def _overlapped(queue: deque, batch_size: int, next_batch, judged, settle, timings: LoopTimings) -> None:
    """The loop with batch i judged in a worker thread while batch i+1 generates (module docstring)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspection") as pool:
        current = next_batch() if queue else None
        while current is not None:
            verdicts = pool.submit(judged, *current)
            ahead = None
            if len(queue) >= batch_size:  # the sequential order's next batch, whatever batch i's verdicts
                ahead = next_batch()
                timings.overlapped_batches += 1
            with timings.clock("waiting"):
                result = verdicts.result()
            settle(*current, result)
            current = ahead if ahead is not None else (next_batch() if queue else None)
