"""Leaves that every layer shares and that import nothing of ours: atomic file writes, devices and the machine."""
