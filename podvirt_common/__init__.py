"""podvirt_common."""
