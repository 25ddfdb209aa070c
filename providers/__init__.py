"""Providers: one module per provider behind the interface in `providers.base`."""
