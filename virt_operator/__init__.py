"""virt_operator."""
