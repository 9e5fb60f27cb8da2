"""Where Keras computes, and how to make it compute on the GPU.

`compute_device()` names the device the current Keras backend computes on;
`check_device()` prints it and warns (or fails, with `require_gpu=True`)
when the machine has an NVIDIA GPU that the backend does not use, naming
the install line that fixes it.

    import keras_quadratic as kq

    device = kq.devices.compute_device()   # e.g. {"backend": "jax",
    print(device["platform"])              #   "platform": "cpu", ...}
"""

import glob
import os
import shutil
import subprocess
import sys

import keras

# What to run when the backend computes on the CPU of a machine with an
# NVIDIA GPU (Linux): the CUDA build of the backend, replacing a CPU build.
GPU_INSTALL = {
    "jax": 'pip install ".[jax-cuda]"',
    "tensorflow": 'pip uninstall -y tensorflow-cpu && pip install '
                  '".[tensorflow-cuda,examples]"',
    "torch": "pip uninstall -y torch && pip install torch  (PyPI's Linux "
             "torch wheel is the CUDA build)",
}
_STILL_CPU = ("if that is installed already, check the NVIDIA driver "
              "(nvidia-smi) and CUDA_VISIBLE_DEVICES")


def compute_device():
    """The device the current Keras backend computes on.

    Returns:
        A dict with `backend` (`keras.backend.backend()`), `platform`
        (`"gpu"`, `"cpu"`, `"tpu"` or `"mps"`), `name` (the card's name on
        a GPU, else the platform) and `count` (devices of that platform
        this process sees).
    """
    backend = keras.backend.backend()
    platform, name, count = "cpu", "cpu", 1
    if backend == "jax":
        import jax

        devices = jax.devices()
        platform = devices[0].platform
        name = devices[0].device_kind if platform != "cpu" else "cpu"
        count = len(devices)
    elif backend == "torch":
        import torch

        # Where Keras puts its tensors (KERAS_TORCH_DEVICE can override
        # what torch has).
        device = keras.ops.zeros((1,)).device
        if device.type == "cuda":
            platform, count = "gpu", torch.cuda.device_count()
            name = torch.cuda.get_device_name(device)
        elif device.type != "cpu":
            platform = name = device.type
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            platform, count = "gpu", len(gpus)
            details = tf.config.experimental.get_device_details(gpus[0])
            name = details.get("device_name", gpus[0].name)
    return {"backend": backend, "platform": platform, "name": name,
            "count": count}


def nvidia_gpu_present():
    """Whether this process could use an NVIDIA GPU, whatever the Python
    packages can see: a GPU device node (`/dev/nvidia0`, ...) is there and
    `CUDA_VISIBLE_DEVICES` does not hide it (or, with no device nodes to
    look at, `nvidia-smi -L` lists one)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if glob.glob("/dev/nvidia[0-9]*"):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None or os.path.isdir("/dev"):
        return False
    try:
        result = subprocess.run([smi, "-L"], capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def check_device(require_gpu=False, stream=None):
    """Prints where Keras computes and warns when a GPU is left unused.

    Args:
        require_gpu: when True, a backend that computes on the CPU raises
            `RuntimeError` instead of warning, whether or not the machine
            has a GPU.
        stream: where to print (default `sys.stderr`).

    Returns:
        `compute_device()`'s dict.
    """
    stream = stream or sys.stderr
    device = compute_device()
    backend = device["backend"]
    distributions = tensorflow_distributions()
    if len(distributions) > 1:
        print(f"WARNING: {' and '.join(distributions)} are installed "
              "together and overwrite each other's files; uninstall all and "
              "install one.", file=stream, flush=True)
    print(f"Keras backend {backend}, computing on {device['platform']} "
          f"({device['name']}, {device['count']} device(s))", file=stream,
          flush=True)
    if device["platform"] != "cpu":
        return device
    fix = GPU_INSTALL.get(backend, "")
    if require_gpu:
        raise RuntimeError(
            f"the {backend} backend computes on the CPU and a GPU is "
            f"required. For an NVIDIA GPU: {fix}; {_STILL_CPU}.")
    if nvidia_gpu_present():
        bar = "!" * 72
        print(f"{bar}\nWARNING: this machine has an NVIDIA GPU, but the "
              f"{backend} backend computes on the CPU (tens of times "
              f"slower).\nInstall the CUDA build: {fix}\n({_STILL_CPU})"
              f"\n{bar}",
              file=stream, flush=True)
    return device


def tensorflow_distributions():
    """The installed distributions that provide the `tensorflow` package
    (more than one means their files overwrite each other)."""
    from importlib import metadata

    found = []
    for name in ("tensorflow", "tensorflow-cpu", "tensorflow-intel",
                 "tensorflow-macos", "tf-nightly", "tf-nightly-cpu"):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def hide_gpus_from_tensorflow():
    """Keeps TensorFlow (used for tf.data) off the GPUs when another Keras
    backend computes, so that it takes no GPU memory. Call it before
    TensorFlow runs anything; returns False when that was too late."""
    if keras.backend.backend() == "tensorflow":
        return True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:  # no TensorFlow, nothing to keep off the GPU
        return True

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow has already initialized its devices
        return False
    return True
