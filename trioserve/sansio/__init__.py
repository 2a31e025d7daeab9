"""The protocol core: bytes and ASGI messages in, events, bytes and decisions out.

Nothing here imports trio, awaits, or reads a clock (the current time is passed in), so
every rule is tested with plain synchronous tests. tests/sansio/test_purity.py keeps it so.
"""
