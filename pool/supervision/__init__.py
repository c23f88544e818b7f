"""The supervision core: the Supervisor and its loop, the slots' lives, planned
replacements, process-tree containment and what a dead supervisor left (remnants), the
stop escalation, and the worker side (pool.supervision.worker). Imports nothing from
the task pool or pool.ops; the integrations only for the loop's own use."""
