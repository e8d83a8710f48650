"""Every variant against the paper's Table 1, built on the meta device so nothing is allocated."""

import pytest

from mlp_mixer import PAPER_VARIANTS, VARIANTS, count_parameters, create_model
from mlp_mixer.analysis.summary import count_macs, variants_table
from mlp_mixer.model.variants import canonical_name

TABLE_1_MILLIONS = {"S/32": 19, "S/16": 18, "B/32": 60, "B/16": 59, "L/32": 206, "L/16": 207, "H/14": 431}


@pytest.mark.parametrize("name", PAPER_VARIANTS)
def test_parameters_without_head_match_table_1(name):
    model = create_model(name, device="meta")
    assert round(count_parameters(model, head=False) / 1e6) == TABLE_1_MILLIONS[name]
    assert model.num_patches == (224 // VARIANTS[name]["patch_size"]) ** 2


def test_b16_exact_parameters_and_macs():
    model = create_model("B/16", device="meta")
    assert count_parameters(model) == 59_880_472
    assert round(count_macs(model, (1, 3, 224, 224))[""] / 1e9, 1) == 12.6


def test_table_lists_every_variant_with_gmacs():
    rows = {r.name: r for r in variants_table()}
    assert list(rows) == list(PAPER_VARIANTS)
    assert rows["B/16"].params == 59_880_472 and round(rows["B/16"].gmacs, 1) == 12.6
    assert rows["H/14"].num_patches == 256 and rows["H/14"].gmacs > rows["L/16"].gmacs


def test_overrides_and_custom_sizes():
    model = create_model("S/32", num_classes=10, image_size=64, in_channels=1, device="meta")
    assert (model.num_classes, model.image_size, model.in_channels, model.num_patches) == (10, (64, 64), 1, 4)


@pytest.mark.parametrize("spelling", ["B/16", "b/16", "Mixer-B/16", "B_16", "b16", "mixer_b16_224"])
def test_spellings(spelling):
    assert canonical_name(spelling) == "B/16"


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown variant 'X/16'; valid names: S/32, S/16, B/32"):
        create_model("X/16")
