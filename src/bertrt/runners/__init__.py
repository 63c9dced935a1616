"""Runners: one interface over every inference framework, the runtimes' specs and the registry.

A runtime's module holds its runner and its :class:`~bertrt.runners.spec.Runtime`
spec; :data:`bertrt.runners.registry.RUNTIMES` lists each once. Consumers
(evaluate, predict, scoring, serving, the bench, calibrate's CPU choice) reach
models through the registry (:func:`~bertrt.runners.registry.runner_for_model`,
:func:`~bertrt.runners.registry.discover`) or a runtime spec, and run them
through the :class:`~bertrt.runners.base.Runner` lifecycle; none imports a
runtime's module to build a runner itself.
"""
