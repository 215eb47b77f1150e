"""Executable specifications of megacontext (implementation-agnostic; public API only)."""
