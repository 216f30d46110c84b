"""Storage: tables, the database factory and the repository that applies the core's decisions."""
