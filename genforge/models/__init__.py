"""Models: presets (decoder/encoder sizes), loading local HF checkpoints, model cards."""
