"""Training: the one loop (engine), objectives, pretraining and evaluation."""
