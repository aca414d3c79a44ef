"""vne-inline: scanner-inline Virtual Native Enhancement (VNE) for native cardiac MR.

Default weights are trained on synthetic data only: not for clinical use.
"""

import os

# ONNX Runtime's usage telemetry (a device id and an event database under ~/.cache) stays off: the
# variable is read when onnxruntime is first imported, so it is set before any part of the package can.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.2.1"
