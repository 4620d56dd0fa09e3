"""virt_handler."""
