"""virt_api."""
