"""virt_controller."""
