"""Serving: an OpenAI-compatible API over genforge models with continuous batching (see docs/serve.md).

Nothing heavy is imported here, so the CLI can register `genforge serve` without FastAPI or torch.
"""
