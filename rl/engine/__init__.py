"""The engine: trains a batch of runs and brings their results to the host.

* ``runner``: ``Algorithm``, ``train`` and ``run_batch``: the jitted
  ``shard_map(vmap(scan(update)))`` over runs and devices, its chunks and host round trips,
  ``TrainResult``;
* ``distributed``: multi-host: one process per host driving one global device mesh;
* ``checkpoint``: the training carry saved and restored at chunk boundaries, stop on signals.
"""
