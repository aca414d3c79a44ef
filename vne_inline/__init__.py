"""vne-inline: scanner-inline Virtual Native Enhancement (VNE) for native cardiac MR.

Default weights are trained on synthetic data only: not for clinical use.
"""

__version__ = "0.1.0"
