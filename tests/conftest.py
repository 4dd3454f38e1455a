"""Fixtures shared by every test folder."""

from tests.azurite import azurite, azurite_oauth, storage

__all__ = ["azurite", "azurite_oauth", "storage"]
