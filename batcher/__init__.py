"""Chainwire's event batcher: windowing, aggregation and persistence.

This package never imports ``stream`` (nor starlette or aiorpcx): producers and the hub
reach it only through the small types and protocols it defines.
"""
