"""Fixtures shared by every test folder."""

from tests.azurite import azurite, storage

__all__ = ["azurite", "storage"]
