import io

import keras
import pytest

import keras_quadratic as kq


def test_compute_device_names_the_backend_and_the_cpu_here():
    device = kq.devices.compute_device()
    assert device["backend"] == keras.backend.backend()
    assert device["platform"] == "cpu"  # the test machines have no GPU
    assert device["count"] >= 1


def test_no_warning_without_a_gpu(monkeypatch):
    monkeypatch.setattr(kq.devices, "nvidia_gpu_present", lambda: False)
    out = io.StringIO()
    kq.devices.check_device(stream=out)
    text = out.getvalue()
    assert f"Keras backend {keras.backend.backend()}, computing on cpu" in text
    assert "WARNING" not in text


def test_warns_with_the_fix_when_a_gpu_is_present_but_unused(monkeypatch):
    monkeypatch.setattr(kq.devices, "nvidia_gpu_present", lambda: True)
    out = io.StringIO()
    device = kq.devices.check_device(stream=out)
    text = out.getvalue()
    assert device["platform"] == "cpu"
    assert "WARNING: this machine has an NVIDIA GPU" in text
    assert kq.devices.GPU_INSTALL[keras.backend.backend()] in text


def test_require_gpu_raises_on_the_cpu():
    with pytest.raises(RuntimeError, match="computes on the CPU"):
        kq.devices.check_device(require_gpu=True, stream=io.StringIO())


def test_two_tensorflow_distributions_are_reported(monkeypatch):
    monkeypatch.setattr(kq.devices, "tensorflow_distributions",
                        lambda: ["tensorflow", "tensorflow-cpu"])
    out = io.StringIO()
    kq.devices.check_device(stream=out)
    assert "tensorflow and tensorflow-cpu are installed together" in (
        out.getvalue())
