"""Conformity pipeline: keeps the full history of Cloud One Conformity check results."""
