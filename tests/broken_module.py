"""A worker target module that fails at import: a boot error, not a crash to restart."""

raise RuntimeError("broken_module: refusing to import")


def work(ctx):  # never reached
    pass
