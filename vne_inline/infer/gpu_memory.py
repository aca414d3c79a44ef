"""Device buffers and a CUDA stream for the TensorRT backend: torch CUDA tensors when torch is
installed, otherwise cuda-python's runtime bindings (the `gpu` extra)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from vne_inline.infer.base import BackendError

__all__ = ["DeviceMemory", "device_memory"]


class DeviceMemory(Protocol):
    """Named device buffers, reused between calls and grown on demand, on one CUDA `stream` (handle)."""

    stream: int

    def put(self, name: str, array: np.ndarray) -> int:
        """Copy `array` to the device buffer `name` (queued on the stream); its device address."""
        ...

    def empty(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
        """A device buffer `name` for `shape` and `dtype`; its device address."""
        ...

    def get(self, name: str) -> np.ndarray:
        """Wait for the stream, then copy the buffer `name` (as last shaped) to the host."""
        ...


class _TorchMemory:
    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._stream = torch.cuda.Stream()
        self.stream = self._stream.cuda_stream
        self._tensors: dict[str, object] = {}

    def put(self, name: str, array: np.ndarray) -> int:
        with self._torch.cuda.stream(self._stream):
            tensor = self._torch.from_numpy(array).to("cuda")
        self._tensors[name] = tensor
        return tensor.data_ptr()

    def empty(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
        torch_dtype = self._torch.from_numpy(np.empty(0, dtype)).dtype
        with self._torch.cuda.stream(self._stream):
            tensor = self._torch.empty(shape, dtype=torch_dtype, device="cuda")
        self._tensors[name] = tensor
        return tensor.data_ptr()

    def get(self, name: str) -> np.ndarray:
        self._stream.synchronize()
        return self._tensors[name].cpu().numpy()


class _CudaRuntimeMemory:
    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart
            except ImportError as exc:
                raise BackendError("neither torch nor cuda-python is installed for GPU buffers") from exc
        self._rt = cudart
        self._stream_handle = self._call(cudart.cudaStreamCreate())
        self.stream = int(self._stream_handle)
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (address, capacity in bytes)
        self._layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def _call(self, result: tuple):
        err, *value = result
        if err != self._rt.cudaError_t.cudaSuccess:
            raise BackendError(f"CUDA runtime call failed: {err}")
        return value[0] if value else None

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        address, capacity = self._buffers.get(name, (0, 0))
        if nbytes > capacity:
            if address:
                self._call(self._rt.cudaFree(address))
            address, capacity = int(self._call(self._rt.cudaMalloc(nbytes))), nbytes
            self._buffers[name] = (address, capacity)
        self._layout[name] = (tuple(shape), np.dtype(dtype))
        return address

    def put(self, name: str, array: np.ndarray) -> int:
        address = self._buffer(name, array.shape, array.dtype)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(address, array.ctypes.data, array.nbytes, kind, self._stream_handle))
        self._call(self._rt.cudaStreamSynchronize(self._stream_handle))  # the host array may go away
        return address

    def empty(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
        return self._buffer(name, shape, dtype)

    def get(self, name: str) -> np.ndarray:
        shape, dtype = self._layout[name]
        host = np.empty(shape, dtype)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        address = self._buffers[name][0]
        self._call(self._rt.cudaMemcpyAsync(host.ctypes.data, address, host.nbytes, kind, self._stream_handle))
        self._call(self._rt.cudaStreamSynchronize(self._stream_handle))
        return host


def device_memory() -> DeviceMemory:
    """torch CUDA buffers when torch sees a GPU, else cuda-python; BackendError when neither works."""
    try:
        import torch
    except ImportError:
        return _CudaRuntimeMemory()
    return _TorchMemory() if torch.cuda.is_available() else _CudaRuntimeMemory()
