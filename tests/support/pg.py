"""PostgreSQL test fixtures (placeholder until the PostgreSQL backend lands)."""
