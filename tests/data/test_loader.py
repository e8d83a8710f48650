"""data.loader: batches of decodable samples, the others listed."""

import torch

from mlp_mixer.data.loader import collate, fill


def test_collate_of_only_bad_files_is_an_empty_batch():
    batch = collate([(None, "a: bad"), (None, "b: bad")])
    assert len(batch.labels) == 0 and batch.skipped == ["a: bad", "b: bad"]


class _Files(torch.utils.data.Dataset):
    """Index i is image i (every pixel = i), except the unreadable indices."""

    def __init__(self, unreadable):
        self.unreadable = set(unreadable)

    def __getitem__(self, i):
        return (None, f"{i}: bad") if i in self.unreadable else (torch.full((1, 2, 2), i, dtype=torch.uint8), i)


def test_fill_keeps_every_batch_full_from_its_own_indices():
    data = _Files(unreadable={1, 4, 5, 6, 7})
    short = collate([data[i] for i in (0, 1, 2, 3)])  # one unreadable: its own first image again
    assert fill(short, 4, data, [0, 1, 2, 3]).labels.tolist() == [0, 2, 3, 0]
    empty = collate([data[i] for i in (4, 5, 6, 7)])  # none readable: the global batch's first readable one
    filled = fill(empty, 4, data, [4, 5, 6, 7, 0, 1, 2, 3][::-1])
    assert filled.labels.tolist() == [3] * 4 and filled.images[:, 0, 0, 0].tolist() == [3] * 4
    assert filled.skipped == ["4: bad", "5: bad", "6: bad", "7: bad"]  # still counted as skipped
    assert len(fill(empty, 4, data, [4, 5]).labels) == 0  # nothing readable anywhere: left empty


def test_collate_stacks_hwc_views_as_they_lie_and_others_as_torch_stack():
    hwc = [torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8) for _ in range(3)]
    views = [(x.permute(2, 0, 1), i) for i, x in enumerate(hwc)]
    batch = collate(views)
    assert torch.equal(batch.images, torch.stack([v for v, _ in views]))
    assert batch.images.is_contiguous(memory_format=torch.channels_last) and batch.labels.tolist() == [0, 1, 2]
    mixed = collate([views[0], (views[1][0].contiguous(), 1)])  # not all views: a plain contiguous stack
    assert mixed.images.is_contiguous() and torch.equal(mixed.images, torch.stack([v for v, _ in views[:2]]))
    crops = [(v[:, 1:4, 2:6], i) for v, i in views]  # center-crop views: rows apart, channels innermost
    cropped = collate(crops)
    assert torch.equal(cropped.images, torch.stack([v for v, _ in crops]))
    assert cropped.images.is_contiguous(memory_format=torch.channels_last)


def test_a_workers_batch_is_collated_into_shared_memory():
    class Views(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((6, 5, 3), i, dtype=torch.uint8).permute(2, 0, 1), i

    class Probe(torch.utils.data.Dataset):  # collates inside the worker, reports where the batch lives
        def __len__(self):
            return 1

        def __getitem__(self, i):
            batch = collate([Views()[j] for j in range(4)])
            return batch.images.is_shared(), batch.images[:, 0, 0, 0].tolist()

    loader = torch.utils.data.DataLoader(Probe(), batch_size=None, num_workers=1)
    assert list(loader) == [[True, [0, 1, 2, 3]]]
    assert not collate([Views()[0]]).images.is_shared()  # in the main process: ordinary memory
