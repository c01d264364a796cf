"""Beyond one machine: `churn score` and `churn train --engine dask` on Dask DataFrames, with
the cleaner, fitted feature transformer and booster the service uses, one partition at a
time on whichever cluster the scheduler address names (a 2-process LocalCluster without)."""
