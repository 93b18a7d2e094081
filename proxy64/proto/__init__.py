"""Pure protocol code: bytes or events in, events or bytes out. No sockets, clocks or globals."""
