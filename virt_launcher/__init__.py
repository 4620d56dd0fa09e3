"""virt-launcher: runs one VMI's guest inside its pod (VMI spec -> libvirt domain -> QEMU).

Layers, top to bottom:

- ``cli``: the ``virt-launcher`` command; configuration from arguments and environment.
- ``runtime``: the long-lived process — command socket server, domain controller, console proxy,
  domain events, QEMU teardown. It imports libvirt (through ``runtime.backend``) but neither
  pydantic nor lxml, to keep the resident launcher small.
- ``prepare``: a short-lived child process that validates the VMI with the shared API models,
  creates the disks (overlays, empty disks, cloud-init and config ISOs) and asks ``converter``
  for the domain XML.
- ``converter``: pure VMI -> libvirt domain XML, as an ordered chain of small configurators,
  validated against libvirt's RelaxNG schema.
- ``errors`` and ``layout``: shared by all of the above.
"""
