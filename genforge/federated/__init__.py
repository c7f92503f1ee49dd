"""Federated training across data silos on Flower: partitions, ClientApp/ServerApp, strategies, privacy."""
