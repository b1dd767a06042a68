"""The tenancy core: tenants, operators, API keys, their services (which audit), the audit
trail, secrets, row-level security and the PostgreSQL backend that applies it, the console."""
