"""The event log: schema, readers, the synthetic generator, validation and ingestion into Delta."""
