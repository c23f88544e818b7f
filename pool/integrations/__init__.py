"""What the supervisor speaks to the outside: systemd notify, Prometheus /metrics, the
log file, process titles, the control socket, signal handling."""
