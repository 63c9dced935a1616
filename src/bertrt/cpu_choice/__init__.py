"""The run's CPU deployment model: the fastest candidate within the accuracy budget, on this CPU.

Its own unit, apart from the INT8 calibration that feeds it some of its
candidates: a candidate is a registry model (:class:`~bertrt.runners.spec.ModelSpec`)
plus, where its file does not exist yet, a build step (:mod:`.candidate`);
each is scored on the validation rows against fp32 and timed through the
bench's own primitives (:mod:`bertrt.runners.timing`), all candidates'
rounds interleaved, with paired ratios against the winner (:mod:`.choose`);
:mod:`.document` writes what was chosen, and on which CPU, as cpu.json.
"""
