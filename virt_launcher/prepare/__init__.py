"""The launcher's preparation step, run as a short-lived child process: VMI -> disks on disk -> domain XML.

It holds the heavy imports (pydantic models, lxml, pycdlib) so the resident launcher stays small.
See ``prepare.run`` for the request and result it exchanges with the launcher.
"""
