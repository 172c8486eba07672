"""Encoding response bodies: msgspec's JSON encoder, built once."""

from __future__ import annotations

import msgspec

encode = msgspec.json.Encoder().encode
