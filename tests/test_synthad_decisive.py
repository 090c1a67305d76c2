"""The abstaining oracle (reliable_ad.synthad.decisive): a verdict is decisive when its
Available-vs-not decision survives the judge's own re-readings; studies count rates over decisive
images and report the abstained share."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.synthad import gates
from reliable_ad.synthad import decisive
from reliable_ad.synthad.oracle import OracleInspector


@pytest.fixture(scope="module")
def scenes():
    return gates.render_scenes(4, seed=3)  # 4 rendered scenes per class, labels known


def test_clean_renders_are_judged_decisively_and_as_the_plain_oracle_does(scenes):
    oracle = OracleInspector()
    for i, item in enumerate(scenes):
        scene = item.scene
        judged = decisive.judge_decisive(oracle, scene.image, scene.product_alpha, scene.caption, key=i)
        assert judged.label == oracle.judge(scene.image, scene.product_alpha, scene.caption).label
        assert judged.decisive and judged.agreeing == judged.checks == len(decisive.CHECKS), scene.label_name


def test_a_reading_that_changes_the_decision_makes_the_verdict_abstain(scenes):
    """A re-reading that changes the image far beyond imperceptible (noise of sigma 40 hides the product
    in clutter) changes the decision of an Available scene: the verdict is then not decisive."""
    oracle = OracleInspector()
    scene = next(item.scene for item in scenes if item.scene.label_name == "Available")
    drastic = (*decisive.CHECKS, decisive.Perturbation("heavy noise", "noise", 40.0))
    judged = decisive.judge_decisive(oracle, scene.image, scene.product_alpha, scene.caption, key="x", checks=drastic)
    assert judged.available and not judged.decisive
    assert judged.agreeing == len(drastic) - 1


def test_checks_are_seeded_by_key_and_differ_from_gate_2s_perturbations():
    assert {c.name for c in decisive.CHECKS}.isdisjoint(p.name for p in decisive.PERTURBATIONS)
    assert decisive.PERTURBATIONS is gates.PERTURBATIONS
    image = gates.render_scenes(1, seed=0)[0].scene.image
    noise = decisive.CHECKS[1]
    draw = lambda key: noise.apply(image, np.random.default_rng(decisive.sub_seed(decisive.CHECK_SALT, key, noise.name)))
    assert np.array_equal(draw("a/1"), draw("a/1")) and not np.array_equal(draw("a/1"), draw("a/2"))


def test_summary_counts_abstentions_and_available_among_the_decisive(scenes):
    oracle = OracleInspector()
    judged = [decisive.judge_decisive(oracle, it.scene.image, it.scene.product_alpha, it.scene.caption, key=i)
              for i, it in enumerate(scenes)]
    available = next(j for j in judged if j.available)
    judged.append(decisive.DecisiveVerdict(available.verdict, agreeing=3, checks=6))  # an abstained Available one
    s = decisive.decisive_summary(judged)
    assert s["n"] == len(scenes) + 1 and s["decisive"] == len(scenes) and s["abstained"] == 1
    assert s["abstention_rate"] == pytest.approx(1 / (len(scenes) + 1))
    assert s["available_decisive"] == 4 and s["available_rate_decisive"] == pytest.approx(4 / len(scenes))
    assert decisive.decisive_summary([])["abstention_rate"] is None


def test_studies_judge_through_the_abstaining_oracle(scenes):
    """`common.judge_oracle_decisive` places each product as generation does and refuses mismatched lists."""
    from experiments.studies import common

    from reliable_ad.data.product import paste_back

    items = common.make_products(3, seed=0)
    # each product pasted where generation places it, over rendered-scene backgrounds of another product
    backgrounds = [it.scene.image for it in gates.render_scenes(1, seed=2)[:3]]
    images = [paste_back(bg, common.prepare(it, 64)) for it, bg in zip(items, backgrounds)]
    judged = common.judge_oracle_decisive(items, images, keys=[f"{it.key}/0" for it in items])
    assert len(judged) == 3 and all(isinstance(j, decisive.DecisiveVerdict) for j in judged)
    # the same placement and verdict as the plain oracle's path (`label_generated`), plus the re-readings
    assert [j.label for j in judged] == [v.label for v in common.judge_oracle(items, images)]
    assert all(j.checks == len(decisive.CHECKS) for j in judged)
    with pytest.raises(ValueError, match="one of each per image"):
        common.judge_oracle_decisive(items, images, keys=["only-one"])
