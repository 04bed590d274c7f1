"""calrelay instances sharing one database: leases, wake-up and the shared request budget."""
