"""The ``subresources.kubevirt.io`` aggregated API: VM and VMI subresources, discovery, console proxy."""
