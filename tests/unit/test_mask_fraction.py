"""explorer.analysis.mask_fraction on hand-made maps and masks."""
import numpy as np
import pytest
import torch

from explorer.analysis import class_mask_fractions, mask_area, mask_fraction, stage_mask_fractions


def _mask():
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[2:6, 2:6] = True          # 16 of 64 pixels: area 0.25
    return m


def test_all_mass_inside_is_one_and_outside_is_zero():
    mask = _mask()
    inside = torch.zeros(8, 8)
    inside[3, 3], inside[4, 5] = 2.0, 1.0
    outside = torch.zeros(8, 8)
    outside[0, 0] = 5.0
    f = mask_fraction(torch.stack([inside, outside]), torch.stack([mask, mask]))
    assert f.shape == (2,)
    assert f[0] == pytest.approx(1.0) and f[1] == pytest.approx(0.0)


def test_uniform_map_scores_the_mask_area_and_zero_map_is_nan():
    mask = _mask()
    f = mask_fraction(torch.ones(8, 8), mask)
    assert f[0] == pytest.approx(0.25) == mask_area(mask)[0]
    assert np.isnan(mask_fraction(torch.zeros(8, 8), mask)[0])


def test_small_map_is_upsampled_to_the_mask_and_scale_does_not_matter():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, :4] = True                                   # left half
    coarse = torch.tensor([[1.0, 0.0], [1.0, 0.0]])       # a 2x2 map looking left
    f = mask_fraction(coarse[None], mask[None])
    assert 0.75 < f[0] <= 1.0
    assert mask_fraction(coarse * 7, mask)[0] == pytest.approx(f[0])
    assert mask_fraction(torch.ones(2, 2), mask)[0] == pytest.approx(0.5)   # uniform stays uniform


def test_one_mask_serves_many_maps_and_mismatch_raises():
    mask = _mask()
    maps = torch.ones(3, 8, 8)
    assert np.allclose(mask_fraction(maps, mask), 0.25)
    with pytest.raises(ValueError):
        mask_fraction(maps, torch.stack([mask, mask]))


def test_stage_fractions_from_a_probe_side_and_per_class_means():
    mask = _mask()
    feat = torch.zeros(2, 3, 4, 4)
    feat[:, :, 1:3, 1:3] = 1.0                           # the centre 2x2 of 4x4 = the mask's quarter
    side = {"stages": [feat.half()], "stage_names": ["layer1"]}
    out = stage_mask_fractions(side, torch.stack([mask, mask]))
    assert list(out) == ["layer1"] and out["layer1"].shape == (2,)
    assert (out["layer1"] > 0.25).all()                  # better than chance: it looks at the object
    per_class = class_mask_fractions(np.array([0.2, 0.4, np.nan, 1.0]), [0, 0, 1, 2], num_classes=4)
    assert per_class[0] == pytest.approx(0.3) and np.isnan(per_class[1]) and per_class[2] == 1.0
    assert np.isnan(per_class[3])
