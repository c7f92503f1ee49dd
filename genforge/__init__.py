"""genforge: private generative text models from an organisation's own data."""

__version__ = "0.1.0"
