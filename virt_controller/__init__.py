"""virt-controller: VirtualMachines into VirtualMachineInstances into launcher pods, and every status true.

Layers, top to bottom:

- ``main`` (the ``virt-controller`` command), ``handlers`` (kopf watches; nothing but cache feeding),
  ``leader`` (one active replica, on a Lease), ``metrics``.
- ``controller``: the work queue, the cache, expectations; runs reconciles and their plans.
- ``executor``: carries a plan out against the apiserver and says how far it got.
- ``vm``, ``vmi``, ``replicaset`` (with ``printable``): the pure, level-based reconciles —
  ``reconcile_*(desired, observed, now) -> Plan``; ``launcher_pod`` and ``overhead`` build the pod.
- ``actions``, ``objects``, ``status``, ``names``: the plain values and helpers they share.
"""
