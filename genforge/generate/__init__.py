"""Text generation: a fast KV-cache decoder for local causal LMs, sampling, stop strings, streaming.

`generate`, `stream` and `load_decoder` are imported on first use, so importing this package (as the
CLI does at start-up) does not import torch.
"""

_API = {"generate": "api", "stream": "api", "complete": "api", "Completion": "api",
        "load_decoder": "decoder", "Decoder": "decoder", "DecodeState": "decoder",
        "SamplingParams": "config", "GenerateConfig": "config"}

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"genforge.generate.{_API[name]}"), name)
    raise AttributeError(f"module 'genforge.generate' has no attribute {name!r}")
