"""virtctl: the command-line client of podvirt's VMs (also the kubectl plugin ``kubectl virt``).

It talks only to the Kubernetes API with the user's kubeconfig: VM and VMI objects through
``kubevirt.io/v1`` and operations (start, console, ...) through the aggregated API
``subresources.kubevirt.io/v1`` served by virt-api. Entry point: :func:`virtctl.cli.main`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("podvirt")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
