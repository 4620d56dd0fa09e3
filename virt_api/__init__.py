"""virt-api: podvirt's admission webhooks and the ``subresources.kubevirt.io`` aggregated API.

Layout:

- ``admission/``: defaults and validation rules of each kind (pure), and the webhook routing;
- ``subresources/``: VM start/stop/restart/migrate, VMI actions and console, discovery documents;
- ``auth``: front-proxy authentication and SubjectAccessReview authorisation;
- ``certificates``: virt-api's own CA and serving certificate, rotated and published;
- ``registration``: the webhook configurations and APIServices virt-api keeps current;
- ``app`` builds the FastAPI application; ``main`` runs it (``virt-api`` command).
"""
