"""The SynthAd oracle: a rule-based inspector that plays the paper's human reviewer (docs/method.md §1, §6)
on any image of the SynthAd world, rendered or generated, given where the product is and its caption.

Rules, each a severity z (z >= 1 means the rule is broken):
- Space Mismatch: the product's lowest row (with any attached product-coloured part) must lie on
  the support's top face: not above its top line (floating), not below a table's front edge (sinking).
- Size Mismatch: the product's height in metres, measured against the scale references found in
  the image (a door is 2 m ...), must fall in the range its caption implies (category, else size class).
- Indistinctiveness: the product must stand out: little of the ring around its upper half may be
  in its colour, and little of its surroundings may be clutter (pixels that differ from the
  wall/support behind them).
- Shape Hallucination: no product-coloured region may be attached to the product's silhouette.
A product whose surroundings share its colour is Indistinct and nothing else: where it ends, what is
attached to it and which colours are references cannot be read then (a reviewer who cannot see the
product does not judge its size), so the other rules are not applied.
Severities become soft class scores: s = sigmoid(gain (z - 1)); p(Available) = prod(1 - s); the
defect classes share the rest in proportion to s; the label is the most probable class. The oracle
knows SynthAd's conventions (reference colours and heights, see world.py); it is no model of the
real world.

    oracle = OracleInspector()
    oracle.judge(scene.image, scene.product_alpha, scene.caption)      # placement known
    oracle(products_rgba, generated_images, captions)                  # Recurrent Generation judge
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import cv2
import numpy as np

from reliable_ad.core.labels import AVAILABLE_INDEX, CLASS_NAMES
from reliable_ad.synthad.layout import context_window
from reliable_ad.synthad.locate import ProductLocator
from reliable_ad.synthad.products import PRODUCT_COLORS, expected_height_m, parse_caption
from reliable_ad.synthad.world import REFERENCES, nearest_wall_color

SPACE, SIZE, INDISTINCT, SHAPE = CLASS_NAMES[1:]
SURFACE_TOLERANCE = 35.0  # RGB distance within which a pixel shows the support's material (grain, gradient)


@dataclass(frozen=True)
class OracleConfig:
    """Thresholds of the oracle's rules; pixel lengths are for a 64 px image and scale with its size."""

    product_color_tolerance: float = 45.0  # RGB distance under which a pixel has the product's colour
    reference_tolerance: float = 40.0  # RGB distance under which a pixel has a reference's colour
    ring_px: float = 3.0  # width of the ring around the product whose colour is compared
    same_color_share: float = 0.6  # share of that ring (upper half) in the product's colour: indistinct
    clutter_residual: float = 45.0  # RGB distance from the row's background colour that marks clutter
    clutter_share: float = 0.2  # share of the product's surroundings in clutter that makes it indistinct
    attached_share: float = 0.05  # attached product-coloured area per product area: shape hallucination
    attached_min_px: float = 6.0  # ... and at least this many pixels
    support_edge: float = 28.0  # RGB distance between row colours that marks the wall/support line
    float_px: float = 2.0  # rows above the support's top line at which the product floats
    sink_px: float = 2.0  # rows below a table's front edge at which the product sinks through it
    size_tolerance: float = 1.5  # factor outside the expected height range at which size mismatches
    gain: float = 8.0  # steepness of severity -> score

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"OracleConfig.{f.name}={value!r} must be a positive number")
        if self.size_tolerance <= 1.0:
            raise ValueError(f"OracleConfig.size_tolerance={self.size_tolerance!r} must be > 1 (a factor, e.g. 1.5)")


@dataclass
class OracleMeasurements:
    """What the oracle saw in one image (pixel values at the image's own size)."""

    size: int
    product_px: int = 0
    product_height_px: int = 0
    bottom_y: int = -1  # lowest row of the product and its attached parts
    wall_rgb: tuple[float, float, float] | None = None
    wall_name: str | None = None  # nearest SynthAd wall colour (prompt adherence)
    support_y: int | None = None  # first row of the support's top face
    front_y: int | None = None  # first row of a table's front edge (None: a floor, or not seen)
    references: list[tuple[str, tuple[int, int, int, int]]] = field(default_factory=list)
    ref_ppm: float | None = None  # pixels per metre the references imply
    implied_height_m: float | None = None
    expected_height_m: tuple[float, float] | None = None
    ring_share: float = 0.0  # share of the ring around the product's upper half in the product's colour
    attached_px: int = 0  # product-coloured pixels attached to the silhouette
    clutter_share: float = 0.0
    severity: dict[str, float] = field(default_factory=dict)  # class name -> z (>= 1: broken)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OracleVerdict:
    """A verdict with the fields of `rfnet.inspector.Verdict`, plus the oracle's reasons."""

    label: str
    label_index: int
    probs: dict[str, float]
    p_available: float
    reasons: tuple[str, ...] = ()
    measurements: OracleMeasurements | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"label": self.label, "label_index": self.label_index, "probs": dict(self.probs),
                "p_available": self.p_available, "reasons": list(self.reasons)}


# ----------------------------------------------------------------------------------------------
# Pixel helpers
# ----------------------------------------------------------------------------------------------


def _dist(img: np.ndarray, colour) -> np.ndarray:
    d = img - np.asarray(colour, np.float32)
    return np.sqrt(np.sum(d * d, axis=-1))


def _product_colours(img: np.ndarray, alpha: np.ndarray, named: tuple[int, int, int] | None = None,
                     slices: int = 16) -> np.ndarray:
    """(k, 3) representative colours of the product's body across its shading.

    The body is the product pixels near the colour its caption names, when that covers a good part
    of the product; otherwise the most common coarse colour bin. The body pixels are split by
    brightness into `slices` groups whose medians represent it from shadow to highlight."""
    core = alpha == 255
    if core.sum() < 16:
        core = alpha >= 128
    px = img[core]
    body = px[_dist(px, named) < 60] if named is not None else px[:0]
    if len(body) < 0.3 * len(px):
        q = (px // 40).astype(np.int32)
        keys = q[:, 0] * 49 + q[:, 1] * 7 + q[:, 2]
        mode = np.bincount(keys).argmax()
        body = px[_dist(px, np.median(px[keys == mode], axis=0)) < 60]
    body = body[np.argsort(body.sum(axis=1))]
    trim = len(body) // 20  # edge pixels blended with other parts are not the body's colour
    body = body[trim: len(body) - trim] if len(body) - 2 * trim >= 8 else body
    groups = np.array_split(body, min(slices, len(body)))
    return np.stack([np.median(g, axis=0) for g in groups if len(g)])


def _product_coloured(img: np.ndarray, colours: np.ndarray, tol: float, region) -> np.ndarray:
    """(S, S) bool: pixels within `tol` of any of `colours`, looked for inside `region` only."""
    x0, y0, x1, y1 = region
    out = np.zeros(img.shape[:2], bool)
    sub = img[y0:y1, x0:x1].reshape(-1, 3)
    d2 = (sub * sub).sum(1)[:, None] - 2.0 * sub @ colours.T + (colours * colours).sum(1)[None, :]
    out[y0:y1, x0:x1] = (d2.min(axis=1) < tol * tol).reshape(y1 - y0, x1 - x0)
    return out


def _row_modes(img: np.ndarray, keep: np.ndarray, samples: int = 32,
               tol: float = 20.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's most common colour among its kept pixels: (S, 3) colours (NaN where nothing is
    kept), (S,) the share of kept samples near it, (S,) the number of kept samples.

    A mode, not a median: a row half covered by clutter of many colours still shows the wall or
    the support behind it. Each row is sampled at `samples` columns; the sample with the most
    others within `tol` and the mean of those give the row's colour."""
    S = img.shape[0]
    cols = np.unique(np.linspace(0, img.shape[1] - 1, min(img.shape[1], samples)).round().astype(int))
    v, k = img[:, cols], keep[:, cols]
    sq = (v * v).sum(-1)
    d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * np.matmul(v, v.transpose(0, 2, 1))
    near = (d2 < tol * tol) & k[:, None, :] & k[:, :, None]
    best = near.sum(-1).argmax(axis=1)
    members = near[np.arange(S), best]
    n, kept = members.sum(axis=1), k.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        modes = (v * members[..., None]).sum(axis=1) / n[:, None]
    return modes, n / np.maximum(kept, 1), kept / len(cols)


def _background_rows(img: np.ndarray, keep: np.ndarray, window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_row_modes` over the whole row, or only beside the product's surroundings (`window`) in
    rows that clutter crowds so much that no colour dominates them."""
    rows_rgb, share, kept = _row_modes(img, keep)
    beside = keep.copy()
    beside[:, window[0]:window[2]] = False
    b_rgb, b_share, b_kept = _row_modes(img, beside)
    better = (share < 0.5) & (b_share >= 0.5) & (b_kept >= 0.15)
    rows_rgb[better], share[better], kept[better] = b_rgb[better], b_share[better], b_kept[better]
    return rows_rgb, share, kept


def _first_run(flag: np.ndarray, valid: np.ndarray, start: int) -> int | None:
    """First row >= start where `flag` holds on it and on the next valid row (invalid rows skipped)."""
    rows = [y for y in range(start, len(flag)) if valid[y]]
    for a, b in zip(rows, rows[1:]):
        if flag[a] and flag[b]:
            return a
    return None


def _mode(pixels: np.ndarray, samples: int = 64, tol: float = 20.0) -> np.ndarray | None:
    """The most common colour of (n, 3) pixels: the sample with most others within `tol`, averaged."""
    if len(pixels) == 0:
        return None
    v = pixels[np.linspace(0, len(pixels) - 1, min(len(pixels), samples)).round().astype(int)]
    near = ((v[:, None] - v[None]) ** 2).sum(-1) < tol * tol
    return v[near[near.sum(1).argmax()]].mean(axis=0)


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


# ----------------------------------------------------------------------------------------------
# The oracle
# ----------------------------------------------------------------------------------------------


class OracleInspector:
    """Judges SynthAd images by rule (module docstring). Stateless apart from a small cache of where
    each product was found, so judging a product's retries is cheap."""

    def __init__(self, config: OracleConfig | None = None, *, cache_size: int = 256):
        self.config = OracleConfig() if config is None else config
        if not isinstance(self.config, OracleConfig):
            raise TypeError(f"config must be an OracleConfig, got {type(self.config).__name__}")
        self._locator = ProductLocator(cache_size)

    # -- verdicts ------------------------------------------------------------------------------

    def judge(self, image: np.ndarray, product_alpha: np.ndarray, caption: str = "") -> OracleVerdict:
        """Verdict for one (S, S, 3) uint8 image whose product occupies `product_alpha` ((S, S)
        uint8, > 0 = product; a bool mask works too), with the product's caption."""
        m = self.measure(image, product_alpha, caption)
        return self._verdict(m)

    def judge_scene(self, scene) -> OracleVerdict:
        """Verdict for a rendered `Scene` (its own mask and caption)."""
        return self.judge(scene.image, scene.product_alpha, scene.caption)

    def inspect(self, products: list[np.ndarray], generated: list[np.ndarray], captions: list[str], *,
                masks: list[np.ndarray | None] | None = None) -> list[OracleVerdict]:
        """The Recurrent Generation judge: one verdict per generated image.

        `products`: the product cut-outs, (H, W, 4) uint8 RGBA as given to the generator (or the
        (S, S, 4) product layer of a scene); `generated`: (S, S, 3) uint8 images with the product
        pasted back; `captions`: product captions. The product is found by its pasted pixels
        (`locate`); pass `masks` ((S, S) alpha or bool, None = locate) when placements are known.
        An image whose product cannot be found is judged Indistinctiveness with p_available 0.
        """
        n = len(generated)
        if not (len(products) == n == len(captions)) or (masks is not None and len(masks) != n):
            raise ValueError(f"got {len(products)} products, {n} generated images, {len(captions)} captions"
                             + ("" if masks is None else f", {len(masks)} masks") + "; pass one of each per image")
        verdicts = []
        for i in range(n):
            _check_image("generated", i, generated[i])
            alpha = masks[i] if masks is not None and masks[i] is not None else self.locate(products[i], generated[i])
            if alpha is None:
                verdicts.append(self._not_found())
            else:
                verdicts.append(self.judge(generated[i], alpha, captions[i]))
        return verdicts

    __call__ = inspect

    def locate(self, product_rgba: np.ndarray, image: np.ndarray) -> np.ndarray | None:
        """The product's (S, S) uint8 alpha in `image`, found by its pasted pixels (see locate.py)."""
        _check_image("image", 0, image)
        return self._locator.locate(product_rgba, image)

    def _not_found(self) -> OracleVerdict:
        probs = {name: 0.0 for name in CLASS_NAMES}
        probs[INDISTINCT] = 1.0
        return OracleVerdict(INDISTINCT, CLASS_NAMES.index(INDISTINCT), probs, 0.0,
                             ("the product's pixels were not found in the image (was it pasted back?)",))

    def _verdict(self, m: OracleMeasurements) -> OracleVerdict:
        gain = self.config.gain
        scores = {name: _sigmoid(gain * (m.severity.get(name, 0.0) - 1.0)) for name in CLASS_NAMES[1:]}
        p_available = float(np.prod([1.0 - s for s in scores.values()]))
        total = sum(scores.values())
        probs = {CLASS_NAMES[AVAILABLE_INDEX]: p_available}
        for name, s in scores.items():
            probs[name] = (1.0 - p_available) * s / total if total > 0 else 0.0
        label = max(CLASS_NAMES, key=lambda k: probs[k])
        return OracleVerdict(label, CLASS_NAMES.index(label), probs, p_available, tuple(m.reasons), m)

    # -- measurements --------------------------------------------------------------------------

    def measure(self, image: np.ndarray, product_alpha: np.ndarray, caption: str = "") -> OracleMeasurements:
        """Apply every rule; returns the measurements with a severity per defect class."""
        _check_image("image", 0, image)
        alpha = _as_alpha(product_alpha, image.shape[:2])
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a str, got {type(caption).__name__}")
        cfg, S = self.config, image.shape[0]
        u = S / 64
        img = image.astype(np.float32)
        mask, solid = alpha > 0, alpha >= 128
        m = OracleMeasurements(size=S, product_px=int(mask.sum()))
        rows = np.flatnonzero(solid.any(axis=1))
        m.product_height_px = int(rows[-1] - rows[0] + 1)

        # 1. the product's colour, and product-coloured pixels outside it
        named = parse_caption(caption).color if caption else None
        colours = _product_colours(img, alpha, PRODUCT_COLORS.get(named) if named else None)
        x0, y0, x1, y1 = _box(mask)
        reach = round(0.6 * max(x1 - x0, y1 - y0)) + 2
        region = (max(0, x0 - reach), max(0, y0 - reach), min(S, x1 + reach), min(S, y1 + reach))
        coloured = _product_coloured(img, colours, cfg.product_color_tolerance, region) & ~mask
        # the ring around the product's upper half shows what is behind it (its lower half may
        # stand on a hallucinated pedestal, which is a shape, not a background, problem)
        ring = _dilate(mask, 2 * max(1, round(cfg.ring_px * u)) + 1) & ~mask
        ring[(rows[0] + rows[-1]) // 2 + 1:] = False
        m.ring_share = float(coloured[ring].mean()) if ring.any() else 0.0
        same_colour = m.ring_share >= cfg.same_color_share
        attached = np.zeros_like(mask)
        if not same_colour:
            n, labels = cv2.connectedComponents(coloured.astype(np.uint8), connectivity=8)
            touching = np.unique(labels[_dilate(mask, 3) & coloured])
            touching = touching[touching > 0]
            attached = np.isin(labels, touching)
            m.attached_px = int(attached.sum())

        # 2. scale references, by their reserved colours
        refs = self._references(img, mask, u, m)

        # 3. the wall and the support lines, from each row's most common colour
        window = context_window((x0, y0, x1, y1), S)
        rows_rgb, share, kept = _background_rows(img, ~(mask | refs | attached), window)
        self._support(rows_rgb, share, kept, m)

        # 4. severities
        min_attached = max(cfg.attached_min_px * u * u, cfg.attached_share * m.product_px)
        m.severity[SHAPE] = m.attached_px / min_attached
        m.severity[SPACE] = 0.0 if same_colour else self._space(solid | attached, m, u)
        m.clutter_share = self._clutter(img, rows_rgb, mask | attached, refs, window, m)
        m.severity[INDISTINCT] = max(m.ring_share / cfg.same_color_share, m.clutter_share / cfg.clutter_share)
        m.severity[SIZE] = 0.0 if same_colour else self._size(caption, m)
        self._explain(m)
        return m

    def _references(self, img: np.ndarray, mask: np.ndarray, u: float, m: OracleMeasurements) -> np.ndarray:
        """Scale references by their reserved colours. A component of pixels near the key colour is
        grown by two pixels into pixels still fairly near it, so a blurred edge still counts
        towards the reference's height."""
        cfg = self.config
        found = np.zeros_like(mask)
        ppms = []
        grow = np.ones((5, 5), np.uint8)
        for ref in REFERENCES.values():
            dist = _dist(img, ref.key)
            hit = (dist < cfg.reference_tolerance) & ~mask
            if hit.sum() < 3 * u * u:
                continue
            loose = (dist < cfg.reference_tolerance * 1.5) & ~mask
            n, labels, stats, _ = cv2.connectedComponentsWithStats(hit.astype(np.uint8), connectivity=8)
            for k in range(1, n):
                if stats[k, cv2.CC_STAT_HEIGHT] < 3 * u:
                    continue
                region = cv2.dilate((labels == k).astype(np.uint8), grow).astype(bool) & loose
                x, y, w, h = cv2.boundingRect(region.astype(np.uint8))
                area = int(region.sum())
                if h >= 5 * u and area >= 0.4 * w * h and area >= 6 * u * u:
                    found |= region
                    m.references.append((ref.name, (x, y, x + w, y + h)))
                    ppms.append(h / ref.height_m)
        if ppms:
            m.ref_ppm = float(np.median(ppms))
        return found

    def _support(self, rows_rgb: np.ndarray, share: np.ndarray, kept: np.ndarray, m: OracleMeasurements) -> None:
        """The wall colour, the support's top line and a table's front edge, from the rows where one
        colour dominates what is visible (rows crowded by objects are skipped): the top line is the
        first such row whose colour is not the wall's, the front edge the first below it whose
        colour is not the support's."""
        S = rows_rgb.shape[0]
        clear = (share >= 0.5) & (kept >= 0.15)
        top = max(2, round(0.12 * S))
        if not clear[:top].any():
            return
        wall = np.median(rows_rgb[:top][clear[:top]], axis=0)
        m.wall_rgb = tuple(float(v) for v in wall)
        m.wall_name = nearest_wall_color(wall)
        with np.errstate(invalid="ignore"):
            off_wall = _dist(np.nan_to_num(rows_rgb), wall) > self.config.support_edge
            m.support_y = _first_run(off_wall, clear, max(top, round(0.2 * S)))
            if m.support_y is None:
                return
            below = [y for y in range(m.support_y + 1, min(S, m.support_y + 2 + round(2 * S / 64))) if clear[y]]
            if not below:
                return
            surface = np.median(rows_rgb[below], axis=0)
            off_surface = _dist(np.nan_to_num(rows_rgb), surface) > SURFACE_TOLERANCE
            m.front_y = _first_run(off_surface, clear, m.support_y + 2)

    def _space(self, silhouette: np.ndarray, m: OracleMeasurements, u: float) -> float:
        rows = np.flatnonzero(silhouette.any(axis=1))
        m.bottom_y = int(rows[-1])
        if m.support_y is None:
            return 1.5  # no support surface anywhere: nothing to stand on
        floating = (m.support_y - m.bottom_y) / (self.config.float_px * u)
        sinking = (m.bottom_y - (m.front_y - 1)) / (self.config.sink_px * u) if m.front_y is not None else -1.0
        return max(floating, sinking, 0.0)

    def _clutter(self, img: np.ndarray, rows_rgb: np.ndarray, product: np.ndarray, refs: np.ndarray, window,
                 m: OracleMeasurements) -> float:
        """Share of the product's surroundings that differs from the wall/support behind it."""
        S = img.shape[0]
        x0, y0, x1, y1 = window
        count = np.zeros((S, S), bool)
        count[y0:y1, x0:x1] = True
        count &= ~_dilate(product, 3) & ~refs & np.isfinite(rows_rgb).all(axis=1)[:, None]
        for line in (m.support_y, m.front_y):
            if line is not None:
                count[max(0, line - 1): line + 2] = False
        if not count.any():
            return 0.0
        residual = np.sqrt(((img - np.nan_to_num(rows_rgb)[:, None, :]) ** 2).sum(axis=-1))
        return float((residual[count] > self.config.clutter_residual).mean())

    def _size(self, caption: str, m: OracleMeasurements) -> float:
        m.expected_height_m = expected_height_m(caption) if caption else None
        if m.ref_ppm is None or m.expected_height_m is None:
            return 0.0
        m.implied_height_m = m.product_height_px / m.ref_ppm
        lo, hi = m.expected_height_m
        ratio = max(m.implied_height_m / hi, lo / m.implied_height_m, 1.0)
        return math.log(ratio) / math.log(self.config.size_tolerance)

    def _explain(self, m: OracleMeasurements) -> None:
        z = m.severity
        if z[SPACE] >= 1:
            if m.support_y is None:
                m.reasons.append("no support surface found under the product")
            elif m.bottom_y < m.support_y:
                m.reasons.append(f"floating: the product ends {m.support_y - m.bottom_y} px above the support")
            else:
                m.reasons.append(f"sinking: the product goes {m.bottom_y - m.front_y + 1} px below the table's edge")
        if z[SIZE] >= 1:
            lo, hi = m.expected_height_m
            m.reasons.append(f"size: the references make the product {m.implied_height_m:.2f} m tall, "
                             f"expected {lo:.2f}-{hi:.2f} m")
        if z[INDISTINCT] >= 1:
            if m.ring_share >= self.config.same_color_share:
                m.reasons.append(f"indistinct: {m.ring_share:.0%} of its surroundings share the product's colour")
            else:
                m.reasons.append(f"indistinct: {m.clutter_share:.0%} of its surroundings is clutter")
        if z[SHAPE] >= 1:
            m.reasons.append(f"shape: {m.attached_px} product-coloured px attached to the product")
        if m.ref_ppm is None:
            m.reasons.append("no scale reference found; size not judged")


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _check_image(name: str, i: int, image) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and image.shape[0] == image.shape[1]):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name}[{i}] must be an (S, S, 3) uint8 RGB array, got {got}")


def _as_alpha(mask, shape: tuple[int, int]) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.shape != shape:
        got = getattr(mask, "shape", type(mask).__name__)
        raise ValueError(f"product_alpha must be an array of shape {shape} (the image's), got {got}")
    alpha = np.where(mask, 255, 0).astype(np.uint8) if mask.dtype == bool else mask
    if alpha.dtype != np.uint8:
        raise ValueError(f"product_alpha must be uint8 alpha or a bool mask, got {mask.dtype}")
    if not (alpha >= 128).any():
        raise ValueError("product_alpha marks no product pixel (alpha >= 128); pass the placed product's alpha")
    return alpha
