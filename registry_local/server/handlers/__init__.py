"""Thin request handlers: parse, ask the cache, write the answer."""
