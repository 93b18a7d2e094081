"""Pure TUN flow machines: TCP endpoint, UDP association, the bounded flow table.

Nothing here does I/O or reads a clock: `handle(event, now) -> actions`; proxy64/tun
carries the actions out.
"""
