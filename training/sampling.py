"""Stratified row samples: the search sample, the drift reference, Dask's fitting sample."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def sample_rows(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of a stratified sample of at most `limit` rows (all rows if fewer)."""
    if len(y) <= limit:
        return np.arange(len(y))
    index, _ = train_test_split(np.arange(len(y)), train_size=limit, stratify=y, random_state=seed)
    return np.sort(index)
