"""The one float -> uint8 rule and the panel layout shared by the sample panels and the report grid."""

import numpy as np
import torch

from demakeup_dist.pictures import centre_crop, tiles, to_uint8_image
from demakeup_dist.train.evaluation import sample_panel


def test_to_uint8_image_clamps_and_rounds_half_up():
    # k + 0.5 is exact in float32 for these: round-half-up gives k + 1 where round() (half to even) gives k.
    values = torch.tensor([-0.2, 0.0, 0.4999 / 255, 0.5 / 255, 2.5 / 255, 7 / 255, 0.5, 254.5 / 255, 1.0, 1.3])
    image = values.view(1, 1, -1).expand(3, 1, -1)  # (3, 1, 10)
    expected = np.array([0, 0, 0, 1, 3, 7, 128, 255, 255, 255], dtype=np.uint8)
    pixels = to_uint8_image(image)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 10, 3)
    np.testing.assert_array_equal(pixels[0, :, 1], expected)
    batch = to_uint8_image(torch.stack([image, image.flip(-1)]))  # (B, 3, H, W) -> (B, H, W, 3)
    assert batch.shape == (2, 1, 10, 3) and (batch[1, 0, :, 0] == expected[::-1]).all()
    every = torch.arange(256, dtype=torch.float32) / 255  # what the loader makes of each uint8 value
    np.testing.assert_array_equal(to_uint8_image(every.view(1, 1, -1).expand(3, 1, -1))[0, :, 0], np.arange(256))


def test_centre_crop_and_tiles_layout():
    hr = torch.arange(16.0).view(1, 1, 4, 4).expand(2, 3, 4, 4)
    assert centre_crop(hr, 2)[0, 0].tolist() == [[5.0, 6.0], [9.0, 10.0]]
    a, b = torch.zeros(3, 3, 2, 2), torch.ones(3, 3, 2, 2)
    picture = tiles([a, b], rows=2)
    assert picture.shape == (4, 4, 3) and (picture[:, :2] == 0).all() and (picture[:, 2:] == 255).all()


def test_sample_panel_uses_the_rule_and_the_centre_crop():
    size, half = 16, torch.full((2, 3, 16, 16), 2.5 / 255)
    hr = torch.zeros(2, 3, 4 * size, 4 * size)
    hr[..., 24:40, 24:40] = 7 / 255  # the central 16 x 16 window
    first = {"makeup": half, "non_makeup": half, "pred_demakeup": half, "hr": hr, "pred_sr": hr}
    panel = np.asarray(sample_panel(first, count=1))
    assert panel.shape == (size, 5 * size, 3)
    assert (panel[:, :3 * size] == 3).all() and (panel[:, 3 * size:] == 7).all()
