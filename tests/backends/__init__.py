"""Tests of the backend contract and the shared caching layer."""

from __future__ import annotations
