"""pytest fixtures shared by the suite. Servers start once per test session."""

from __future__ import annotations
