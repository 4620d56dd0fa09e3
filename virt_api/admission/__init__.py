"""Admission webhooks: KubeVirt's defaults (mutating) and rules (validating) for the kubevirt.io/v1 kinds."""
