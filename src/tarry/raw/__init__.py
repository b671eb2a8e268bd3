"""The socketless transport (``stack = "raw"``, issue 14): its own parts.

Each module does one job and knows nothing of the engine: ``packet`` reads and
writes IPv4/IPv6 + TCP headers, ``cookie`` makes and checks SYN cookies,
``index`` finds a client's row from its 4-tuple, ``tcp`` is the per-client TCP
logic as pure functions over a few integer columns, ``nftables`` keeps the
kernel's own stack silent, ``bpf`` and ``ring`` receive through a packet ring
and send in batches, ``caps`` says what a host lacks. ``demo`` wires them
together with a fixed banner; docs/raw-stack.md says how the engine will.
"""
