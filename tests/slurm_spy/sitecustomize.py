"""Test spy for the multi-node Slurm test, loaded into every Python process of the job via PYTHONPATH.

In a training worker (RANK set) with DEMAKEUP_SPY_DIR set, it remembers the network handed to
`Accelerator.prepare` (the train step's ModelLoss) and, when the process exits, writes that rank's weights to
`$DEMAKEUP_SPY_DIR/rank-<RANK>.safetensors`, so the test can compare the ranks' weights. The trainer
leaves a multi-process run through `os._exit` (no atexit), so that is where the spy hooks in.
"""

import os

if os.environ.get("DEMAKEUP_SPY_DIR") and os.environ.get("RANK") is not None:
    import accelerate
    import torch

    _seen: list[torch.nn.Module] = []
    _prepare = accelerate.Accelerator.prepare
    _exit = os._exit

    def _spy_prepare(self, *args, **kwargs):
        out = _prepare(self, *args, **kwargs)
        _seen.extend(m for m in (out if isinstance(out, tuple) else (out,)) if isinstance(m, torch.nn.Module))
        return out

    def _spy_exit(code: int) -> None:
        if _seen:
            from safetensors.torch import save_file

            from demakeup_dist.train.step import plain_state_dict

            net = getattr(_seen[0], "module", _seen[0])  # unwrap DistributedDataParallel
            tensors = {k: v.detach().cpu().contiguous() for k, v in plain_state_dict(net.state_dict()).items()}
            save_file(tensors, os.path.join(os.environ["DEMAKEUP_SPY_DIR"], f"rank-{os.environ['RANK']}.safetensors"))
        _exit(code)

    accelerate.Accelerator.prepare = _spy_prepare
    os._exit = _spy_exit
