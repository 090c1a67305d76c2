"""Label Studio interop: our batches as Label Studio tasks and labeling configs, and Label Studio's
JSON export back into our database as labels and rankings by annotators (docs/method.md §6).

Export (``annotate export --format label-studio``) writes into a folder:

- availability batches: ``tasks.json`` (one task per generated image: ``data.image``, ``data.product``,
  ``data.caption`` and our ids ``data.batch`` / ``data.key``, with RFNet's verdict as a prediction when
  the run was inspected) and ``labeling_config.xml`` (a single-choice ``<Choices>`` of our six labels);
- preference batches: ``pairwise_tasks.json`` (one task per two candidates of a set to rank) and
  ``pairwise_config.xml`` (Label Studio's ``<Pairwise>`` tag over two images).

Image URLs are paths relative to the export folder by default; with ``url_prefix`` they are the prefix
plus the path relative to ``url_root``: where the user serves the files over HTTP
(``https://host/ads/``), or Label Studio's local files (``/data/local-files/?d=`` with ``url_root`` the
folder LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT names).

Import (``annotate import --label-studio FILE``) reads the JSON export Label Studio writes: a list of
tasks, each with ``annotations[]`` whose ``result[]`` holds ``choices`` or ``pairwise`` entries,
``completed_by`` (an id, or an object with ``id`` and ``email``) and ``was_cancelled``. Annotators are
matched or created by ``completed_by`` (their email, else ``label-studio-<id>``); cancelled
annotations are skipped; a bad item (an unknown task, an unknown choice, an incomplete ranking) is
recorded with its task and value, and the rest is imported. Importing the same export again changes
nothing.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from sqlalchemy import select, update

from reliable_ad.annotation.db import Database
from reliable_ad.annotation.exporter import ExportSummary, _batches, _rel
from reliable_ad.annotation.guidance import GUIDANCE, LABELS, label_index
from reliable_ad.annotation.importer import Limits, _check_size
from reliable_ad.annotation.models import Assignment, Batch, Candidate, Task, User, utcnow
from reliable_ad.annotation.security import check_username
from reliable_ad.core.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

TASKS = "tasks.json"
CONFIG = "labeling_config.xml"
PAIRWISE_TASKS = "pairwise_tasks.json"
PAIRWISE_CONFIG = "pairwise_config.xml"
CHOICES_NAME = "label"  # from_name of the <Choices> tag
PAIRWISE_NAME = "preference"  # from_name of the <Pairwise> tag
LOCAL_FILES_PREFIX = "/data/local-files/?d="


# ---------------------------------------------------------------------------------------------
# Export


class _Urls:
    """File path -> the URL Label Studio loads it from (see the module docstring)."""

    def __init__(self, out_dir: Path, url_prefix: str | None, url_root: str | os.PathLike | None):
        if url_root is not None and url_prefix is None:
            raise ValueError(f"--url-root {str(url_root)!r} is used with --url-prefix; add --url-prefix "
                             f"(e.g. {LOCAL_FILES_PREFIX!r} or https://host/files/)")
        self.out_dir, self.prefix = out_dir, url_prefix
        self.root = Path(url_root).absolute() if url_root is not None else out_dir

    def __call__(self, path: str | None) -> str:
        if not path:
            return ""
        rel = _rel(path, self.root)
        if self.prefix is None:
            return rel
        if rel.startswith("../"):
            raise ValueError(f"{path} lies outside --url-root {str(self.root)!r}, so it has no URL under "
                             f"{self.prefix!r}; pass a --url-root that holds every image")
        return self.prefix + quote(rel, safe="/")


def labeling_config() -> str:
    """The availability labeling config: product photo, caption, generated ad, one of our six labels."""
    choices = "\n".join(f"    <Choice value={quoteattr(g['name'])} hint={quoteattr(g['short'])}/>" for g in GUIDANCE)
    return f"""<View>
  <Header value="Would you publish this ad as it is? If not, pick the one reason that matters most."/>
  <Text name="caption" value="$caption"/>
  <View style="display: flex; gap: 12px">
    <Image name="product" value="$product" maxWidth="320px"/>
    <Image name="image" value="$image" maxWidth="640px"/>
  </View>
  <Choices name="{CHOICES_NAME}" toName="image" choice="single" showInline="true" required="true">
{choices}
  </Choices>
</View>
"""


def pairwise_config() -> str:
    """The preference config: two ads of the same product and seed; Label Studio's <Pairwise> picks one."""
    return f"""<View>
  <Header value="Which ad would you rather publish? Click the better one."/>
  <Text name="caption" value="$caption"/>
  <Pairwise name="{PAIRWISE_NAME}" toName="image1,image2"/>
  <View style="display: flex; gap: 12px">
    <Image name="image1" value="$image1" maxWidth="512px"/>
    <Image name="image2" value="$image2" maxWidth="512px"/>
  </View>
</View>
"""


def _prediction(task: Task) -> list[dict]:
    """RFNet's verdict as a Label Studio prediction (pre-annotation), when the run was inspected."""
    if task.rfnet_label is None:
        return []
    score = float(max(task.rfnet_probs)) if task.rfnet_probs else None
    return [{"model_version": "rfnet", **({"score": round(score, 6)} if score is not None else {}),
             "result": [{"from_name": CHOICES_NAME, "to_name": "image", "type": "choices",
                         "value": {"choices": [LABELS[task.rfnet_label]]}}]}]


def export_label_studio(db: Database, out_dir: str | os.PathLike, *, kind: str = "availability",
                        batches: list[str] | None = None, url_prefix: str | None = None,
                        url_root: str | os.PathLike | None = None) -> ExportSummary:
    """Label Studio tasks and labeling config of the ``kind`` batches into ``out_dir`` (see the module)."""
    out_dir = Path(out_dir).absolute()
    urls = _Urls(out_dir, url_prefix, url_root)
    tasks: list[dict] = []
    with db.read() as s:
        chosen = _batches(s, kind, batches)
        names = {b.id: b.name for b in chosen}
        rows = s.scalars(select(Task).where(Task.batch_id.in_(list(names))).order_by(Task.id)) if names else []
        for task in rows:
            common = {"caption": task.caption, "product": urls(task.product_path), "batch": names[task.batch_id],
                      "key": task.key, "task_id": task.id, "product_id": task.product_id}
            if kind == "availability":
                tasks.append({"data": {"image": urls(task.image_path), **common}, "predictions": _prediction(task)})
                continue
            candidates = list(s.scalars(select(Candidate).where(Candidate.task_id == task.id)
                                        .order_by(Candidate.position)))
            for a, b in itertools.combinations(candidates, 2):
                tasks.append({"data": {"image1": urls(a.image_path), "image2": urls(b.image_path),
                                       "method1": a.method, "method2": b.method, **common}})
    tasks_file, config_file, config = ((out_dir / TASKS, out_dir / CONFIG, labeling_config())
                                       if kind == "availability" else
                                       (out_dir / PAIRWISE_TASKS, out_dir / PAIRWISE_CONFIG, pairwise_config()))
    atomic_write_text(config_file, config)
    atomic_write_json(tasks_file, tasks)
    logger.info("wrote %d Label Studio tasks to %s and the labeling config to %s", len(tasks), tasks_file, config_file)
    return ExportSummary(tasks_file, records=len(tasks))


# ---------------------------------------------------------------------------------------------
# Import


@dataclass
class LabelStudioImport:
    tasks: int = 0  # tasks in the file
    added: int = 0  # answers written (labels, or rankings made of pairwise judgments)
    present: int = 0  # answers the database had already (a repeated import)
    cancelled: int = 0  # cancelled (skipped) annotations, not imported
    users_created: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # bad items, each with its task and value


def _username(completed_by) -> str | None:
    """Our user name for Label Studio's ``completed_by`` (an id, or an object with id and email)."""
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()[:64]
        completed_by = completed_by.get("id")
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f"label-studio-{completed_by}"
    if isinstance(completed_by, str) and completed_by.strip():
        return completed_by.strip()[:64]
    return None


def _when(annotation: dict) -> datetime:
    for key in ("updated_at", "created_at"):
        value = annotation.get(key)
        if isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt
    return utcnow()


def _duration_ms(annotation: dict) -> int | None:
    lead = annotation.get("lead_time")
    if isinstance(lead, (int, float)) and not isinstance(lead, bool) and lead >= 0:
        return min(int(lead * 1000), 24 * 3600 * 1000)
    return None


def _results(annotation: dict, kind: str) -> list[dict]:
    return [r for r in annotation.get("result") or [] if isinstance(r, dict) and r.get("type") == kind]


class _Writer:
    """Answers into the database: users matched or created, one assignment per (task, user)."""

    def __init__(self, s, summary: LabelStudioImport):
        self.s, self.summary = s, summary
        self.users: dict[str, int] = {}

    def user_id(self, name: str) -> int:
        if name not in self.users:
            user = self.s.scalar(select(User).where(User.username == name))
            if user is None:
                check_username(name)
                user = User(username=name, role="annotator", active=True)  # no password: `users invite` to log in
                self.s.add(user)
                self.s.flush()
                self.summary.users_created.append(name)
            self.users[name] = user.id
        return self.users[name]

    def answer(self, task: Task, user_id: int, values: dict, when: datetime, duration: int | None) -> str | None:
        """Record one answer; a problem message when the user already gave a different one."""
        a = self.s.scalar(select(Assignment).where(Assignment.task_id == task.id, Assignment.user_id == user_id))
        if a is not None and a.state == "answered":
            if all(getattr(a, k) == v for k, v in values.items() if k in ("label", "ranking")):
                self.summary.present += 1
                return None
            given = {k: getattr(a, k) for k in values if k in ("label", "ranking")}
            return (f"already answered differently in the database ({given}); "
                    "undo that answer in the app first, or drop this annotation")
        if a is None or a.state != "open":  # open assignments already hold their slot
            self.s.execute(update(Task).where(Task.id == task.id, Task.needed > 0).values(needed=Task.needed - 1))
        if a is None:
            a = Assignment(task_id=task.id, user_id=user_id, batch_id=task.batch_id, leased_at=when)
            self.s.add(a)
        for k, v in values.items():
            setattr(a, k, v)
        a.state, a.answered_at, a.duration_ms = "answered", when, duration
        self.s.flush()
        self.summary.added += 1
        return None


def _our_task(s, data: dict, cache: dict) -> Task | str:
    batch_name, key = data.get("batch"), data.get("key")
    if not isinstance(batch_name, str) or not isinstance(key, str):
        return ("has no data.batch / data.key (our ids); import tasks exported with "
                "`reliable-ad annotate export --format label-studio`")
    if batch_name not in cache:
        cache[batch_name] = s.scalar(select(Batch).where(Batch.name == batch_name))
    batch = cache[batch_name]
    if batch is None:
        return f"batch {batch_name!r} is not in this database; use the database the tasks were exported from"
    task = s.scalar(select(Task).where(Task.batch_id == batch.id, Task.key == key))
    if task is None:
        return f"batch {batch_name!r} has no item {key!r}; use the database the tasks were exported from"
    return task


def _ranking(task: Task, wins: dict[tuple[str, str], str]) -> list[int] | str:
    """Candidate ids best first from one annotator's pairwise choices over every pair of the set, or why not."""
    by_method = {c.method: c.id for c in task.candidates}
    pairs = list(itertools.combinations(sorted(by_method), 2))
    missing = [p for p in pairs if p not in wins]
    if missing:
        return (f"judged {len(pairs) - len(missing)} of the {len(pairs)} pairs of its set (missing {missing[:3]}); "
                "a ranking needs every pair: finish the set's tasks in Label Studio")
    score = {m: sum(w == m for w in wins.values()) for m in by_method}
    order = sorted(by_method, key=score.__getitem__, reverse=True)
    if sorted(score.values()) != list(range(len(order))):
        return f"the pairwise choices {dict(wins)} are not transitive (A > B > C > A); they make no ranking"
    return [by_method[m] for m in order]


def import_label_studio(db: Database, path: str | os.PathLike, *, limits: Limits | None = None) -> LabelStudioImport:
    """Label Studio's JSON export at ``path`` into the database (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; export the project from Label Studio as JSON "
                                "(Export -> JSON) and pass that file")
    _check_size(path, limits or Limits())
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); pass Label Studio's JSON export (not JSON-MIN or CSV)")
    if not isinstance(tasks, list):
        raise ValueError(f"{path} holds a JSON {type(tasks).__name__}, not a list of tasks; pass Label Studio's "
                         "JSON export (Export -> JSON)")
    summary = LabelStudioImport(tasks=len(tasks))
    pairwise: dict[tuple[int, str], dict] = {}  # (our task id, user) -> {"task", "wins", "when", "duration"}
    with db.write() as s:
        writer, batches = _Writer(s, summary), {}
        for i, ls_task in enumerate(tasks):
            data = ls_task.get("data") if isinstance(ls_task, dict) else None
            where = f"{path.name}: task {ls_task.get('id', f'#{i}') if isinstance(ls_task, dict) else f'#{i}'}"
            if not isinstance(data, dict):
                summary.problems.append(f"{where}: not a Label Studio task (no 'data' object)")
                continue
            task = _our_task(s, data, batches)
            if isinstance(task, str):
                summary.problems.append(f"{where}: {task}")
                continue
            where += f" ({data['batch']}: {data['key']})"
            for annotation in ls_task.get("annotations") or []:
                if not isinstance(annotation, dict):
                    summary.problems.append(f"{where}: an annotation is not an object")
                    continue
                if annotation.get("was_cancelled"):
                    summary.cancelled += 1
                    continue
                name = _username(annotation.get("completed_by"))
                if name is None:
                    summary.problems.append(f"{where}: annotation {annotation.get('id')!r} has no completed_by")
                    continue
                try:
                    user = writer.user_id(name)
                except ValueError as e:
                    summary.problems.append(f"{where}: completed_by {name!r}: {e}")
                    continue
                problem = _take(writer, task, data, annotation, user, name, pairwise)
                if problem:
                    summary.problems.append(f"{where}: annotator {name!r}: {problem}")
        for (_, name), entry in pairwise.items():
            ranking = _ranking(entry["task"], entry["wins"])
            problem = ranking if isinstance(ranking, str) else writer.answer(
                entry["task"], writer.users[name], {"ranking": ranking,
                                                    "display_order": [c.id for c in entry["task"].candidates]},
                entry["when"], entry["duration"])
            if problem:
                summary.problems.append(f"{path.name}: set {entry['task'].key!r} annotator {name!r}: {problem}")
    for p in summary.problems[:20]:
        logger.warning("skipped: %s", p)
    return summary


def _take(writer: _Writer, task: Task, data: dict, annotation: dict, user: int, name: str,
          pairwise: dict) -> str | None:
    """One annotation of one task: a label written now, or a pairwise choice kept for its set's ranking."""
    when, duration = _when(annotation), _duration_ms(annotation)
    if task.image_path is not None:  # availability
        choices = [c for r in _results(annotation, "choices") for c in (r.get("value") or {}).get("choices") or []]
        if len(choices) != 1:
            return f"expected one choice of {list(LABELS)}, got {choices}"
        index = label_index(choices[0])
        if index is None or not isinstance(choices[0], str):
            return (f"choice {choices[0]!r} is not one of our labels {list(LABELS)}; use the labeling config "
                    "`annotate export --format label-studio` wrote")
        return writer.answer(task, user, {"label": index}, when, duration)
    selected = [(r.get("value") or {}).get("selected") for r in _results(annotation, "pairwise")]
    if len(selected) != 1 or selected[0] not in ("left", "right"):
        return f"expected one pairwise choice 'left' or 'right', got {selected}"
    methods = {c.method for c in task.candidates}
    pair = (data.get("method1"), data.get("method2"))
    if not set(pair) <= methods or pair[0] == pair[1]:
        return f"data.method1/method2 {pair} are not two methods of the set ({sorted(methods)})"
    winner = pair[0] if selected[0] == "left" else pair[1]
    entry = pairwise.setdefault((task.id, name), {"task": task, "wins": {}, "when": when, "duration": None})
    entry["wins"][tuple(sorted(pair))] = winner
    entry["when"] = max(entry["when"], when)
    if duration is not None:
        entry["duration"] = (entry["duration"] or 0) + duration
    return None
