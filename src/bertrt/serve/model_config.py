"""Model ``bertrt`` of ``bertrt serve``: its Triton configuration and its one-model repository.

The configuration is built as Triton's own schema (:mod:`bertrt.serve.triton_schema`):
Python backend, the text-in / label-and-probabilities-out contract, the instance
group and the dynamic batcher from :class:`~bertrt.serve.options.ServeOptions`, and
the ``bertrt`` parameter (JSON) that tells each instance's stub what to load
(:mod:`bertrt.serve.backend`). :func:`write_serving_repository` lays it out with the
``model.py`` that imports the served model and the Python backend Triton loads it with.
(The standalone repository of ``bertrt triton-repo`` is :mod:`bertrt.serve.repo`'s.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertrt.config import Config
from bertrt.hardware import usable_cores
from bertrt.runners.identity import Device
from bertrt.serve.client import MODEL_NAME  # the name clients ask for
from bertrt.serve.model import SETTINGS_PARAMETER
from bertrt.serve.options import ServeOptions
from bertrt.serve.stub_env import path_line
from bertrt.serve.triton_schema import TEXT_SPECS, out_specs, schema, tensors

if TYPE_CHECKING:
    from bertrt.serve.triton_process import TritonInstall

MODEL_PY = f"""# Written by `bertrt serve`: Triton's Python backend runs bertrt's served model here.
import sys

{path_line()}
from bertrt.serve.backend import TritonPythonModel  # noqa: E402,F401
"""


def takes_turns(options: ServeOptions, device: str = Device.CPU) -> bool:
    """Whether the instances run the model one at a time (a lock they share).

    On the CPU, by default: each instance then gets every core, and the
    cores are never split between two models computing at once. A GPU
    model's instances (a TensorRT engine's) run in parallel.
    """
    return options.instances > 1 and not options.parallel_instances and device == Device.CPU


def preferred_batch(options: ServeOptions, device: str = Device.CPU) -> int:
    """Triton's preferred batch size for a model on ``device`` (0: none, batches as large as
    queued): one request per execution on the CPU, as queued on a GPU."""
    if options.preferred_batch is not None:
        return options.preferred_batch
    return 1 if device == Device.CPU else 0


def instance_threads(config: Config, instances: int, turns: bool = False) -> int:
    """Intra-op threads per Triton instance: every core when they take turns, else a share."""
    return config.threads or max(1, usable_cores() // (1 if turns else instances))


def model_config(
    config: Config,
    run_dir: Path,
    model: str,
    options: ServeOptions,
    classes: int,
    batch_limit: int | None = None,
    device: str = Device.CPU,
) -> Any:
    """Model ``bertrt``'s configuration, built as Triton's own schema (tritonclient's protobuf).

    ``classes``, ``batch_limit`` (the largest batch the model takes, a TensorRT engine's
    profile bounding it; None: any) and ``device`` (its runner's) are the loaded model's
    (:meth:`bertrt.serve.model.ServedModel.largest_batch`): nothing is read from the run
    or parsed out of the model's name here; ``run_dir`` is only named, for each instance's
    stub to open.
    """
    pb = schema()
    max_batch = min(options.max_batch, batch_limit or options.max_batch)
    out = pb.ModelConfig(name=MODEL_NAME, backend="python", max_batch_size=max_batch)
    out.input.extend(tensors(pb, TEXT_SPECS, "input"))
    out.output.extend(tensors(pb, out_specs(classes), "output"))
    group = out.instance_group.add()
    group.count = options.instances
    group.kind = pb.ModelInstanceGroup.Kind.Value("KIND_CPU")
    if options.dynamic_batching:
        out.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
        out.dynamic_batching.default_queue_policy.max_queue_size = options.max_queue_size
        preferred = preferred_batch(options, device)
        if preferred:
            out.dynamic_batching.preferred_batch_size.append(min(preferred, max_batch))
    settings = {
        "run_dir": str(run_dir.resolve()),
        "model": model,
        "threads": instance_threads(config, options.instances, takes_turns(options, device)),
        "turns": takes_turns(options, device),
        "max_length": config.model.max_length,
        "max_request_bytes": options.max_request_bytes,
    }
    out.parameters[SETTINGS_PARAMETER].string_value = json.dumps(settings)
    return out


def write_serving_repository(root: Path, install: TritonInstall, model_cfg: Any) -> None:
    """``root/models/bertrt`` (config + model.py) and ``root/backends`` (the Python backend + stub)."""
    from google.protobuf import text_format

    version = root / "models" / MODEL_NAME / "1"
    version.mkdir(parents=True)
    (version.parent / "config.pbtxt").write_text(text_format.MessageToString(model_cfg))
    (version / "model.py").write_text(MODEL_PY)
    shutil.copytree(install.backends, root / "backends")
    shutil.copy(install.stub, root / "backends" / "python" / install.stub.name)
