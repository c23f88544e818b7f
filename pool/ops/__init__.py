"""Operations run from outside a pool's supervisor: launching a detached one (daemon),
stopping one with verified death (stopper), ending what a dead one left (remnants),
and the demo's worker."""
