"""Session-wide fixtures: throwaway PostgreSQL and Redis servers started from the real
binaries (Debian's packages) on free ports in temp dirs — never the machine's own services."""

pytest_plugins = ["tests.services.postgres", "tests.services.redis"]
