"""Run by tests under torchrun (or alone, as one process): train a few epochs through the trainer's own
setup and loop, evaluate on val, and write what this rank holds to OUT/rank{R}.json."""
import hashlib
import json
import sys
from pathlib import Path

from pixelwise.config import TrainConfig
from pixelwise.training import distributed
from pixelwise.training.engine import evaluate, setup, train_epochs


def digest(tensors) -> str:
    sha = hashlib.sha256()
    for tensor in tensors:
        sha.update(tensor.detach().contiguous().numpy().tobytes())
    return sha.hexdigest()


def main(data: str, out: str) -> None:
    cfg = TrainConfig(data=data, out=out, epochs=2, batch_size=8, crop_size=(64, 64), strategy="full",
                      pretrained=False, val_every=100, infer_scale=1.0, seed=3)
    run = setup(cfg, log=lambda line: None)
    train_epochs(run, log=lambda line: None)
    matrix = evaluate(run.model, run.val_set, run.device, run.dtype, cfg.batch_size, ctx=run.ctx).matrix
    labelled = sum(int((run.val_set.load(i)[1] != run.spec.ignore_index).sum()) for i in range(len(run.val_set)))
    report = {"world": run.ctx.world, "parameters": digest(p for p in run.model.parameters()),
              "buffers": digest(b for b in run.model.buffers() if b.is_floating_point()),
              "matrix": matrix.tolist(), "labelled_val_pixels": labelled, "history": run.state.history}
    (Path(out) / f"rank{run.ctx.rank}.json").write_text(json.dumps(report))
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
