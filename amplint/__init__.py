"""amplint: find and fix misuse of PyTorch Automatic Mixed Precision."""

__version__ = "0.1.0"
