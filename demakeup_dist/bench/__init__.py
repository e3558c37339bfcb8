"""`demakeup bench`: train-step throughput of the networks, timed against a straightforward reference.

A step is the training loop's own (train/step.py: network + loss in one module, uint8 batches turned
into floats inside it, backward, clip to norm 1, AdamW (fused), LR schedule, through an
accelerator with the run's precision; channels_last on CUDA). Batches are either synthetic uint8
tensors already on the device ("memory" feed) or real shards through the training loop's data feed
(data/feed.py, with `data_cache` as `demakeup train --data-cache`: "shards" feed), whose rate against
the memory feed shows what the input pipeline costs. Each (model, variant) is built, warmed up (that
is when torch.compile compiles) and timed over `steps` steps, wall clock between two device
synchronisations. The reference network (models/reference_arch.py) runs through the same step in the
same process, so "x ref" compares networks like with like.

    config.py    BenchConfig: what every case shares, its defaults per device, its checks
    variants.py  the ways of building a network that a run compares
    timing.py    one case: the network in the training loop's step, fed and timed
    run.py       every case of a request, one failure not costing the others; `demakeup bench` end to end
    results.py   rows, ratios, the JSON record, the printed table, merging runs made side by side
    gate.py      processes sharing one GPU: compile together, time one at a time

This file imports nothing heavy: the command line reads WHATS, FEEDS and the variants at start-up.
"""

WHATS = ("train", "data", "all")
"""What `demakeup bench` times: the memory feed only, or the shards feed and the data engine as well."""
FEEDS = ("memory", "shards")
