"""Peer daemons the harness compares with: one module per peer (see bench.peers.daemon)."""
