"""Operations run from outside a pool's supervisor: launching a detached one (daemon),
stopping one with verified death (stopper), and the demo's worker."""
