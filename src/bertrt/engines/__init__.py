"""TensorRT engines: profiles, builder, sidecar metadata, runtime runner.

Importing this package never imports TensorRT or CUDA; each module imports
them inside the functions that need them (and for the type checker only under
TYPE_CHECKING), so the CPU install and its tests work without them.
"""

from bertrt.engines.availability import cuda_availability, tensorrt_availability
from bertrt.engines.metadata import EngineMeta, GpuInfo, check_engine_compatible
from bertrt.engines.profiles import Profile, build_profile

__all__ = [
    "EngineMeta",
    "GpuInfo",
    "Profile",
    "build_profile",
    "check_engine_compatible",
    "cuda_availability",
    "tensorrt_availability",
]
