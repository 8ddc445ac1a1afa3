"""build.py: the parts of a run made from its config."""
from dist_nn import build, config, models
from dist_nn.dist import GradSync, LocalCommunicator, ShardedGradSync, ShardedOptimizer
from dist_nn.optim import Adam


def test_optim_shard_chooses_the_sharded_optimizer_and_sync():
    model = models.build("mlp", (10,), 4, hidden=(20,))
    for shard in (False, True):
        run = config.load(None, [f"optim.shard={str(shard).lower()}", "optim.name=adam",
                                 "train.bucket_mb=0.0002"])
        opt, sync = build.make_optimizer_and_sync(run, model, LocalCommunicator(), lr=0.5)
        assert isinstance(opt, ShardedOptimizer) == shard
        assert isinstance(sync, ShardedGradSync) == shard and isinstance(sync, GradSync)
        assert isinstance(opt.optimizer if shard else opt, Adam) and opt.lr == 0.5
        assert not sync.average and len(sync.buckets) > 1
