"""`bertrt predict --data IN --out OUT`: score whole unlabelled files, in one process or on Ray.

``local`` streams a file through one activated runner in bounded memory;
``ray_engine`` spreads files or shards over a Ray Data actor pool. Both read
rows with :mod:`bertrt.data.stream`, build output columns with
:mod:`bertrt.scoring.predictions` and publish OUT atomically
(:mod:`bertrt.scoring.output`). See docs/scoring.md.
"""
