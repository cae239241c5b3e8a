"""dfl_perf: make real-time ONNX face-swap apps faster.

Importing this package is cheap: it pulls in no numpy, onnxruntime, cv2, onnx, psutil or pynvml.
Each capability lives in its own submodule (``dfl_perf.sessions``, ``dfl_perf.buffers``,
``dfl_perf.processor``, ``dfl_perf.monitor``, ``dfl_perf.memory``, ``dfl_perf.devices``,
``dfl_perf.lazy``, ``dfl_perf.adapters``); import the one you need.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
