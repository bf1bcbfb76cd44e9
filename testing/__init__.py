"""Test and benchmark helpers: loopback stand-ins for external services."""
