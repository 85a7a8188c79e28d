"""Kratos web hooks: calls to the operator's HTTP services around self-service flows."""
