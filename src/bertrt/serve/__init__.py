"""Serving a run's model over the network, on NVIDIA Triton Inference Server.

Two ways, one contract (BYTES ``text``, or ``title`` + ``body`` → BYTES
``label`` and FP32 ``probabilities``):

* ``bertrt serve`` (:mod:`bertrt.serve.server`): the ``tritonserver`` that
  nvidia-pytriton ships, its Python-backend stub tokenizing and running any
  model the runner registry knows (:mod:`bertrt.serve.backend`). Nothing to
  build; the machine's Python environment is the deployment.
* ``bertrt triton-repo`` (:mod:`bertrt.serve.repo`): a standalone model
  repository for NVIDIA's ``tritonserver`` container, for scaling out
  (replicas, instance groups, Kubernetes) without this package installed.

nvidia-pytriton and tritonclient are optional (``make serve-deps``: the
``serve`` extra, then nvidia-pytriton without its numpy<2 pin), looked up or
imported only inside the functions that need them.
"""
