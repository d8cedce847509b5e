import pytest
import torch

from toco_ray.distributed.loaders import GlobalBatchSampler, per_worker_batch, val_shard

pytestmark = pytest.mark.unit


def test_global_batch_must_split_over_workers():
    assert per_worker_batch(8, 2) == 4
    with pytest.raises(ValueError, match="train.global_batch.*3 workers"):
        per_worker_batch(8, 3)


def test_workers_share_each_global_batch_without_overlap():
    single = list(GlobalBatchSampler(10, global_batch=4, rank=0, world_size=1, seed=5, epoch=0))
    halves = [list(GlobalBatchSampler(10, 4, rank=r, world_size=2, seed=5, epoch=0)) for r in range(2)]
    # 10 images, global batch 4 → 2 full batches per epoch (the last 2 images wait for the next epoch)
    assert len(single) == 2 and all(len(b) == 4 for b in single)
    for k in range(2):
        assert halves[0][k] + halves[1][k] == single[k]  # rank 0 takes the first half, rank 1 the second
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(5)).tolist()
    assert single[0] == perm[:4] and single[1] == perm[4:8]


def test_each_epoch_is_reshuffled_and_resume_skips_done_batches():
    epoch0 = list(GlobalBatchSampler(12, 4, 0, 1, seed=0, epoch=0))
    epoch1 = list(GlobalBatchSampler(12, 4, 0, 1, seed=0, epoch=1))
    assert epoch0 != epoch1 and sorted(sum(epoch0, [])) == sorted(sum(epoch1, [])) == list(range(12))
    resumed = list(GlobalBatchSampler(12, 4, 0, 1, seed=0, epoch=1, start=2))
    assert resumed == epoch1[2:]


def test_training_set_smaller_than_a_global_batch_is_an_error():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        GlobalBatchSampler(3, 4, 0, 1, seed=0, epoch=0)


def test_val_shards_cover_every_image_exactly_once():
    data = list(range(7))
    shards = [list(val_shard(data, r, 3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
