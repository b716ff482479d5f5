"""Leaf modules every layer may use: errors, URLs, log filters, hardware description, file locks."""
