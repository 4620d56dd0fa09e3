"""The resident launcher: command socket, domain controller, libvirt backend, console, events, QEMU teardown.

Nothing here imports pydantic or lxml (they live in ``virt_launcher.prepare``), so the process stays small.
"""
