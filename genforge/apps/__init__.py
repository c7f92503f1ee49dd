"""Reference applications built only from genforge's stages: support assistant, news monitor, recommender."""
