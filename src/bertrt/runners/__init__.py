"""Runners: one interface over every inference framework, and the registry of model names.

Everything that runs a model (evaluate, predict, calibration scoring, the
bench, serving) goes through :mod:`bertrt.runners.registry` and the
:class:`~bertrt.runners.base.Runner` lifecycle; none of them imports a
framework's runner module directly.
"""
