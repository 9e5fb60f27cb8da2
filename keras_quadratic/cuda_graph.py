"""`CUDAGraphTrainStep`: `model.fit` on the torch backend, each training
step replayed as one CUDA graph.

Keras's torch backend runs a training step eagerly: each of its few
thousand operations goes from Python to the GPU on its own, and each
Python number that becomes a tensor (a momentum, a metric's batch size)
waits for the GPU to finish what it was doing. The GPU idles between
small kernels. A CUDA graph records the whole step (forward, backward,
the optimizer's update, the metrics) once and replays it with one launch.
"""

import warnings

import keras

#: Input shapes that get a graph each; further shapes run eagerly.
MAX_GRAPHS = 8
#: The devices whose host constants `_constants_on_device` fills in place.
_GRAPH_DEVICE_TYPES = ("cuda",)


def _is_tensor(x):
    import torch

    return isinstance(x, torch.Tensor)


def _key(leaves):
    """One graph per structure of shapes and dtypes (a last, smaller batch
    gets its own); None when a leaf is neither a tensor nor None."""
    key = []
    for leaf in leaves:
        if leaf is None:
            key.append(None)
        elif _is_tensor(leaf):
            key.append((tuple(leaf.shape), leaf.dtype))
        else:
            return None
    return tuple(key)


def _constants_on_device():
    """A torch function mode in which `torch.tensor`/`torch.as_tensor` of
    host constants (a Python number, a short list, tuple or NumPy array of
    them) on a CUDA device fill new tensors there instead of copying from
    the host: such a copy waits for the GPU, which a CUDA graph capture
    refuses. Keras makes such tensors inside every step: `ops.multiply(x,
    0.9)`, a metric's batch size, a loss's `ops.shape(values)`."""
    import numpy as np
    import torch
    from torch.overrides import TorchFunctionMode

    def constant(data):
        if isinstance(data, (bool, int, float, np.bool_, np.number)):
            return not isinstance(data, np.complexfloating)
        if isinstance(data, np.ndarray):
            return data.size <= 64 and data.dtype.kind in "biuf"
        return (isinstance(data, (list, tuple)) and len(data) <= 64
                and all(constant(item) for item in data))

    class ConstantsOnDevice(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            device = kwargs.get("device")
            if (func not in (torch.tensor, torch.as_tensor) or len(args) != 1
                    or device is None
                    or torch.device(device).type not in _GRAPH_DEVICE_TYPES
                    or not set(kwargs) <= {"dtype", "device", "requires_grad"}
                    or not constant(args[0])):
                return func(*args, **kwargs)
            host = func(args[0], dtype=kwargs.get("dtype"))
            values = [torch.full((), value, dtype=host.dtype, device=device)
                      for value in host.reshape(-1).tolist()]
            result = (values[0].reshape(host.shape) if len(values) == 1
                      else torch.stack(values).reshape(host.shape)
                      if values else torch.empty(host.shape, dtype=host.dtype,
                                                 device=device))
            return result.requires_grad_(kwargs.get("requires_grad", False))

    return ConstantsOnDevice()


def _where(error):
    """'file:line' of the innermost frame outside torch where `error` (or
    the error it came from, for a failed capture) was raised."""
    import traceback

    while error.__context__ is not None:
        error = error.__context__
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "/torch/" not in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {frame.filename}:{frame.lineno} ({frame.line})"


def _on_side_stream(function):
    """Runs `function()` on a side stream, as PyTorch asks of the steps
    before a capture (cuDNN and autograd set up their per-stream state)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        result = function()
    torch.cuda.current_stream().wait_stream(stream)
    return result


def _capture(function):
    """Records `function()` as a CUDA graph; returns `replay`, which runs
    the recorded kernels and returns the recorded outputs (tensors that
    each replay overwrites)."""
    import torch

    graph = torch.cuda.CUDAGraph()
    with _constants_on_device(), torch.cuda.graph(graph):
        outputs = function()

    def replay():
        graph.replay()
        return outputs

    return replay


def _cuda_ready():
    """Why no graph can be used here, or None."""
    from keras_quadratic.devices import compute_device

    device = compute_device()
    if device["platform"] != "gpu":
        return (f"Keras computes on the {device['platform']}, and CUDA graphs "
                "need a CUDA GPU")
    return None


class _Shape:
    """The state of one input shape: eager steps so far, then its graph."""

    def __init__(self):
        self.steps = 0
        self.replay = None
        self.inputs = None  # the graph's input tensors (leaves or None)


class CUDAGraphTrainStep(keras.callbacks.Callback):
    """Runs each training step of `model.fit` as one CUDA graph (torch).

    For each shape of batch, the first `warmup_steps` steps run eagerly
    (they build the optimizer and let cuDNN choose its algorithms); the
    next step is recorded as a CUDA graph, and every later step copies its
    batch into the graph's input tensors and replays the graph: one launch
    in place of thousands. The steps compute what eager steps compute:
    the same kernels, on the same variables, updated in place.

    Only the training step is replayed; `evaluate`, `predict` and the
    validation at each epoch's end run as before. A last, smaller batch
    gets a graph of its own (up to `MAX_GRAPHS` shapes; further shapes run
    eagerly).

    Where a graph cannot be used the step runs eagerly and the callback
    warns (or raises, with `fallback="raise"`):
    - Keras computes on the CPU (no CUDA GPU);
    - the step waits for the GPU while it runs: a `.item()` or `float()`
      of a tensor, a tensor made from host data, a random op with a
      generator of its own (Keras's dropout and random augmentation
      layers), `keras.optimizers.SGD` on torch (its update reads the
      learning rate on the host: use `kq.optimizers.PyTorchSGD`), loss
      scaling (`mixed_float16`; `mixed_bfloat16` needs none).
    Also where a batch holds something other than tensors, and for batch
    shapes beyond `MAX_GRAPHS`. Python numbers the step reads are frozen
    at their recorded values: a learning rate (a variable, or a schedule
    of the step count) and ReLinear's gammas (variables) may change
    between steps; an optimizer's `momentum` or `nesterov`, Python
    attributes, may not. Steps that branch on the device with `ops.cond`
    (`gradient_accumulation_steps`, `ema_overwrite_frequency`,
    `CosineDecay` with a warm-up) cannot be recorded (the warning says
    where). With `cudnn_benchmark=True` cuDNN may choose other algorithms
    than an eager run without it, so results can differ in the last bits.

    On JAX and TensorFlow, whose steps Keras already compiles, it does
    nothing. It cannot be combined with `jit_compile=True` (torch.compile).

    Args:
        warmup_steps: int >= 1, eager steps for each shape of batch before
            its graph is recorded.
        cudnn_benchmark: whether to let cuDNN time its algorithms and keep
            the fastest (`torch.backends.cudnn.benchmark`) during
            training; the flag is restored at the end.
        fallback: `"warn"` (default) or `"raise"`: what to do where no
            graph can be used.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> model = keras.Sequential([keras.Input((4,)), kq.QuadraticDense(8),
    ...                           keras.layers.Dense(1)])
    >>> model.compile(kq.optimizers.ReLinearOptimizer(
    ...     kq.optimizers.PyTorchSGD(0.01, momentum=0.9)), "mse")
    >>> graphs = kq.callbacks.CUDAGraphTrainStep()
    >>> x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    >>> history = model.fit(x, y, batch_size=16, callbacks=[graphs],
    ...                     verbose=0)
    >>> # 1 with torch on a CUDA GPU (steps 1-3 eager, then replays); on
    >>> # the CPU, 0 (and a warning on torch)
    >>> graphs.recorded_graphs in (0, 1)
    True
    """

    def __init__(self, warmup_steps=3, cudnn_benchmark=True,
                 fallback="warn"):
        super().__init__()
        if (isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int)
                or warmup_steps < 1):
            raise ValueError(
                "CUDAGraphTrainStep: `warmup_steps` must be an int >= 1. "
                f"Received: warmup_steps={warmup_steps!r}")
        if not isinstance(cudnn_benchmark, bool):
            raise TypeError(
                "CUDAGraphTrainStep: `cudnn_benchmark` must be a bool. "
                f"Received: cudnn_benchmark={cudnn_benchmark!r}")
        if fallback not in ("warn", "raise"):
            raise ValueError(
                "CUDAGraphTrainStep: `fallback` must be 'warn' or 'raise'. "
                f"Received: fallback={fallback!r}")
        self.warmup_steps = warmup_steps
        self.cudnn_benchmark = cudnn_benchmark
        self.fallback = fallback
        #: Graphs recorded by the last (or current) `fit`.
        self.recorded_graphs = 0
        #: Why the last `fit` ran its steps eagerly, or None.
        self.fallback_reason = None
        self._eager_step = None

    def _give_up(self, why, consequence="the training steps run eagerly"):
        self.fallback_reason = why
        message = f"CUDAGraphTrainStep: {why}; {consequence}."
        if self.fallback == "raise":
            raise RuntimeError(message)
        warnings.warn(message, stacklevel=3)

    def on_train_begin(self, logs=None):
        self.recorded_graphs = 0
        self.fallback_reason = None
        if keras.backend.backend() != "torch":
            return
        if self.model.jit_compile:
            raise ValueError(
                "CUDAGraphTrainStep: the model was compiled with "
                "jit_compile=True (torch.compile); a CUDA graph replaces it. "
                "Compile with jit_compile=False.")
        why = _cuda_ready()
        if why:
            self._give_up(why)
            return
        import torch

        # A fit that raised (Ctrl-C, an error) never reached on_train_end:
        # its wrapper may still be the model's step. Undo it first.
        step = self.model.train_function
        while isinstance(getattr(step, "__self__", None),
                         CUDAGraphTrainStep):
            stale = step.__self__
            step = stale._eager_step
            torch.backends.cudnn.benchmark = stale._cudnn_benchmark
            stale._eager_step, stale._shapes = None, {}
        self._shapes = {}
        self._disabled = False
        self._warned = set()
        self._cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        self._eager_step = step
        self.model.train_function = self._step

    def on_train_end(self, logs=None):
        if self._eager_step is None:
            return
        import torch

        if self.model.train_function == self._step:
            self.model.train_function = self._eager_step
        torch.backends.cudnn.benchmark = self._cudnn_benchmark
        self._eager_step = None
        self._shapes = {}  # frees the graphs' memory

    def _note(self, why):
        """Some steps run eagerly: said once per cause (raised with
        fallback="raise")."""
        if why not in self._warned:
            self._warned.add(why)
            self._give_up(why, "these training steps run eagerly")

    def _step(self, data):
        leaves = keras.tree.flatten(data)
        if self._disabled:
            return self._eager_step(data)
        key = _key(leaves)
        if key is None:
            self._note("a batch holds something other than tensors")
            return self._eager_step(data)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= MAX_GRAPHS:
                self._note(f"more than {MAX_GRAPHS} shapes of batch")
                return self._eager_step(data)
            shape = self._shapes[key] = _Shape()
        if shape.replay is None and shape.steps < self.warmup_steps:
            shape.steps += 1
            return _on_side_stream(lambda: self._eager_step(data))
        if shape.replay is None:
            import torch

            device = keras.ops.zeros(()).device
            shape.inputs = [
                None if leaf is None else
                torch.empty(leaf.shape, dtype=leaf.dtype, device=device)
                for leaf in leaves]
            self._copy_in(shape, leaves)
            inputs = keras.tree.pack_sequence_as(data, shape.inputs)
            try:
                shape.replay = _capture(lambda: self._eager_step(inputs))
            except Exception as error:  # noqa: BLE001 - reported, then eager
                self._disabled = True
                self._shapes = {}
                text = str(error).strip().splitlines()[0][:300] if str(
                    error).strip() else ""
                waits = any("captur" in str(e).lower()
                            for e in (error, error.__context__) if e)
                self._give_up(
                    "the training step could not be recorded as a CUDA "
                    f"graph ({type(error).__name__}: {text}{_where(error)})"
                    + (": something in it waits for the GPU (see the "
                       "class docstring)" if waits else ""))
                return self._eager_step(data)
            self.recorded_graphs += 1
            # The capture recorded the step without running it: run it now.
        else:
            self._copy_in(shape, leaves)
        outputs = shape.replay()
        # The next replay overwrites the outputs: hand out copies.
        return keras.tree.map_structure(
            lambda x: x.clone() if _is_tensor(x) else x, outputs)

    @staticmethod
    def _copy_in(shape, leaves):
        for target, leaf in zip(shape.inputs, leaves):
            if target is not None:
                target.copy_(leaf, non_blocking=True)
