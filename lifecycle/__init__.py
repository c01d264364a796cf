"""The model's life after it serves: retraining from the log and its labels, champion /
challenger promotion on a paired test, and rollback. Imports core, training and monitoring;
nothing the Bento serves imports it (the service reads the registry through core)."""
