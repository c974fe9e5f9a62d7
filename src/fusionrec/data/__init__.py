"""Datasets: the contract, the readers, the normalised form, splits and the synthetic generator."""
