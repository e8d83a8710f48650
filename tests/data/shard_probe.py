"""Run under torchrun by tests/data/test_shards.py: what every process reads from shards, as the training loop and the
held-out evaluation read them (DataLoader workers and all), gathered on rank 0 and written as JSON.

    torchrun ... tests/data/shard_probe.py SHARDS OUT.json WORKERS GLOBAL_BATCH
"""

import json
import sys
from pathlib import Path

import torch

import mlp_mixer.data
from mlp_mixer.data.loader import batches_of, iterate_stream
from mlp_mixer.data.transforms import train_geometry
from mlp_mixer.train import distributed
from mlp_mixer.train.config import TrainConfig
from mlp_mixer.train.inputs import open_data, shard_epoch


def keys(batches) -> list[list[str]]:
    return [list(b.keys) for b in batches]


def main() -> None:
    data, out, workers, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    distributed.init_from_env()
    cpu = torch.device("cpu")
    config = TrainConfig(data=data, seed=3, batch_size=batch, workers=workers, val_fraction=0.1, in_channels=None)
    splits = open_data(config)
    splits.train.transform = train_geometry((8, 8), 0.5, (1, 5))  # decoded and augmented in the workers
    splits.val.transform = train_geometry((8, 8), 1.0, None)
    steps = len(splits.train) // batch  # what prepare_run gives every process
    rank, world = distributed.rank(), distributed.world_size()
    result = {"rank": rank, "world": world, "steps": steps, "module": mlp_mixer.data.__file__}
    result["epoch0"] = keys(shard_epoch(splits.train, config, 0, steps, 0, cpu))
    result["epoch0_again"] = keys(shard_epoch(splits.train, config, 0, steps, 0, cpu))
    result["epoch1"] = keys(shard_epoch(splits.train, config, 1, steps, 0, cpu))
    result["epoch1_resumed_at_2"] = keys(shard_epoch(splits.train, config, 1, steps, 2, cpu))
    whole = splits.train.split(rank, world)  # the whole stream, not cut to steps
    whole.seed, whole.epoch = 3, 0
    result["whole_epoch0"] = [k for b in iterate_stream(whole, batch // world, workers, cpu) for k in b.keys]
    val = distributed.shard_dataset(splits.val)
    result["val"] = [k for b in batches_of(val, 5, workers, cpu) for k in b.keys]
    gathered = distributed.gather_list([json.dumps(result)])
    if rank == 0:
        out.write_text(json.dumps([json.loads(g) for g in gathered]))
    distributed.teardown()


if __name__ == "__main__":
    main()
