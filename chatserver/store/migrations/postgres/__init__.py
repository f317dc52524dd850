"""PostgreSQL migrations: `NNNN_name.sql`, applied in version order, each in its own transaction."""
