"""data.loader: batches of decodable samples, the others listed."""

from mlp_mixer.data.loader import collate


def test_collate_of_only_bad_files_is_an_empty_batch():
    batch = collate([(None, "a: bad"), (None, "b: bad")])
    assert len(batch.labels) == 0 and batch.skipped == ["a: bad", "b: bad"]
