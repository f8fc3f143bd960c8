"""Default settings of ``cluster_de``'s DE search (methods.md §4.6); importable without torch.

Population and generations are the spec's. The image counts are far below the spec's 2,000
(BN recalibration) + 5,000 (held-out score) so that a search takes minutes on a 2-core CPU
(``bench/criteria_bench.py --de-timing`` prints the figures); BN statistics settle on fewer
images than an accuracy estimate needs. Raise them (``--de-calib``, ``--de-heldout``) when time
allows.
"""

DE_POP = 20
DE_GENS = 30
DE_CALIB_IMAGES = 64
DE_HELDOUT_IMAGES = 128
DE_WORKERS = 2  # processes evaluating a generation (one torch thread each)
