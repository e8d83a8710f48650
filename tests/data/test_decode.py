"""data.decode: odd image files decode by content, or fail naming the file."""

import numpy as np
import pytest
import torch

from mlp_mixer.data.decode import ImageError, read_image


@pytest.mark.parametrize("in_channels", [1, 3])
def test_read_image_decodes_every_kind_or_names_the_file(odd_images, in_channels):
    for kind, (path, decodable) in odd_images.items():
        if decodable:
            image = read_image(path, in_channels)
            assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == in_channels, kind
        else:
            with pytest.raises(ImageError, match=path.split("/")[-1]):
                read_image(path, in_channels)


def test_sixteen_bit_keeps_the_top_byte(odd_images):
    image = read_image(odd_images["sixteen_bit"][0], 1)
    expected = torch.from_numpy((np.arange(300, dtype=np.int64).reshape(15, 20) * 200) >> 8).to(torch.uint8)
    assert torch.equal(image[0], expected)
