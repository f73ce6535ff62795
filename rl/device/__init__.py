"""Device-side pieces: the code agents build on, traced into the jitted training program.

* ``rollout``: env steps and rollouts in the scan, episode statistics;
* ``returns``: GAE, n-step/TD(lambda) and V-trace targets in ``[T, B]`` form;
* ``onpolicy``, ``offpolicy``: what on-policy agents (epochs of minibatch steps, annealing) and
  off-policy agents (target updates, exploration, action bounds) share;
* ``replay``: the replay buffer in the scan carry;
* ``evaluation``: evaluation episodes played inside the program;
* ``memory``: the program's memory (the carry's shapes, ``jax.eval_shape``) checked against
  the devices' before anything compiles.

Nothing here writes files, prints or logs: that is ``rl.host``. The few functions that run
on the host stand beside the device code they serve: the configuration checks run when an
agent is made, ``memory``'s budget (the memory free on the devices and the host) and the
readers of what the program returned (``evaluation.final_eval_returns``).
"""
