"""Compression: quantisation (int8, int4, ONNX Runtime int8), pruning, distillation, with a before/after report."""
