"""SynthAd: a laptop-scale procedural world of advertising images where every failure class of the
paper (docs/method.md §1) is injected on purpose and judged by a rule-based oracle, so the method's
claims can be measured against a known truth without real generators or the RF1M data.

- `products`: procedural product cut-outs with captions ("a large red suitcase").
- `scenes`: scenes from prompt attributes, with true depth/salience and at most one injected defect.
- `oracle`: the rule-based inspector (a Recurrent Generation judge too).
- `dataset`: labelled datasets in the RF1M layout, with the true maps in the modality cache.
- `generated`: keyed products for a generator, and the oracle's labels of the images it made.

numpy and OpenCV only, on `reliable_ad.core` and `reliable_ad.data`: nothing imported here needs
torch or another part of reliable_ad. The trained "synthad" models ship in `weights/`; what made
them (and the paper's studies on SynthAd) lives outside the package, in the repository's
`experiments/` folder.
"""

from reliable_ad.synthad.dataset import (DatasetSummary, SceneItem, class_schedule, generate_scenes,
                                         write_synthad_dataset)
from reliable_ad.synthad.layout import Layout, LayoutError
from reliable_ad.synthad.oracle import OracleConfig, OracleInspector, OracleMeasurements, OracleVerdict
from reliable_ad.synthad.products import (CATEGORIES, CATEGORY_NAMES, COLOR_NAMES, PRODUCT_COLORS, SynthProduct,
                                          caption_for, parse_caption, render_product, sample_product,
                                          write_product_png)
from reliable_ad.synthad.scenes import (CLUTTER_LEVELS, DEFECT_VARIANTS, Scene, SceneAttributes, attribute_conflicts,
                                        attributes_from_prompt, render_scene, sample_attributes, scene_prompt)
from reliable_ad.synthad.world import REFERENCES, SIZE_CLASSES, SURFACES, WALL_COLORS

__all__ = [
    "CATEGORIES", "CATEGORY_NAMES", "CLUTTER_LEVELS", "COLOR_NAMES", "DEFECT_VARIANTS", "DatasetSummary", "Layout",
    "LayoutError", "OracleConfig", "OracleInspector", "OracleMeasurements", "OracleVerdict", "PRODUCT_COLORS",
    "REFERENCES", "SIZE_CLASSES", "SURFACES", "Scene", "SceneAttributes", "SceneItem", "SynthProduct", "WALL_COLORS",
    "attribute_conflicts", "attributes_from_prompt", "caption_for", "class_schedule", "generate_scenes",
    "parse_caption", "render_product", "render_scene", "sample_attributes", "sample_product", "scene_prompt",
    "write_product_png", "write_synthad_dataset",
]
