"""Issue 14: every bad input, fault and other local user, each as a reproduction that fails
on the defect. Shared checks are in :mod:`tests.adversarial.checks`."""
