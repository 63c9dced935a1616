"""What a TensorRT engine shares between the builder and the runner.

* :mod:`availability`: is the real TensorRT (not only its type stubs) and a
  CUDA GPU present here, and if not, one line saying why;
* :mod:`profiles`: the optimization profile (batch x seq min/opt/max);
* :mod:`metadata`: the sidecar JSON written beside each engine, and the check
  that refuses an engine built for another TensorRT version or GPU.

Both :mod:`bertrt.engines` (build) and :mod:`bertrt.runners.trt_runner` (run)
import from here, so neither has to import the other. Importing this package
never imports TensorRT or CUDA.
"""
