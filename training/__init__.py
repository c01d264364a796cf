"""Fitting: data cleaning and splits, tuning, training, evaluation and the synthetic demo data."""
