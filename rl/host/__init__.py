"""Host-side tools: NumPy, files and the terminal, never traced into the training program.

* ``stats``: final return, IQM, bootstrap intervals, performance profiles, learning curves;
* ``aggregate``: statistics over seeds per update (``metrics_over_seeds.csv``);
* ``sinks``, ``columnar``: where each chunk of metrics goes (CSV, JSON lines, TensorBoard,
  W&B, Parquet);
* ``runs``: the run folder (``config.json``, ``summary.json``, parameters, checkpoints);
* ``files``: crash-safe (atomic) file writes;
* ``plots``: learning curves and sweep plots as PNG files;
* ``progress``: the progress bar, or plain lines where the output is not a terminal;
* ``scores``: final scores of run and sweep folders as rliable's ``score_dict``;
* ``bandits``: NumPy reference policies for Bernoulli bandits (Thompson sampling, UCB1).
"""
