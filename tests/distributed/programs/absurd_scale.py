"""Under mpiexec -n N: a Trainer run with train.amp=fp16 whose loss scale starts at an absurd
2^40, so that its first steps overflow. Every rank writes how many steps it skipped, its
final loss scale and a digest of its final parameters; rank 0 adds the validation accuracy.

    mpiexec -n N python absurd_scale.py OUT_PREFIX RUN_DIR [section.key=value ...]
"""
import hashlib
import json
import sys

from dist_nn import Trainer, backend

INITIAL_SCALE = 2.0**40


class AbsurdScale(Trainer):
    def build_optimizer(self):
        super().build_optimizer()
        self.recipe.scaler.scale = INITIAL_SCALE


def main(out_prefix, run_dir, *overrides):
    trainer = AbsurdScale(None, [f"log.run_dir={run_dir}", "train.amp=fp16", *overrides])
    result = trainer.fit()
    scaler = trainer.recipe.scaler
    # the whole parameter buffer (under optim.shard, opt.flat is this rank's shard)
    digest = hashlib.sha256(backend.to_host(trainer.sync.flat.data).tobytes()).hexdigest()
    with open(f"{out_prefix}-{trainer.comm.rank}.json", "w") as f:
        json.dump({"skipped": scaler.skipped, "scale": scaler.scale, "parameters": digest,
                   "val_accuracy": result["val_accuracy"], "step": result["step"]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
