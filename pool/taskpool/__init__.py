"""The task pool: pool.Pool, a concurrent.futures.Executor on supervised workers
(executor: the parent side; taskworker: the worker side; taskwire: their messages)."""
