"""The supervision core: the Supervisor and its loop, the slots' lives, planned
replacements, process-tree containment, the stop escalation, and the worker side
(pool.supervision.worker). Imports nothing from the task pool, the integrations only
for the loop's own use, and nothing from pool.ops."""
