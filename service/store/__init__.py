"""Storage: tables, the database factory, the unit of work that applies the core's decisions, and the reads."""
