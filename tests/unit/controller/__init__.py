"""Unit tests of virt-controller: pure reconciles, the pod builder, the executor against a fake apiserver."""
