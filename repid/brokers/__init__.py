"""Brokers: the abstract base and its implementations (imported lazily)."""
